//! scoring routes.

use std::sync::Arc;

use axum::response::Response;

use crate::http::{Req, no_route};
use crate::state::Shared;

/// Routes scoring requests.
pub(crate) fn handle(_shared: &Arc<Shared>, req: &Req) -> Response {
    no_route(req)
}
