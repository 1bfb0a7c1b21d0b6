//! The Kubernetes API of the operator: custom resource types and their conditions.
