//! The Azure ML REST client: the only code that knows URLs, api-versions and wire JSON.
//!
//! Controllers hold one [`AzureMl`] (shared throttle buckets, metrics and credential caches), get a
//! [`WorkspaceClient`] per `Workspace` with [`AzureMl::workspace`], and speak the domain types
//! re-exported here. Every error is an [`Error`] whose [`Error::class`] says whether to retry
//! later or stall.

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
    AuthMode, ContainerType, EndpointKeys, OnlineDeployment, OnlineDeploymentSpec, OnlineEndpoint,
    OnlineEndpointSpec, ProbeSettings, RequestSettings, online_deployment_body, online_endpoint_body,
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
