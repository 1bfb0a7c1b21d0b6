//! Controllers: one per kind, each a pure `decide` plus a thin async reconcile shell.
pub mod policy;
