//! The API's edge guard: what every request passes before a handler sees it.
//!
//! - **Bound**: at most `requests_in_flight_max` requests are served at once; the next one is
//!   answered `503 overloaded` with `Retry-After` at once, so a flood gets fast refusals rather
//!   than a queue whose latency grows without limit.
//! - **Time**: a request running past `request_timeout` is answered `503 timeout`.
//! - **Panics**: a handler that panics is answered `500 internal_error`; the process, and every
//!   commit batch, goes on (a panic never reaches the committer: handlers only submit requests).
//! - **Tokens**: with a token, `Authorization: Bearer <token>` (scheme in any case), compared in
//!   constant time; a refusal carries `WWW-Authenticate`.
//! - **Without a token** the API trusts whoever can reach it, so it refuses what a web page
//!   elsewhere could make a browser send: a `Host` that is not an IP address, `localhost` or an
//!   allowed name (DNS rebinding), and a state-changing request from another origin (a form
//!   posted cross-site).
//! - **Heads**: a request path over [`PATH_BYTES_MAX`] is answered `414`, headers over
//!   [`HEADER_BYTES_MAX`] `431`, both as JSON errors. [`serve`] reads a head into a buffer of
//!   [`HEAD_BUFFER_BYTES`] (hyper answers a head larger than that itself, with an empty `431`)
//!   and closes a connection whose head takes longer than `header_read_timeout` to arrive
//!   (a slow-loris client holds no connection for long).

use crate::{ApiError, ApiOptions};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_runtime::auth::bearer_matches;
use futures::FutureExt as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Longest request path served (ids in it have their own, smaller bounds); a longer one is
/// answered 414. The query string is judged parameter by parameter, each with its own bound,
/// so a too-long filter gets its own 400.
pub const PATH_BYTES_MAX: usize = 16 * 1024;
/// Most bytes of request headers (names and values) served; more are answered 431.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// [`serve`]'s read buffer for a request head; a head larger than this never reaches the
/// router, and hyper answers it with an empty 431.
pub const HEAD_BUFFER_BYTES: usize = 64 * 1024;
/// Default of [`ApiOptions::header_read_timeout`].
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// How long [`serve`] lets requests in progress finish once asked to stop.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;
/// The listen backlog [`bind`] asks for (the kernel caps it at `net.core.somaxconn`): room for
/// a burst of thousands of new connections, which tokio's default of 1,024 refused with resets.
pub const LISTEN_BACKLOG: u32 = 4_096;

const _: () = assert!(PATH_BYTES_MAX + HEADER_BYTES_MAX < HEAD_BUFFER_BYTES);

/// The guard's state, one per router.
#[derive(Debug)]
pub(crate) struct Edge {
    token: Option<Vec<u8>>,
    allowed_hosts: Vec<String>,
    permits: Arc<Semaphore>,
    timeout: std::time::Duration,
}

impl Edge {
    pub(crate) fn new(options: ApiOptions) -> Self {
        Self {
            token: options.auth_token.map(String::into_bytes),
            allowed_hosts: options
                .allowed_hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            permits: Arc::new(Semaphore::new(options.requests_in_flight_max.max(1))),
            timeout: options.request_timeout,
        }
    }

    /// Every route but `/healthz`: host check, in-flight bound, timeout, panic catch.
    pub(crate) async fn guard(&self, request: Request, next: Next) -> Response {
        if let Err(refusal) = check_head(&request) {
            return refusal.into_response();
        }
        if self.token.is_none()
            && let Err(refusal) = self.check_host(request.headers())
        {
            return refusal.into_response();
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the server is serving as many requests as it may; retry after a second",
            )
            .into_response();
        };
        let path = request.uri().path().to_string();
        let served = AssertUnwindSafe(next.run(request)).catch_unwind();
        match tokio::time::timeout(self.timeout, served).await {
            Ok(Ok(response)) => response,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%path, panic = %what, "a request handler panicked");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the server failed on this request (a bug: it is logged); nothing else was affected",
                )
                .into_response()
            }
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {} ms",
                    self.timeout.as_millis()
                ),
            )
            .into_response(),
        }
    }

    /// The API routes: the token when there is one, the origin check when there is none.
    pub(crate) async fn authorize(&self, request: Request, next: Next) -> Response {
        match &self.token {
            Some(token) => {
                let given = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                if !bearer_matches(given, token) {
                    return ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "missing or wrong bearer token (Authorization: Bearer <token>)",
                    )
                    .into_response();
                }
            }
            None => {
                if let Err(refusal) = check_origin(request.method(), request.headers()) {
                    return refusal.into_response();
                }
            }
        }
        next.run(request).await
    }

    fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        // HTTP/1.1 requires Host; a request without one did not come from a browser.
        let Some(host) = headers.get(header::HOST) else {
            return Ok(());
        };
        let name = host
            .to_str()
            .ok()
            .map(host_name)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let trusted = name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.allowed_hosts.contains(&name);
        if trusted {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "Host {name:?} is not allowed: without an auth token the server answers only IP addresses, localhost and --allow-host names (this guards against DNS rebinding)"
                ),
            ))
        }
    }
}

/// The request path and headers within [`PATH_BYTES_MAX`] and [`HEADER_BYTES_MAX`].
fn check_head(request: &Request) -> Result<(), ApiError> {
    let path = request.uri().path().len();
    if path > PATH_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request path is {path} bytes; at most {PATH_BYTES_MAX} are served"),
        ));
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > HEADER_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request headers are {headers} bytes; at most {HEADER_BYTES_MAX} are served"
            ),
        ));
    }
    Ok(())
}

/// Binds a listener on `host:port` (the first address `host` resolves to) with a backlog of
/// [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restarted server binds while old connections
/// linger in `TIME_WAIT`).
pub async fn bind(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(address) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{host} resolves to no address"),
        )
    }))
}

/// Serves `router` on `listener` (HTTP/1.1) until `shutdown` resolves, then lets requests in
/// progress finish for at most [`SHUTDOWN_GRACE_MS`]. Unlike `axum::serve`, it bounds the
/// time a client may take to send a request head (`options.header_read_timeout`) and the
/// head's size ([`HEAD_BUFFER_BYTES`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    options: &ApiOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(HEAD_BUFFER_BYTES);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine; wait a moment rather than spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in progress after {SHUTDOWN_GRACE_MS} ms; stopping anyway");
    }
    Ok(())
}

/// The name in a `Host` header value: without its port, and without brackets for IPv6.
fn host_name(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    value.rsplit_once(':').map_or(value, |(name, _)| name)
}

/// Refuses a state-changing request that a browser sent for another origin.
fn check_origin(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refuse = |why: String| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            format!(
                "{why}: without an auth token the server takes changes only from its own pages and from programs (set --auth-token to call it from other sites)"
            ),
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return refuse(format!("the browser reports this request as {site}"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host));
        if !same {
            return refuse(format!("Origin {origin:?} is not this server ({host:?})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host names with ports and IPv6 brackets (the bearer check is `cairn_runtime::auth`'s).
    #[test]
    fn hosts_parse() {
        assert_eq!(host_name("localhost:7280"), "localhost");
        assert_eq!(host_name("[::1]:7280"), "::1");
        assert_eq!(host_name("example.com"), "example.com");
    }
}
