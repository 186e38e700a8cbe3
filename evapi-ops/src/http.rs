//! The HTTP listener for operators: Prometheus metrics at `GET /metrics`, and an admin
//! API as JSON behind it (the event socket's: `evapi_server::admin`), pluggable through
//! [`Admin`].
//!
//! A minimal HTTP/1.1 server (hyper): bounded connections, a header read timeout, a
//! small request buffer, no request bodies read. `/metrics` is open to whoever
//! reaches the listener; everything else needs `Authorization: Bearer TOKEN` when a
//! token is set, and without one is served only on a loopback listener.
//!
//! The admin API is safe from a browser on the same host (a web page, or a server with
//! an SSRF bug, can send requests to loopback): an admin request is refused (403) when
//! it carries an `Origin` other than the listener's own or `Sec-Fetch-Site` other than
//! `same-origin`/`none` (a cross-site page); without a token, also when its `Host` (or
//! the request line's authority) is a name other than `localhost` (DNS rebinding: the
//! attacker's name resolving to 127.0.0.1); a POST is refused (415) unless its
//! `Content-Type` is `application/json`, which no simple cross-origin request can carry
//! (it needs a CORS preflight, which is never granted). Two `Host` (or `Origin`)
//! headers are refused (400). `/metrics` on a loopback listener takes the same `Host`
//! check. Path parameters are percent-decoded ([`param`]: `/tags/a%20b/close` is the
//! tag `a b`); fixed segments are matched as sent.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::pool::{Eviction, Pool, Ticket};
use crate::throttle::{lock, token_matches, until_checkable, SharedThrottle};

/// HTTP connections open at once. When all are taken, the oldest is closed to make
/// room for the newest: a scraper that sends its request in milliseconds gets through
/// while slow or silent connections churn (they could hold every one until the header
/// timeout otherwise).
pub const HTTP_MAX_CONNECTIONS: usize = 16;
/// Of those, from one IP address; past it that address's oldest is closed.
pub const HTTP_MAX_CONNECTIONS_PER_IP: usize = 8;
/// A request's headers must arrive within this long.
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head buffered, in bytes.
pub const HTTP_MAX_HEAD: usize = 16 * 1024;
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What an admin request gives: a JSON object (`"ok": true` is added), or a status
/// and the error's text (sent as `{"ok": false, "error": ...}`).
pub type AdminResult = Result<serde_json::Value, (StatusCode, String)>;

/// An admin API served beside `/metrics`: called only for requests that passed the
/// browser checks and the token.
pub trait Admin: Send + Sync + std::fmt::Debug {
    /// Answer `method` on `path`. `parts` are the path's segments as sent: match fixed
    /// segments as they are and decode parameters with [`param`]. Unknown paths give
    /// 404, known paths with another method 405.
    fn respond(&self, method: &Method, path: &str, parts: &[&str]) -> AdminResult;
}

/// What the listener serves.
#[derive(Debug)]
pub struct HttpApi {
    registry: Registry,
    admin: Option<Box<dyn Admin>>,
    token: Option<Arc<str>>,
    loopback: bool,
    /// Addresses that keep sending a wrong bearer token (shared with the server's other
    /// doors when given with [`HttpApi::throttle`]).
    throttle: SharedThrottle,
    /// Wrong bearer tokens per window from all addresses before checks wait.
    max_auth_failures: u32,
}

impl HttpApi {
    /// Metrics from `registry`, and `admin` when given. `token`: what admin requests
    /// must carry as `Authorization: Bearer TOKEN`.
    #[must_use]
    pub fn new(registry: Registry, admin: Option<Box<dyn Admin>>, token: Option<Arc<str>>) -> Self {
        Self {
            registry,
            admin,
            token,
            loopback: false,
            throttle: SharedThrottle::default(),
            max_auth_failures: crate::throttle::DEFAULT_MAX_AUTH_FAILURES,
        }
    }

    /// Count wrong bearer tokens in `throttle` (the server's, so an address guessing
    /// here is slowed at its other doors too, and the other way round), and past
    /// `max_auth_failures` wrong guesses per window from all addresses together
    /// (0: no ceiling), hold each request until the next window before its token is
    /// compared.
    #[must_use]
    pub fn throttle(mut self, throttle: SharedThrottle, max_auth_failures: u32) -> Self {
        self.throttle = throttle;
        self.max_auth_failures = max_auth_failures;
        self
    }

    async fn respond(
        &self,
        req: &Request<Incoming>,
        peer: std::net::IpAddr,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path == "/metrics" {
            if req.method() != Method::GET {
                return status(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            }
            // On loopback, a page of another site could read the metrics through DNS
            // rebinding; scrapers on the host name it by address or localhost.
            if self.loopback {
                if let Err((code, error)) = host_is_this_host(req) {
                    return json_response(code, &json!({ "ok": false, "error": error }));
                }
            }
            let mut text = String::new();
            if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
                return status(StatusCode::INTERNAL_SERVER_ERROR, "metrics did not encode");
            }
            // Prometheus asks for OpenMetrics; curl, promtool and older scrapers get the
            // classic text format.
            let openmetrics = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            let (text, kind) = if openmetrics {
                (text, OPENMETRICS)
            } else {
                (crate::metrics::classic(&text), CLASSIC)
            };
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
            return resp;
        }
        let Some(admin) = &self.admin else {
            return status(StatusCode::NOT_FOUND, "only /metrics here");
        };
        if let Err((code, error)) = browser_safe(req, self.token.is_none()) {
            return json_response(code, &json!({ "ok": false, "error": error }));
        }
        if let Err(resp) = self.authorize(req, peer).await {
            return resp;
        }
        // Fixed segments are matched as sent (`/%64rain` is not `/drain`, so a proxy
        // rule on the literal path holds); parameters are percent-decoded.
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let result = admin.respond(req.method(), path, &parts);
        match result {
            Ok(mut body) => {
                body["ok"] = true.into();
                json_response(StatusCode::OK, &body)
            }
            Err((code, error)) => json_response(code, &json!({ "ok": false, "error": error })),
        }
    }

    /// The bearer token, checked like the socket's tokens: an address that keeps
    /// failing is refused (429) before its guess is compared, for a window that grows
    /// with each failure, and at the global ceiling the check waits for the next window
    /// ([`crate::throttle`]).
    #[allow(clippy::result_large_err)]
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        peer: std::net::IpAddr,
    ) -> Result<(), Response<Full<Bytes>>> {
        match &self.token {
            Some(token) => {
                let refused = |left: std::time::Duration| {
                    json_response(
                        StatusCode::TOO_MANY_REQUESTS,
                        &json!({ "ok": false, "error": format!("too many wrong tokens from this address; retry in {} ms", left.as_millis()) }),
                    )
                };
                if let Some(left) = lock(&self.throttle).blocked(peer, std::time::Instant::now()) {
                    return Err(refused(left));
                }
                until_checkable(&self.throttle, self.max_auth_failures).await;
                let now = std::time::Instant::now();
                let mut throttle = lock(&self.throttle);
                if let Some(left) = throttle.blocked(peer, now) {
                    return Err(refused(left));
                }
                let given = req
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(bearer)
                    .unwrap_or("");
                // A good token leaves the address's failures as they are: they age out
                // (THROTTLE_FORGET), so holding one token buys no fresh guesses.
                if token_matches(given.as_bytes(), token.as_bytes()) {
                    Ok(())
                } else {
                    throttle.guessed_wrong(peer, now);
                    Err(json_response(
                        StatusCode::UNAUTHORIZED,
                        &json!({ "ok": false, "error": "admin needs Authorization: Bearer TOKEN" }),
                    ))
                }
            }
            None if self.loopback => Ok(()),
            None => Err(json_response(
                StatusCode::FORBIDDEN,
                &json!({ "ok": false, "error": "admin off loopback needs a token" }),
            )),
        }
    }
}

/// The token of an `Authorization` value: the scheme `Bearer` in any case (RFC 9110
/// section 11.1), then the token.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// A path parameter, percent-decoded.
///
/// # Errors
///
/// 400 when the decoded bytes are not UTF-8.
pub fn param(segment: &str) -> Result<String, (StatusCode, String)> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("{segment:?} is not UTF-8 once percent-decoded"),
            )
        })
}

/// The one value of header `name`: `Ok(None)` when absent, 400 when given twice
/// (RFC 9112 section 3.2 for Host; two Origins are no better).
fn single<'a>(
    req: &'a Request<Incoming>,
    name: &str,
) -> Result<Option<&'a str>, (StatusCode, String)> {
    let mut values = req.headers().get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err((StatusCode::BAD_REQUEST, format!("{name} given twice")));
    }
    Ok(first.map(|v| v.to_str().unwrap_or("\u{fffd}")))
}

/// The request names this host by address or `localhost` (in `Host`, and in the
/// request line's authority when it has one): never by a name that an attacker's DNS
/// could point at this machine (DNS rebinding).
fn host_is_this_host(req: &Request<Incoming>) -> Result<(), (StatusCode, String)> {
    let host = single(req, "host")?.unwrap_or("");
    let authority = req
        .uri()
        .authority()
        .map(hyper::http::uri::Authority::as_str);
    for name in std::iter::once(host).chain(authority) {
        if !host_is_an_address(name) {
            return Err((
                StatusCode::FORBIDDEN,
                format!("requests must name the listener by address or localhost, not {name:?}"),
            ));
        }
    }
    Ok(())
}

/// Whether an admin request could come from a web page: refused unless it comes from
/// no other origin and (for a POST) is JSON; without a token, also unless it names this
/// host by address or `localhost` (with a token, a rebound page cannot send it: the
/// token is not the page's to add). The reasons are in the module documentation.
fn browser_safe(req: &Request<Incoming>, check_host: bool) -> Result<(), (StatusCode, String)> {
    if check_host {
        host_is_this_host(req)?;
    }
    let host = single(req, "host")?.unwrap_or("");
    if let Some(origin) = single(req, "origin")? {
        let own = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !own {
            return Err((
                StatusCode::FORBIDDEN,
                format!("admin requests from another origin are refused: Origin {origin:?}"),
            ));
        }
    }
    if let Some(site) = single(req, "sec-fetch-site")? {
        if site != "same-origin" && site != "none" {
            return Err((
                StatusCode::FORBIDDEN,
                format!("admin requests from a web page are refused: Sec-Fetch-Site {site:?}"),
            ));
        }
    }
    if req.method() == Method::POST {
        let json = single(req, "content-type")?.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "admin POST requests need Content-Type: application/json".to_owned(),
            ));
        }
    }
    Ok(())
}

/// `Host` is an IP address or `localhost`, with or without a port: never a name that an
/// attacker's DNS could point at this machine.
fn host_is_an_address(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = code;
    resp
}

fn json_response(code: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Serve `api` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, api: HttpApi, shutdown: impl Future<Output = ()>) {
    let mut api = api;
    api.loopback = listener
        .local_addr()
        .is_ok_and(|a: SocketAddr| a.ip().is_loopback());
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, admin = api.admin.is_some(), "http listening");
    }
    let api = Arc::new(api);
    let pool = Arc::new(std::sync::Mutex::new(Pool::new(
        HTTP_MAX_CONNECTIONS,
        HTTP_MAX_CONNECTIONS_PER_IP,
    )));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "http accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let (ticket, eviction) = pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .enter(Some(peer.ip()));
        if eviction != Eviction::None {
            debug!(%peer, ?eviction, "http: all connections taken, the oldest closed");
        }
        let (api, pool) = (Arc::clone(&api), Arc::clone(&pool));
        tokio::spawn(async move {
            // The entry goes back however the task ends (a panicking handler included).
            let _in_pool = InPool {
                pool,
                ticket: &ticket,
            };
            let ip = peer.ip();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let api = Arc::clone(&api);
                async move { Ok::<_, Infallible>(api.respond(&req, ip).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HTTP_HEADER_TIMEOUT)
                .max_buf_size(HTTP_MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = served => {
                    if let Err(e) = served {
                        debug!(%peer, error = %e, "http connection ended");
                    }
                }
                () = ticket.evicted.cancelled() => debug!(%peer, "http connection closed to make room"),
            }
        });
    }
}

/// An HTTP connection's place in the listener's pool, given back on drop.
struct InPool<'a> {
    pool: Arc<std::sync::Mutex<Pool>>,
    ticket: &'a Ticket,
}

impl Drop for InPool<'_> {
    fn drop(&mut self) {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .leave(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_must_be_an_address_or_localhost() {
        for ok in [
            "127.0.0.1:9100",
            "127.0.0.1",
            "localhost:9100",
            "LOCALHOST",
            "[::1]:9100",
            "[::1]",
            "10.1.2.3:80",
        ] {
            assert!(host_is_an_address(ok), "{ok}");
        }
        for refused in [
            "",
            "evil.example:9100",
            "localhost.evil.example",
            "127.0.0.1.nip.io:9100",
            "[::1]x",
            "[evil]:80",
            "127.0.0.1:port",
            "127.0.0.1:123456",
            "::1",
        ] {
            assert!(!host_is_an_address(refused), "{refused}");
        }
    }

    #[test]
    fn bearer_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER   abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}
