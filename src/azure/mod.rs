//! The Azure ML REST client: the only code that knows URLs, api-versions and wire JSON.
//!
//! Controllers hold one [`AzureMl`] (shared throttle buckets, metrics and credential caches), get a
//! [`WorkspaceClient`] per `Workspace` with [`AzureMl::workspace`], and speak the domain types
//! re-exported here. Every error is an [`Error`] whose [`Error::class`] says whether to retry
//! later or stall.
//!
//! ```no_run
//! # async fn demo(config: azureml_operator::azure::ConnectionConfig) -> azureml_operator::azure::Result<()> {
//! use azureml_operator::azure::{AzureMl, ClientOptions, ErrorClass, Latest, OperationStatus};
//!
//! let azure = AzureMl::new(ClientOptions::default()); // once per process, cloned into controllers
//! let ws = azure.workspace(&config)?; // cheap: credentials and HTTP clients are cached
//! let location = ws.get_workspace().await?.location;
//! match ws.registry("azureml").await?.latest_model_version("Phi-3-mini-4k-instruct").await? {
//!     Latest::Found(model) => println!("{} in {location}", model.id),
//!     Latest::OnlyArchived(model) => println!("only archived versions, newest {}", model.version),
//!     Latest::NotFound => println!("no such model"),
//! }
//! // Long-running operations return a handle to keep in status and poll on later reconciles.
//! if let Some(op) = ws.delete_online_endpoint("ultrachat-completion").await? {
//!     match ws.poll(&op).await {
//!         Ok(OperationStatus::InProgress { retry_after }) => println!("requeue after {retry_after:?}"),
//!         Ok(OperationStatus::Succeeded) => println!("gone"),
//!         Ok(OperationStatus::Failed(err)) => println!("stalled: {err} ({})", err.reason()),
//!         Err(err) if matches!(err.class(), ErrorClass::Transient { .. }) => println!("try again"),
//!         Err(err) => return Err(err),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod auth;
mod client;
mod common;
mod compute;
mod config;
mod endpoints;
mod error;
mod jobs;
mod lro;
pub mod metrics;
mod models;
mod registry;
mod scoring;
mod throttle;
mod workspace;

pub use client::{AzureMl, ClientOptions, WorkspaceClient};
pub use common::{ProvisioningState, iso_duration, parse_iso_duration, python_float};
pub use compute::{AmlComputeSpec, Compute, ScaleSettings, VmPriority, compute_body};
pub use config::{
    CloudEndpoints, ConnectionConfig, Credential, DEFAULT_ARM_API_VERSION, REGISTRY_API_VERSION,
    SecretString, WorkspaceCoordinates,
};
pub use endpoints::{
    AuthMode, ContainerType, EndpointKeys, EndpointToken, OnlineDeployment, OnlineDeploymentSpec,
    OnlineEndpoint, OnlineEndpointSpec, ProbeSettings, RequestSettings, online_deployment_body,
    online_endpoint_body,
};
pub use error::{ApiError, Error, ErrorClass, Result, classify};
pub use jobs::{
    AssetType, ChildRun, InputMode, Job, JobInput, JobOutput, JobStatus, Literal, OutputBinding,
    PipelineJobSpec, PipelineSettings, pipeline_job_body,
};
pub use lro::{DEFAULT_POLL_INTERVAL, Operation, OperationKind, OperationStatus, PollTarget};
pub use metrics::AzureMetrics;
pub use models::{ModelVersion, ModelVersionSpec, model_version_body};
pub use registry::{ComponentAsset, ComponentInput, ComponentOutput, Latest, ModelAsset, RegistryClient};
pub use scoring::{ScoreResponse, ScoringAuth};
pub use throttle::{BucketLimits, RequestClass, ThrottleLimits, TokenBucket};
pub use workspace::{VmSize, WorkspaceInfo};
