//! Accept loops for the HTTPS and HTTP listeners, and the top-level request dispatcher.
//!
//! The listeners are driven by hand (hyper-util) rather than `axum::serve` so that a fault can drop a
//! connection without writing any response, as a network failure would.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::http::{DropConnection, Req};
use crate::state::Shared;
use crate::{admin, auth, http, mlflow, registry, scoring, workspace};

/// The two accept loops of a running emulator.
pub(crate) struct Servers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Signals both loops to stop and waits until they and their connections have ended.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Stops both loops (and, through them, every connection) without waiting.
    pub(crate) fn abort(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Starts serving `shared` on both listeners.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    https: TcpListener,
    http: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> Servers {
    let router = axum::Router::new().fallback(dispatch).with_state(shared);
    let (stop, stopped) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tasks = vec![
        tokio::spawn(accept_loop(https, Some(acceptor), router.clone(), stopped.clone())),
        tokio::spawn(accept_loop(http, None, router, stopped)),
    ];
    Servers { stop, tasks }
}

#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let tls = tls.clone();
        let is_tls = tls.is_some();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let router = router.clone();
                async move {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(crate::http::Scheme(if is_tls { "https" } else { "http" }));
                    let response = match router.oneshot(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    // Failing the service makes hyper close the connection without a response.
                    if response.extensions().get::<DropConnection>().is_some() {
                        return Err(Dropped);
                    }
                    Ok::<_, Dropped>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                    Err(err) => {
                        tracing::debug!(%err, "TLS handshake failed");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(err) = result {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
}

/// Reads the request, applies the admin API, faults and the request log, then routes it.
async fn dispatch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let req = match Req::read(request).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    if req.lower.first().map(String::as_str) == Some("_emulator") {
        return admin::handle(&shared, &req).await;
    }
    let seq = shared.log.lock().begin(&req);
    let response = match crate::admin::apply_faults(&shared, &req).await {
        Some(response) => response,
        None => route(&shared, &req).await,
    };
    shared.log.lock().finish(seq, response.status().as_u16());
    let mut response = response;
    let id = uuid::Uuid::new_v4().to_string();
    for name in ["x-ms-request-id", "x-ms-correlation-request-id"] {
        if !response.headers().contains_key(name) {
            response = http::with_header(response, name, &id);
        }
    }
    response
}

async fn route(shared: &Arc<Shared>, req: &Req) -> Response {
    let l: Vec<&str> = req.lower.iter().map(String::as_str).collect();
    match l.as_slice() {
        [_, "oauth2", "v2.0", "token"] | [_, "oauth2", "token"] => auth::token(shared, req),
        [_, "v2.0", ".well-known", "openid-configuration"] | [_, ".well-known", "openid-configuration"] => {
            auth::openid_configuration(shared, req)
        }
        ["common", "discovery", "instance"] => auth::instance_discovery(shared, req),
        ["msi", "token"] => auth::managed_identity(shared, req),
        ["metadata", "endpoints"] => auth::cloud_metadata(shared, req),
        ["registrymanagement", "v1.0", "registries", _, "discovery"] => registry::discovery(shared, req),
        ["mferp", "managementfrontend", "subscriptions", ..] => registry::handle(shared, req),
        ["subscriptions", ..] => workspace::handle_arm(shared, req),
        ["mlflow", "v1.0", "subscriptions", ..] => mlflow::handle(shared, req),
        ["inference", _, ..] => scoring::handle(shared, req),
        _ => http::no_route(req),
    }
}
