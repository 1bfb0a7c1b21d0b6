//! Workspace endpoints (ARM).

use axum::response::Response;

use crate::http::ApiError;
use crate::workspace::{Ctx, invalid_resource_type};

/// Routes `.../workspaces/{ws}/endpoints...`.
pub(crate) fn handle(ctx: &Ctx) -> Result<Response, ApiError> {
    Err(invalid_resource_type(ctx.req, "workspaces/endpoints"))
}

pub(crate) fn render_endpoint(_w: &crate::state::World, _ws: &crate::state::Workspace, _e: &crate::state::Endpoint) -> serde_json::Value {
    serde_json::Value::Null
}

pub(crate) fn render_deployment(_ws: &crate::state::Workspace, _e: &crate::state::Endpoint, _d: &crate::state::Deployment) -> serde_json::Value {
    serde_json::Value::Null
}
