//! Workspace jobs (ARM).

use axum::response::Response;

use crate::http::ApiError;
use crate::workspace::{Ctx, invalid_resource_type};

/// Routes `.../workspaces/{ws}/jobs...`.
pub(crate) fn handle(ctx: &Ctx) -> Result<Response, ApiError> {
    Err(invalid_resource_type(ctx.req, "workspaces/jobs"))
}
