//! azureml-operator: Azure Machine Learning's fine-tune → register → deploy → invoke workflow as
//! Kubernetes custom resources.
#![forbid(unsafe_code)]

pub mod api;
pub mod azure;
pub mod controller;
pub mod invoke;
pub mod metrics;
pub mod telemetry;
