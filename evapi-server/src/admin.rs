//! The event socket's admin API, served by the operators' HTTP listener
//! ([`evapi_ops::http`], which does the bounds, the browser checks and the token):
//! `GET /clients`, `GET /stats`, `POST /clients/{connid}/close`,
//! `POST /clients/{connid}/tag/{tag}`, `POST /tags/{tag}/close`, `POST /drain`.

use evapi_ops::http::{param, Admin, AdminResult};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::handle::Target;
use crate::Handle;

/// The admin API over a running server.
#[derive(Debug, Clone)]
pub struct AdminApi {
    handle: Handle,
}

impl AdminApi {
    /// The admin API of the server behind `handle`, boxed for
    /// [`HttpApi::new`](evapi_ops::http::HttpApi::new).
    #[must_use]
    pub fn boxed(handle: Handle) -> Box<dyn Admin> {
        Box::new(Self { handle })
    }
}

fn connid(text: &str) -> Result<u64, (StatusCode, String)> {
    text.parse()
        .map_err(|_| (StatusCode::BAD_REQUEST, format!("not a connid: {text:?}")))
}

fn not_found(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, e.to_string())
}

impl Admin for AdminApi {
    fn respond(&self, method: &Method, path: &str, parts: &[&str]) -> AdminResult {
        let handle = &self.handle;
        match (method, parts) {
            (&Method::GET, ["clients"]) => Ok(json!({ "clients": handle.clients() })),
            (&Method::GET, ["stats"]) => Ok(json!({ "stats": handle.stats() })),
            (&Method::POST, ["clients", id, "close"]) => {
                handle.close(Target::Connid(connid(id)?)).map_err(not_found)?;
                Ok(json!({}))
            }
            (&Method::POST, ["clients", id, "tag", tag]) => {
                let id = connid(id)?;
                handle
                    .set_tag(Target::Connid(id), &param(tag)?)
                    .map_err(not_found)?;
                Ok(json!({}))
            }
            (&Method::POST, ["tags", tag, "close"]) => {
                let closed = handle.close_tag(&param(tag)?).map_err(not_found)?;
                Ok(json!({ "closed": closed }))
            }
            (&Method::POST, ["drain"]) => {
                handle.drain();
                Ok(json!({ "draining": handle.connected() }))
            }
            (_, ["clients" | "stats" | "drain", ..] | ["tags", ..]) => Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "GET /clients, /stats; POST /clients/{connid}/close, /clients/{connid}/tag/{tag}, /tags/{tag}/close, /drain".to_owned(),
            )),
            _ => Err((StatusCode::NOT_FOUND, format!("no such path: {path}"))),
        }
    }
}

/// Serve `registry` at `/metrics` (start from [`crate::metrics::registry`] and add
/// your own) and the admin API of the server behind `handle` on `listener` until
/// `shutdown` resolves; admin requests carry `token` as a bearer token when one is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: prometheus_client::registry::Registry,
    handle: Handle,
    token: Option<std::sync::Arc<str>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let throttle = (
        std::sync::Arc::clone(&handle.shared.throttle),
        handle.shared.config.max_auth_failures,
    );
    let api = evapi_ops::http::HttpApi::new(registry, Some(AdminApi::boxed(handle)), token)
        .throttle(throttle.0, throttle.1);
    evapi_ops::http::serve(listener, api, shutdown).await;
}
