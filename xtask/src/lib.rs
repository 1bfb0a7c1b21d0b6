//! Developer tasks of azureml-operator: the local Kubernetes control plane that integration tests
//! and the demo run against.
#![forbid(unsafe_code)]

pub mod control_plane;
pub mod demo;
