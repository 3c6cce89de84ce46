//! The API's edge under hostile and careless requests: every refusal is a 4xx (or 503) JSON
//! `{code, message}`, nothing is written, and the server keeps serving.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cairn::{ActivityContext, Ctx, Failure, Node, WorkflowError};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

async fn double(_ctx: ActivityContext, n: u64) -> Result<u64, Failure> {
    Ok(n * 2)
}

async fn doubler(ctx: Ctx, n: u64) -> Result<u64, WorkflowError> {
    Ok(ctx.activity(double, n).await?)
}

async fn parked(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_secs(3_600)).await;
    Ok(())
}

async fn node() -> Node<cairn::MemStore> {
    Node::builder()
        .workflow(doubler)
        .workflow(parked)
        .activity(double)
        .start(cairn::MemStore::new())
        .await
        .unwrap()
}

struct Sent {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(router: &axum::Router, request: Request<Body>) -> Sent {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Sent {
        status,
        headers,
        body,
    }
}

fn request(method: &str, uri: &str, body: Option<&str>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:7280")
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn assert_json_error(sent: &Sent, status: StatusCode, code: &str, what: &str) {
    assert_eq!(sent.status, status, "{what}: {}", sent.body);
    assert_eq!(sent.body["code"], code, "{what}: {}", sent.body);
    assert!(
        sent.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        sent.body
    );
}

/// Proves the reproductions that killed or confused the server now get JSON 4xx answers and
/// the server stays up: a filter nested 1,800 parentheses deep, 10,000 NOTs, a page token with
/// a 4-byte character, a 10 KB schedule id on every per-id route, bad query strings, unknown
/// routes and methods, an oversized internal body, and `jitter_ms = u64::MAX`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_json_errors_and_the_server_stays_up() {
    let node = node().await;
    let api = cairn_server::router(node.runtime(), None);
    let deep = format!("{}WorkflowId = 'x'{}", "(".repeat(1_800), ")".repeat(1_800));
    let nots = format!("{}WorkflowId = 'x'", "NOT ".repeat(10_000));
    for query in [&deep, &nots] {
        for route in ["/api/v1/visibility/workflows", "/api/v1/visibility/count"] {
            let uri = format!("{route}?query={}", encode(query));
            let sent = send(&api, request("GET", &uri, None)).await;
            assert_json_error(&sent, StatusCode::BAD_REQUEST, "invalid_query", route);
        }
    }
    let token = encode("ab\u{1F600}cd");
    let sent = send(
        &api,
        request(
            "GET",
            &format!("/api/v1/visibility/workflows?page_token={token}"),
            None,
        ),
    )
    .await;
    assert_json_error(
        &sent,
        StatusCode::BAD_REQUEST,
        "invalid_page_token",
        "token",
    );
    let long_id = "s".repeat(10_000);
    for (method, action, body) in [
        ("GET", "", None),
        ("DELETE", "", None),
        ("POST", "/pause", None),
        ("POST", "/unpause", None),
        ("POST", "/trigger", None),
        (
            "POST",
            "/backfill",
            Some(r#"{"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}"#),
        ),
    ] {
        let uri = format!("/api/v1/schedules/{long_id}{action}");
        let sent = send(&api, request(method, &uri, body)).await;
        assert_json_error(
            &sent,
            StatusCode::BAD_REQUEST,
            "invalid_schedule",
            &uri[..40],
        );
    }
    let cases = [
        (
            "GET",
            "/api/v1/visibility/workflows?page_size=abc",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/visibility/workflows?page_size=1001",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_page_size",
        ),
        (
            "GET",
            "/api/v1/workflows?page_size=0",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_page_size",
        ),
        (
            "GET",
            "/api/v1/workflows?colour=red",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/workflows/x/result?wait_ms=-1",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/nothing-here",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/api/v1/workflows",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST",
            "/api/v1/schedules",
            Some(
                r#"{"schedule_id": "j", "workflow_type": "doubler", "input": 1, "intervals": [{"every_ms": 1000}], "jitter_ms": 18446744073709551615, "paused": true}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_schedule",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let sent = send(&api, request(method, uri, body)).await;
        assert_json_error(&sent, status, code, uri);
    }
    let oversized = "x".repeat(cairn_server::REQUEST_BODY_BYTES_MAX + 1);
    let sent = send(
        &api,
        request("POST", "/api/v1/internal/query", Some(&oversized)),
    )
    .await;
    assert_json_error(
        &sent,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "internal query",
    );
    // Still serving, and nothing was written by any of it.
    let sent = send(&api, request("GET", "/api/v1/schedules", None)).await;
    assert_eq!(sent.body, Value::Array(Vec::new()));
    let sent = send(&api, request("GET", "/api/v1/visibility/count", None)).await;
    assert_eq!(sent.body["count"], 0);
    node.shutdown().await;
}

/// Proves the steering routes whose body the document calls optional take none at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_less_steering_requests_are_accepted() {
    let node = node().await;
    let api = cairn_server::router(node.runtime(), None);
    for id in ["p-1", "p-2"] {
        let body = format!(r#"{{"workflow_id": "{id}", "workflow_type": "parked"}}"#);
        let sent = send(&api, request("POST", "/api/v1/workflows", Some(&body))).await;
        assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    }
    let schedule = r#"{"schedule_id": "s", "workflow_type": "doubler", "input": 1, "intervals": [{"every_ms": 3600000}], "paused": true}"#;
    let sent = send(&api, request("POST", "/api/v1/schedules", Some(schedule))).await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    for uri in [
        "/api/v1/workflows/p-1/cancel",
        "/api/v1/workflows/p-2/terminate",
        "/api/v1/schedules/s/pause",
        "/api/v1/schedules/s/unpause",
        "/api/v1/schedules/s/trigger",
    ] {
        let bare = Request::builder()
            .method("POST")
            .uri(uri)
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        let sent = send(&api, bare).await;
        assert_eq!(sent.status, StatusCode::ACCEPTED, "{uri}: {}", sent.body);
    }
    node.shutdown().await;
}

/// Proves the token check takes the scheme in any case, says how to authenticate when it
/// refuses, and that without a token the API refuses what a page on another site could make a
/// browser send: a cross-site form post, and a rebound DNS name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_origins_and_hosts_are_checked() {
    let node = node().await;
    let guarded = cairn_server::router(node.runtime(), Some("s3cret".into()));
    let mut asked = request("GET", "/api/v1/visibility/count", None);
    asked
        .headers_mut()
        .insert("authorization", "bearer s3cret".parse().unwrap());
    assert_eq!(send(&guarded, asked).await.status, StatusCode::OK);
    let mut wrong = request("GET", "/api/v1/visibility/count", None);
    wrong
        .headers_mut()
        .insert("authorization", "Bearer s3cre".parse().unwrap());
    let sent = send(&guarded, wrong).await;
    assert_json_error(
        &sent,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "wrong token",
    );
    assert!(
        sent.headers
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
        "{:?}",
        sent.headers
    );

    let open = cairn_server::router(node.runtime(), None);
    let schedule = r#"{"schedule_id": "t", "workflow_type": "doubler", "input": 1, "intervals": [{"every_ms": 3600000}], "paused": true}"#;
    let sent = send(&open, request("POST", "/api/v1/schedules", Some(schedule))).await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    let form = Request::builder()
        .method("POST")
        .uri("/api/v1/schedules/t/trigger")
        .header("host", "127.0.0.1:7280")
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body(Body::from("x=1"))
        .unwrap();
    let sent = send(&open, form).await;
    assert_json_error(&sent, StatusCode::FORBIDDEN, "cross_site_request", "form");
    let fetched = Request::builder()
        .method("POST")
        .uri("/api/v1/schedules/t/trigger")
        .header("host", "127.0.0.1:7280")
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .unwrap();
    let sent = send(&open, fetched).await;
    assert_json_error(&sent, StatusCode::FORBIDDEN, "cross_site_request", "fetch");
    let rebound = Request::builder()
        .method("GET")
        .uri("/api/v1/schedules")
        .header("host", "attacker.example:7280")
        .body(Body::empty())
        .unwrap();
    let sent = send(&open, rebound).await;
    assert_json_error(
        &sent,
        StatusCode::FORBIDDEN,
        "host_not_allowed",
        "rebinding",
    );
    // The same page's own requests, and programs, pass.
    let own = Request::builder()
        .method("POST")
        .uri("/api/v1/schedules/t/pause")
        .header("host", "localhost:7280")
        .header("origin", "http://localhost:7280")
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&open, own).await.status, StatusCode::ACCEPTED);
    let sent = send(&open, request("GET", "/api/v1/schedules/t", None)).await;
    assert_eq!(
        sent.body["recent_actions"].as_array().map(Vec::len),
        Some(0),
        "the refused trigger started nothing: {}",
        sent.body
    );
    node.shutdown().await;
}

/// Proves the in-flight bound: with room for two requests, two long-polls fill it, a third
/// request is answered 503 with `Retry-After` at once, and once they end requests pass again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_bound_are_refused_at_once() {
    let node = node().await;
    let mut options = cairn_server::ApiOptions::default();
    options.requests_in_flight_max = 2;
    let api = cairn_server::router_with(node.runtime(), options);
    let body = r#"{"workflow_id": "held", "workflow_type": "parked"}"#;
    let sent = send(&api, request("POST", "/api/v1/workflows", Some(body))).await;
    assert_eq!(sent.status, StatusCode::CREATED);
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                send(
                    &api,
                    request("GET", "/api/v1/workflows/held/result?wait_ms=1500", None),
                )
                .await
                .status
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = send(&api, request("GET", "/api/v1/visibility/count", None)).await;
    assert_json_error(
        &sent,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "third request",
    );
    assert!(
        sent.headers.contains_key("retry-after"),
        "{:?}",
        sent.headers
    );
    assert!(
        polls.iter().all(|p| !p.is_finished()),
        "refused while the long-polls still held their slots, not after"
    );
    for poll in polls {
        assert_eq!(poll.await.unwrap(), StatusCode::ACCEPTED);
    }
    let sent = send(&api, request("GET", "/api/v1/visibility/count", None)).await;
    assert_eq!(sent.status, StatusCode::OK);
    node.shutdown().await;
}

/// One raw HTTP/1.1 exchange with a server on loopback: writes `head`, then reads until the
/// server closes the connection (every request here asks it to) or 5 s pass.
async fn exchange(address: std::net::SocketAddr, head: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    read.await.expect("the server answers and closes").unwrap();
    answer
}

/// A raw HTTP/1.1 answer read as [`send`] reads a router's: status, headers, JSON body.
fn parse_answer(answer: &[u8]) -> Sent {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in lines.filter_map(|line| line.split_once(": ")) {
        headers.append(
            axum::http::HeaderName::try_from(name).unwrap(),
            value.parse().unwrap(),
        );
    }
    Sent {
        status: StatusCode::from_bytes(status.as_bytes()).unwrap(),
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// Proves the served edge (`cairn_server::serve`, real TCP): an over-long request path is
/// answered 414 and over-large headers 431, both as JSON; a client that sends half a head and
/// stalls is disconnected after the header-read timeout; the server keeps serving throughout
/// and stops when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_heads_are_bounded_in_size_and_time() {
    let node = node().await;
    let mut options = cairn_server::ApiOptions::default();
    options.header_read_timeout = Duration::from_millis(300);
    let router = cairn_server::router_with(node.runtime(), options.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        cairn_server::serve(listener, router, &options, async {
            let _ = stopped.await;
        })
        .await
    });

    let long = format!(
        "GET /api/v1/workflows/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "a".repeat(cairn_server::PATH_BYTES_MAX)
    );
    let sent = parse_answer(&exchange(address, long.as_bytes()).await);
    assert_json_error(&sent, StatusCode::URI_TOO_LONG, "uri_too_long", "long path");

    let big = format!(
        "GET /api/v1/visibility/count HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(cairn_server::HEADER_BYTES_MAX)
    );
    let sent = parse_answer(&exchange(address, big.as_bytes()).await);
    assert_json_error(
        &sent,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "large headers",
    );

    let started = std::time::Instant::now();
    let stalled = exchange(
        address,
        b"GET /api/v1/visibility/count HTTP/1.1\r\nHost: 12",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a stalled head held its connection for {:?}",
        started.elapsed()
    );
    assert!(
        !String::from_utf8_lossy(&stalled).contains(" 200 "),
        "a half-sent request was served"
    );

    let fine =
        b"GET /api/v1/visibility/count HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let sent = parse_answer(&exchange(address, fine).await);
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    assert_eq!(sent.body["count"], 0, "{}", sent.body);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stopped when asked")
        .unwrap()
        .unwrap();
    node.shutdown().await;
}

/// Proves `cairn_server::bind` listens with a deep backlog: a burst of connections far past
/// tokio's default backlog of 1,024, made while the server accepts none, is queued by the
/// kernel (each connect completes at once) instead of being dropped or reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_is_queued_not_refused() {
    let listener = cairn_server::bind("127.0.0.1", 0).await.unwrap();
    let address = listener.local_addr().unwrap();
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let burst = somaxconn
        .min(cairn_server::LISTEN_BACKLOG as usize)
        .min(2_000)
        - 16;
    assert!(
        burst > 1_100,
        "net.core.somaxconn is {somaxconn}: this machine cannot queue more than tokio's default, so the test proves nothing"
    );
    let connects: Vec<_> = (0..burst)
        .map(|_| tokio::spawn(tokio::net::TcpStream::connect(address)))
        .collect();
    let mut streams = Vec::with_capacity(burst);
    for connect in connects {
        // A dropped SYN is retried by the kernel after a second: a short bound catches it.
        let stream = tokio::time::timeout(Duration::from_millis(900), connect)
            .await
            .expect("a connect waited: the backlog dropped it")
            .unwrap()
            .expect("a connect failed");
        streams.push(stream);
    }
    assert_eq!(streams.len(), burst);
    drop(listener);
}
