//! Workspace models (ARM).

use axum::response::Response;

use crate::http::ApiError;
use crate::workspace::{Ctx, invalid_resource_type};

/// Routes `.../workspaces/{ws}/models...`.
pub(crate) fn handle(ctx: &Ctx) -> Result<Response, ApiError> {
    Err(invalid_resource_type(ctx.req, "workspaces/models"))
}
