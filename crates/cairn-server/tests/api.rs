//! The HTTP API end to end (in process, through the router): each operation, and every kind
//! of bad request answered with a JSON error whose code is stable, without writing anything.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cairn::{ActivityContext, Ctx, Failure, Node, Query, Signal, WorkflowError};
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

async fn double(_ctx: ActivityContext, n: u64) -> Result<u64, Failure> {
    Ok(n * 2)
}

async fn doubler(ctx: Ctx, n: u64) -> Result<u64, WorkflowError> {
    Ok(ctx.activity(double, n).await?)
}

const ADD: Signal<u64> = Signal::new("add");
const TOTAL: Query<(), u64> = Query::new("total");

async fn counter(ctx: Ctx, target: u64) -> Result<u64, WorkflowError> {
    let total = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let t = total.clone();
    ctx.on_query(&TOTAL, move |()| t.get());
    let t = total.clone();
    ctx.on_signal(&ADD, move |n| t.set(t.get() + n));
    let t = total.clone();
    ctx.wait_condition(move || t.get() >= target).await;
    Ok(total.get())
}

const RENEW: Signal<()> = Signal::new("renew");

/// Continues as new once, on `renew`; the next run waits for good.
async fn renewing(ctx: Ctx, round: u32) -> Result<(), WorkflowError> {
    if round == 0 {
        ctx.signal_receiver(&RENEW).recv().await;
        return Err(ctx.continue_as_new(&1u32));
    }
    ctx.wait_condition(|| false).await;
    Ok(())
}

async fn router() -> axum::Router {
    let node = Node::builder()
        .workflow(doubler)
        .workflow(counter)
        .workflow(renewing)
        .activity(double)
        .start(cairn::MemStore::new())
        .await
        .unwrap();
    let router = cairn_server::router(node.runtime(), None);
    // The node lives as long as the runtime handle the router holds.
    std::mem::forget(node);
    router
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// Proves start, result (long-poll), describe, history and list over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_result_describe_history_list() {
    let api = router().await;
    let (status, started) = call(
        &api,
        "POST",
        "/api/v1/workflows",
        Some(r#"{"workflow_id":"d-1","workflow_type":"doubler","input":21}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["workflow_id"], "d-1");
    let (status, result) = call(
        &api,
        "GET",
        "/api/v1/workflows/d-1/result?wait_ms=10000",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result, json!({"status": "completed", "result": 42}));
    let (_, described) = call(&api, "GET", "/api/v1/workflows/d-1", None).await;
    assert_eq!(described["status"], "completed");
    assert_eq!(described["workflow_type"], "doubler");
    assert_eq!(described["run_id"], started["run_id"]);
    let (_, history) = call(&api, "GET", "/api/v1/workflows/d-1/history", None).await;
    let types: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"WorkflowExecutionStarted"));
    assert!(types.contains(&"ActivityTaskCompleted"));
    assert_eq!(history[0]["details"]["input"], 21);
    let (_, listed) = call(
        &api,
        "GET",
        "/api/v1/workflows?workflow_type=doubler&status=completed",
        None,
    )
    .await;
    assert_eq!(listed["workflows"].as_array().unwrap().len(), 1);
    assert_eq!(listed["next_page_token"], Value::Null);
    let (_, none) = call(&api, "GET", "/api/v1/workflows?status=running", None).await;
    assert!(none["workflows"].as_array().unwrap().is_empty());
    let (status, metrics) = call(&api, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("# TYPE cairn_workflows_started_total counter"),
        "{metrics}"
    );
    for (line, why) in [
        (
            "cairn_workflows_started_total{workflow_type=\"doubler\"} 1",
            "one start",
        ),
        (
            "cairn_workflows_closed_total{workflow_type=\"doubler\",outcome=\"completed\"} 1",
            "one completion",
        ),
        (
            "cairn_workflows_active{workflow_type=\"doubler\"} 0",
            "nothing left running",
        ),
        (
            "cairn_workflow_execution_seconds_count 1",
            "one execution time observed",
        ),
        (
            "cairn_activity_schedule_to_start_seconds_count 1",
            "one activity started",
        ),
        (
            "cairn_activities_succeeded_total 1",
            "one activity succeeded",
        ),
        ("cairn_activities_failed_total 0", "no activity failed"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{why}: no line {line:?} in\n{metrics}"
        );
    }
    for family in [
        "cairn_store_commit_seconds_count",
        "cairn_store_commit_batch_requests_count",
        "cairn_actor_cache_size",
        "cairn_transitions_total",
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family} ")))
            .unwrap_or_else(|| panic!("{family} missing"))
            .parse()
            .unwrap();
        assert!(value >= 0.0 && value.is_finite(), "{family} = {value}");
    }
    let (status, health) = call(&api, "GET", "/healthz", None).await;
    assert_eq!(
        (status, health),
        (StatusCode::OK, Value::String("ok".into()))
    );
    let (status, page) = call(&api, "GET", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.as_str().unwrap().contains("/ui/app.js"),
        "the UI page loads the UI's code"
    );
}

/// Proves signals, queries, the long-poll timing out while running, cancel and terminate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_query_cancel_terminate() {
    let api = router().await;
    call(
        &api,
        "POST",
        "/api/v1/workflows",
        Some(r#"{"workflow_id":"c-1","workflow_type":"counter","input":5}"#),
    )
    .await;
    let (status, pending) = call(
        &api,
        "GET",
        "/api/v1/workflows/c-1/result?wait_ms=100",
        None,
    )
    .await;
    assert_eq!(
        (status, pending),
        (StatusCode::ACCEPTED, json!({"status": "running"}))
    );
    assert_eq!(
        call(&api, "POST", "/api/v1/workflows/c-1/signals/add", Some("2"))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, total) = call(
        &api,
        "POST",
        "/api/v1/workflows/c-1/queries/total",
        Some("null"),
    )
    .await;
    assert_eq!((status, total), (StatusCode::OK, json!(2)));
    call(&api, "POST", "/api/v1/workflows/c-1/signals/add", Some("3")).await;
    let (_, result) = call(
        &api,
        "GET",
        "/api/v1/workflows/c-1/result?wait_ms=10000",
        None,
    )
    .await;
    assert_eq!(result, json!({"status": "completed", "result": 5}));

    call(
        &api,
        "POST",
        "/api/v1/workflows",
        Some(r#"{"workflow_id":"c-2","workflow_type":"counter","input":5}"#),
    )
    .await;
    assert_eq!(
        call(
            &api,
            "POST",
            "/api/v1/workflows/c-2/terminate",
            Some(r#"{"reason":"ops"}"#)
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    let (_, result) = call(
        &api,
        "GET",
        "/api/v1/workflows/c-2/result?wait_ms=10000",
        None,
    )
    .await;
    assert_eq!(result, json!({"status": "terminated", "reason": "ops"}));
    call(
        &api,
        "POST",
        "/api/v1/workflows",
        Some(r#"{"workflow_id":"c-3","workflow_type":"counter","input":5}"#),
    )
    .await;
    assert_eq!(
        call(&api, "POST", "/api/v1/workflows/c-3/cancel", Some("{}"))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    // The run sees the request (the counter ignores it and keeps waiting).
    let mut seen = false;
    for _ in 0..500 {
        let (_, history) = call(&api, "GET", "/api/v1/workflows/c-3/history", None).await;
        seen = history
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_type"] == "WorkflowExecutionCancelRequested");
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "cancel request never reached the run");
}

/// Proves each kind of bad request gets its JSON error code, and none of them wrote anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_write_nothing() {
    let api = router().await;
    let cases: Vec<(&str, &str, Option<String>, StatusCode, &str)> = vec![
        ("POST", "/api/v1/workflows", Some("{not json".into()), StatusCode::BAD_REQUEST, "malformed_body"),
        ("POST", "/api/v1/workflows", Some(r#"{"workflow_id":"x","workflow_type":"doubler","input":1,"extra":true}"#.into()), StatusCode::UNPROCESSABLE_ENTITY, "malformed_body"),
        ("POST", "/api/v1/workflows", Some(r#"{"workflow_id":"x","workflow_type":"nope","input":1}"#.into()), StatusCode::BAD_REQUEST, "unknown_workflow_type"),
        ("POST", "/api/v1/workflows", Some(r#"{"workflow_id":"x","workflow_type":"doubler","input":"not a number"}"#.into()), StatusCode::BAD_REQUEST, "input_does_not_decode"),
        ("POST", "/api/v1/workflows", Some(r#"{"workflow_id":"","workflow_type":"doubler","input":1}"#.into()), StatusCode::BAD_REQUEST, "invalid_workflow_id"),
        ("POST", "/api/v1/workflows", Some(r#"{"workflow_id":"x","workflow_type":"doubler","input":1,"id_reuse_policy":"sometimes"}"#.into()), StatusCode::BAD_REQUEST, "invalid_id_reuse_policy"),
        ("POST", "/api/v1/workflows", Some(r#"{"workflow_id":"x","workflow_type":"doubler","input":1,"execution_timeout_ms":0}"#.into()), StatusCode::BAD_REQUEST, "invalid_timeouts"),
        ("POST", "/api/v1/workflows", Some(r#"{"workflow_id":"x","workflow_type":"doubler","input":1,"cron_schedule":"whenever"}"#.into()), StatusCode::BAD_REQUEST, "invalid_cron_schedule"),
        ("POST", "/api/v1/workflows", Some(format!(r#"{{"workflow_id":"x","workflow_type":"doubler","input":"{}"}}"#, "x".repeat(300_000))), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("GET", "/api/v1/workflows?status=sleeping", None, StatusCode::BAD_REQUEST, "invalid_status"),
        ("GET", "/api/v1/workflows/missing", None, StatusCode::NOT_FOUND, "not_found"),
        ("POST", "/api/v1/workflows/missing/signals/add", Some("1".into()), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (method, uri, body, status, code) in cases {
        let (got_status, error) = call(&api, method, uri, body.as_deref()).await;
        assert_eq!(got_status, status, "{method} {uri}: {error}");
        assert_eq!(error["code"], code, "{method} {uri}: {error}");
        assert!(!error["message"].as_str().unwrap_or("").is_empty());
    }
    let (_, listed) = call(&api, "GET", "/api/v1/workflows", None).await;
    assert!(
        listed["workflows"].as_array().unwrap().is_empty(),
        "a refused request wrote something: {listed}"
    );

    call(
        &api,
        "POST",
        "/api/v1/workflows",
        Some(r#"{"workflow_id":"dup","workflow_type":"counter","input":1}"#),
    )
    .await;
    let (status, error) = call(
        &api,
        "POST",
        "/api/v1/workflows",
        Some(r#"{"workflow_id":"dup","workflow_type":"counter","input":1}"#),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_running"))
    );
    let (status, error) = call(
        &api,
        "POST",
        "/api/v1/workflows/dup/queries/unknown",
        Some("null"),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("query_failed")),
        "{error}"
    );
}

/// Proves a configured bearer token guards every route but `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_the_api() {
    let node = Node::builder()
        .workflow(doubler)
        .activity(double)
        .start(cairn::MemStore::new())
        .await
        .unwrap();
    let api = cairn_server::router(node.runtime(), Some("s3cret".into()));
    for (method, uri) in [
        ("GET", "/api/v1/workflows"),
        ("POST", "/api/v1/workflows"),
        ("GET", "/api/v1/workflows/x"),
        ("GET", "/api/v1/workflows/x/history"),
        ("GET", "/api/v1/workflows/x/result"),
        ("POST", "/api/v1/workflows/x/signals/s"),
        ("POST", "/api/v1/workflows/x/queries/q"),
        ("POST", "/api/v1/workflows/x/updates/u"),
        ("GET", "/api/v1/workflows/x/updates/u"),
        ("POST", "/api/v1/workflows/x/cancel"),
        ("POST", "/api/v1/workflows/x/terminate"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"),
    ] {
        let (status, error) = call(&api, method, uri, Some("{}")).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{method} {uri} without the token"
        );
    }
    // The UI page holds no data; it asks for the token and sends it with every API call.
    for public in ["/healthz", "/"] {
        assert_eq!(
            call(&api, "GET", public, None).await.0,
            StatusCode::OK,
            "{public}"
        );
    }
    let request = Request::builder()
        .uri("/api/v1/workflows")
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        api.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(call(&api, "GET", "/healthz", None).await.0, StatusCode::OK);
}

/// Proves the published OpenAPI document parses and describes every route the router serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_covers_every_route() {
    let api = router().await;
    let (status, document) = call(&api, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.0.3");
    let paths = document["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/healthz", &["get"][..]),
        ("/metrics", &["get"]),
        ("/api/v1/workflows", &["get", "post"]),
        ("/api/v1/workflows/{id}", &["get"]),
        ("/api/v1/workflows/{id}/history", &["get"]),
        ("/api/v1/workflows/{id}/events", &["get"]),
        ("/api/v1/workflows/{id}/result", &["get"]),
        ("/api/v1/workflows/{id}/signals/{name}", &["post"]),
        ("/api/v1/workflows/{id}/queries/{name}", &["post"]),
        ("/api/v1/workflows/{id}/updates/{name}", &["post", "get"]),
        ("/api/v1/workflows/{id}/cancel", &["post"]),
        ("/api/v1/workflows/{id}/terminate", &["post"]),
        ("/api/v1/visibility/workflows", &["get"]),
        ("/api/v1/visibility/count", &["get"]),
        ("/api/v1/visibility/counts", &["get"]),
        ("/api/v1/schedules", &["get", "post"]),
        ("/api/v1/schedules/{id}", &["get", "put", "delete"]),
        ("/api/v1/schedules/{id}/pause", &["post"]),
        ("/api/v1/schedules/{id}/unpause", &["post"]),
        ("/api/v1/schedules/{id}/trigger", &["post"]),
        ("/api/v1/schedules/{id}/backfill", &["post"]),
        ("/api/v1/cluster", &["get"]),
        ("/api/v1/task-queues", &["get"]),
        ("/api/v1/batches", &["get", "post"]),
        ("/api/v1/batches/{batch_id}", &["get"]),
        ("/api/v1/internal/query", &["post"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} undocumented"
            );
        }
    }
    let codes: Vec<&str> = document["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "malformed_body",
        "invalid_update",
        "update_not_found",
        "updates_in_flight",
        "too_many_updates",
        "unknown_workflow_type",
        "already_running",
        "not_found",
        "unauthorized",
        "invalid_query",
        "invalid_page_token",
        "invalid_schedule",
        "schedule_not_found",
        "schedule_exists",
        "shard_unavailable",
        "not_owner",
    ] {
        assert!(codes.contains(&code), "error code {code} undocumented");
    }
    // Every code the server's source can answer: `(S::STATUS, "code")` in the error mapping
    // and `StatusCode::STATUS, "code"` at each `ApiError::new`.
    let source = [
        include_str!("../src/lib.rs"),
        include_str!("../src/edge.rs"),
        include_str!("../src/json.rs"),
    ]
    .concat();
    let mut answered = std::collections::BTreeSet::new();
    for marker in ["S::", "StatusCode::"] {
        for (at, _) in source.match_indices(marker) {
            let rest = &source[at + marker.len()..];
            let status_end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .unwrap_or(0);
            let after = rest[status_end..].trim_start();
            let Some(after) = after.strip_prefix(',') else {
                continue;
            };
            let after = after.trim_start();
            if let Some(literal) = after.strip_prefix('"')
                && let Some(end) = literal.find('"')
            {
                let code = &literal[..end];
                if !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    answered.insert(code.to_string());
                }
            }
        }
    }
    assert!(
        answered.len() > 20,
        "the scan found too little: {answered:?}"
    );
    for code in &answered {
        assert!(
            codes.contains(&code.as_str()),
            "error code {code} is answered by the server but not in the document's Error enum"
        );
    }
}

/// Proves schedules over HTTP: create (JSON), describe with next times, pause with a note,
/// trigger, delete; and that bad schedules and unknown ids get their stable error codes
/// without anything written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_over_http() {
    let api = router().await;
    let (status, body) = call(
        &api,
        "POST",
        "/api/v1/schedules",
        Some(r#"{"schedule_id": "nightly", "workflow_type": "doubler", "input": 21, "cron": ["0 3 * * *"], "time_zone": "Europe/Paris", "overlap_policy": "buffer_one"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, described) = call(&api, "GET", "/api/v1/schedules/nightly", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(described["overlap_policy"], "buffer_one");
    assert_eq!(described["spec"]["time_zone"], "Europe/Paris");
    let next: Vec<String> = described["next_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(next.len(), 5);
    assert!(
        next.iter()
            .all(|t| t.ends_with("T01:00:00.000Z") || t.ends_with("T02:00:00.000Z")),
        "03:00 in Paris is 01:00 or 02:00 UTC: {next:?}"
    );
    let (status, _) = call(
        &api,
        "POST",
        "/api/v1/schedules/nightly/pause",
        Some(r#"{"note": "migration"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, described) = call(&api, "GET", "/api/v1/schedules/nightly", None).await;
    assert_eq!(
        (described["paused"].clone(), described["note"].clone()),
        (json!(true), json!("migration"))
    );
    let (status, _) = call(&api, "POST", "/api/v1/schedules/nightly/trigger", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut started = Value::Null;
    for _ in 0..200 {
        let (_, page) = call(
            &api,
            "GET",
            "/api/v1/visibility/workflows?query=WorkflowId%20STARTS_WITH%20%27nightly-%27",
            None,
        )
        .await;
        if page["workflows"].as_array().is_some_and(|w| !w.is_empty()) {
            started = page;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        started["workflows"][0]["workflow_type"], "doubler",
        "{started}"
    );

    for (body, code) in [
        (
            r#"{"schedule_id": "x", "workflow_type": "doubler", "cron": ["61 * * * *"]}"#,
            "invalid_schedule",
        ),
        (
            r#"{"schedule_id": "x", "workflow_type": "doubler"}"#,
            "invalid_schedule",
        ),
        (
            r#"{"schedule_id": "x", "workflow_type": "doubler", "intervals": [{"every_ms": 1000}], "overlap_policy": "sometimes"}"#,
            "invalid_schedule",
        ),
        (
            r#"{"schedule_id": "x", "workflow_type": "nope", "intervals": [{"every_ms": 1000}]}"#,
            "unknown_workflow_type",
        ),
        (
            r#"{"schedule_id": "nightly", "workflow_type": "doubler", "input": 1, "intervals": [{"every_ms": 1000}]}"#,
            "schedule_exists",
        ),
        (
            r#"{"schedule_id": "x", "workflow_type": "doubler", "start_time": "soon", "intervals": [{"every_ms": 1000}]}"#,
            "invalid_schedule",
        ),
        (
            r#"{"schedule_id": "x", "workflow_type": "doubler", "every": 5}"#,
            "malformed_body",
        ),
        (
            r#"{"schedule_id": "x", "workflow_type": "doubler", "input": 1, "intervals": [{"every_ms": 1000}], "jitter_ms": 18446744073709551615, "paused": true}"#,
            "invalid_schedule",
        ),
        (
            r#"{"schedule_id": "x", "workflow_type": "doubler", "input": "not a number", "intervals": [{"every_ms": 1000}]}"#,
            "input_does_not_decode",
        ),
        (
            r#"{"schedule_id": "x", "workflow_type": "doubler", "input": 1, "intervals": [{"every_ms": 18446744073709551615}]}"#,
            "invalid_schedule",
        ),
    ] {
        let (status, error) = call(&api, "POST", "/api/v1/schedules", Some(body)).await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert_eq!(error["code"], code, "{body}: {error}");
    }
    let (_, list) = call(&api, "GET", "/api/v1/schedules", None).await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "refused schedules wrote nothing"
    );
    let (status, _) = call(&api, "DELETE", "/api/v1/schedules/nightly", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, error) = call(&api, "POST", "/api/v1/schedules/nightly/pause", Some("{}")).await;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::NOT_FOUND, json!("schedule_not_found"))
    );
}

/// Proves visibility over HTTP: a filter with paging and a count, and a malformed filter
/// answered with `invalid_query` naming the offending token and its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_over_http() {
    let api = router().await;
    for i in 0..5 {
        let body =
            json!({"workflow_id": format!("vis-{i}"), "workflow_type": "doubler", "input": i});
        let (status, _) = call(&api, "POST", "/api/v1/workflows", Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let query = "WorkflowType%20%3D%20%27doubler%27%20ORDER%20BY%20WorkflowId";
    let (status, first) = call(
        &api,
        "GET",
        &format!("/api/v1/visibility/workflows?query={query}&page_size=3"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["workflows"].as_array().unwrap().len(), 3);
    assert_eq!(first["workflows"][0]["workflow_id"], "vis-0");
    let token = first["next_page_token"].as_str().unwrap().to_string();
    let (_, second) = call(
        &api,
        "GET",
        &format!("/api/v1/visibility/workflows?query={query}&page_size=3&page_token={token}"),
        None,
    )
    .await;
    let rest: Vec<&str> = second["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workflow_id"].as_str().unwrap())
        .collect();
    assert_eq!(rest, vec!["vis-3", "vis-4"]);
    assert!(second["next_page_token"].is_null());
    let (_, count) = call(
        &api,
        "GET",
        &format!("/api/v1/visibility/count?query={query}"),
        None,
    )
    .await;
    assert_eq!(count["count"], 5);
    let (status, error) = call(
        &api,
        "GET",
        "/api/v1/visibility/count?query=WorkflowType%20%3D%3D%20%27x%27",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["code"], "invalid_query");
    assert!(
        error["message"].as_str().unwrap().contains("position 14"),
        "{error}"
    );
}

/// Every schema under `node`: each object property and each parameter, by name (`$ref`s to
/// shared parameters followed).
fn named_schemas<'a>(document: &'a Value, node: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                for (name, schema) in properties {
                    out.push((name.clone(), schema));
                }
            }
            if let (Some(Value::String(name)), Some(schema)) = (map.get("name"), map.get("schema"))
            {
                out.push((name.clone(), schema));
            }
            if let Some(Value::String(reference)) = map.get("$ref")
                && let Some(pointer) = reference.strip_prefix('#')
                && reference.starts_with("#/components/parameters/")
                && let Some(target) = document.pointer(pointer)
            {
                named_schemas(document, target, out);
            }
            for value in map.values() {
                named_schemas(document, value, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                named_schemas(document, item, out);
            }
        }
        _ => {}
    }
}

/// Proves the OpenAPI document's bounds are the code's: every length, count and range the
/// document publishes for a field or parameter equals the named constant the server enforces,
/// so changing one without the other fails here (Schemathesis, in CI, checks the server
/// against the document request by request).
#[test]
fn openapi_bounds_are_the_named_constants() {
    use cairn_core::schedule as sched;
    let document: Value = serde_json::from_str(cairn_server::OPENAPI_JSON).unwrap();
    // What a client sends: request bodies and parameters (responses may echo longer values).
    let mut schemas = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        let mut here = Vec::new();
        named_schemas(&document, &item["parameters"], &mut here);
        for operation in item.as_object().unwrap().values() {
            named_schemas(&document, &operation["requestBody"], &mut here);
            named_schemas(&document, &operation["parameters"], &mut here);
        }
        // `{id}` names a schedule under /schedules, a workflow elsewhere.
        let schedule = path.starts_with("/api/v1/schedules/");
        schemas.extend(here.into_iter().map(|(name, schema)| match name.as_str() {
            "id" if schedule => ("schedule_id".to_string(), schema),
            _ => (name, schema),
        }));
    }
    let resolve = |schema: &Value| -> Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => document
                .pointer(r.strip_prefix('#').unwrap())
                .unwrap()
                .clone(),
            None => schema.clone(),
        }
    };
    let as_u64 = |n: usize| n as u64;
    let expected: Vec<(&str, &str, u64)> = vec![
        (
            "workflow_id",
            "maxLength",
            as_u64(cairn_types::limits::WORKFLOW_ID_BYTES_MAX),
        ),
        (
            "id",
            "maxLength",
            as_u64(cairn_types::limits::WORKFLOW_ID_BYTES_MAX),
        ),
        (
            "workflow_type",
            "maxLength",
            as_u64(cairn_types::limits::TYPE_NAME_BYTES_MAX),
        ),
        (
            "schedule_id",
            "maxLength",
            as_u64(cairn_runtime::SCHEDULE_ID_BYTES_MAX),
        ),
        (
            "note",
            "maxLength",
            as_u64(cairn_runtime::SCHEDULE_NOTE_BYTES_MAX),
        ),
        ("cron", "maxItems", as_u64(sched::SCHEDULE_SPEC_ENTRIES_MAX)),
        (
            "intervals",
            "maxItems",
            as_u64(sched::SCHEDULE_SPEC_ENTRIES_MAX),
        ),
        (
            "query",
            "maxLength",
            as_u64(cairn_core::visibility::QUERY_BYTES_MAX),
        ),
        (
            "page_token",
            "maxLength",
            as_u64(cairn_runtime::PAGE_TOKEN_BYTES_MAX),
        ),
        (
            "page_size",
            "maximum",
            as_u64(cairn_runtime::LIST_PAGE_SIZE_MAX),
        ),
        (
            "execution_timeout_ms",
            "maximum",
            cairn_types::limits::TIMEOUT_MS_MAX,
        ),
        ("catchup_window_ms", "minimum", sched::CATCHUP_WINDOW_MS_MIN),
        ("catchup_window_ms", "maximum", sched::CATCHUP_WINDOW_MS_MAX),
        ("every_ms", "minimum", sched::SCHEDULE_INTERVAL_MS_MIN),
        ("every_ms", "maximum", sched::SCHEDULE_INTERVAL_MS_MAX),
        ("jitter_ms", "maximum", sched::SCHEDULE_JITTER_MS_MAX),
    ];
    for (name, keyword, value) in expected {
        let found: Vec<Value> = schemas
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, s)| resolve(s))
            .collect();
        assert!(!found.is_empty(), "{name} is not in the document");
        for schema in found {
            assert_eq!(
                schema.get(keyword).and_then(Value::as_u64),
                Some(value),
                "{name}.{keyword} in the document: {schema}"
            );
        }
    }
    // Cron expressions: each item's length.
    for (_, schema) in schemas.iter().filter(|(n, _)| n == "cron") {
        assert_eq!(
            schema["items"]["maxLength"].as_u64(),
            Some(as_u64(sched::CRON_EXPRESSION_BYTES_MAX)),
            "cron items: {schema}"
        );
    }
}

/// Proves the published timeout bound is enforced: an execution timeout one millisecond past
/// `TIMEOUT_MS_MAX` is refused (400 `invalid_timeouts`, nothing started) for a start and for a
/// schedule's action, and one at the bound is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_past_the_bound_are_refused() {
    let api = router().await;
    let max = cairn_types::limits::TIMEOUT_MS_MAX;
    let start = |id: &str, ms: u64| {
        format!(
            r#"{{"workflow_id":"{id}","workflow_type":"doubler","input":1,"execution_timeout_ms":{ms}}}"#
        )
    };
    let (status, body) = call(
        &api,
        "POST",
        "/api/v1/workflows",
        Some(&start("t-long", max + 1)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_timeouts", "{body}");
    let (status, _) = call(&api, "GET", "/api/v1/workflows/t-long", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a refused start was stored");
    let (status, body) = call(
        &api,
        "POST",
        "/api/v1/workflows",
        Some(&start("t-max", max)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let schedule = format!(
        r#"{{"schedule_id":"s-long","workflow_type":"doubler","input":1,"cron":["0 3 * * *"],"execution_timeout_ms":{}}}"#,
        max + 1
    );
    let (status, body) = call(&api, "POST", "/api/v1/schedules", Some(&schedule)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(&api, "GET", "/api/v1/schedules/s-long", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused schedule was stored"
    );
}

/// Proves a start's memo and search attributes over HTTP: describe and the list show them, a
/// list query finds the workflow by them, and a value that does not fit its type is refused
/// with its own error code and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memo_and_search_attributes_at_start_over_http() {
    const REGION: cairn::SearchAttribute<String> = cairn::SearchAttribute::new("Region");
    let node = Node::builder()
        .workflow(counter)
        .search_attribute(&REGION)
        .start(cairn::MemStore::new())
        .await
        .unwrap();
    let api = cairn_server::router(node.runtime(), None);
    let body = json!({
        "workflow_id": "noted",
        "workflow_type": "counter",
        "input": 1_000,
        "memo": {"owner": {"team": "ops"}},
        "search_attributes": {"Region": {"type": "Keyword", "value": "eu"}},
    });
    let (status, started) = call(&api, "POST", "/api/v1/workflows", Some(&body.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let (_, described) = call(&api, "GET", "/api/v1/workflows/noted", None).await;
    assert_eq!(described["memo"]["owner"]["team"], "ops", "{described}");
    assert_eq!(described["search_attributes"]["Region"]["value"], "eu");
    let (_, listed) = call(
        &api,
        "GET",
        "/api/v1/visibility/workflows?query=Region%20%3D%20%27eu%27",
        None,
    )
    .await;
    assert_eq!(listed["workflows"][0]["workflow_id"], "noted", "{listed}");
    assert_eq!(listed["workflows"][0]["memo"]["owner"]["team"], "ops");
    for (attributes, says) in [
        (
            json!({"Rank": {"type": "Int", "value": "high"}}),
            "does not fit its type Int",
        ),
        (json!({"Rank": 3}), "expected {\"type\""),
        (
            json!({"Rank": {"type": "Float", "value": 3}}),
            "unknown type",
        ),
        (
            json!({"WorkflowId": {"type": "Keyword", "value": "x"}}),
            "built-in",
        ),
    ] {
        let body = json!({
            "workflow_id": "refused",
            "workflow_type": "counter",
            "input": 1,
            "search_attributes": attributes,
        });
        let (status, error) =
            call(&api, "POST", "/api/v1/workflows", Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["code"], "invalid_search_attributes");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    let body = json!({
        "workflow_id": "refused",
        "workflow_type": "counter",
        "input": 1,
        "memo": {"blob": "x".repeat(40_000)},
    });
    let (status, error) = call(&api, "POST", "/api/v1/workflows", Some(&body.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["code"], "invalid_memo");
    let (status, _) = call(&api, "GET", "/api/v1/workflows/refused", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "refused starts wrote nothing"
    );
    let body = json!({
        "workflow_id": "refused",
        "workflow_type": "counter",
        "input": 1,
        "search_attributes": {"Region": {"type": "Int", "value": 3}},
    });
    let (status, error) = call(&api, "POST", "/api/v1/workflows", Some(&body.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("declared Keyword"),
        "{error}"
    );
    node.shutdown().await;
}

async fn get(router: &axum::Router, uri: &str) -> (StatusCode, Value) {
    call(router, "GET", uri, None).await
}

/// Proves the UI's live reads: a history page at a time (`/events`, of the current run or a
/// named one), a long poll that answers when the next event is recorded, counts by status from
/// the counters with a long poll that answers when they change, and the bad parameters
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_history_and_counts_over_http() {
    let api = router().await;
    let (_, counts) = get(&api, "/api/v1/visibility/counts").await;
    assert_eq!(counts["total"], 0);
    let version = counts["version"].as_str().unwrap().to_string();
    // A long poll on the counts answers when a workflow starts.
    let waiting = {
        let api = api.clone();
        let uri = format!("/api/v1/visibility/counts?wait_ms=20000&known={version}");
        tokio::spawn(async move { get(&api, &uri).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = r#"{"workflow_id":"live-1","workflow_type":"counter","input":5}"#;
    let (status, started) = call(&api, "POST", "/api/v1/workflows", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let (status, changed) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_ne!(changed["version"].as_str().unwrap(), version);
    assert_eq!(changed["total"], 1);
    assert_eq!(changed["by_status"]["running"], 1);
    // A continue-as-new moves no count (the id's current run is running still), yet the list
    // changed (another run, another start time): the version moves all the same.
    let body = r#"{"workflow_id":"live-renew","workflow_type":"renewing","input":0}"#;
    let (status, started_renew) = call(&api, "POST", "/api/v1/workflows", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{started_renew}");
    // Settled first: the run's first step rewrites its record too.
    let mut before = get(&api, "/api/v1/visibility/counts").await.1;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = get(&api, "/api/v1/visibility/counts").await.1;
        if again["version"] == before["version"] {
            break;
        }
        before = again;
    }
    let version = before["version"].as_str().unwrap().to_string();
    let waiting = {
        let api = api.clone();
        let uri = format!("/api/v1/visibility/counts?wait_ms=20000&known={version}");
        tokio::spawn(async move { get(&api, &uri).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = call(
        &api,
        "POST",
        "/api/v1/workflows/live-renew/signals/renew",
        Some("null"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, after) = waiting.await.unwrap();
    assert_ne!(after["version"].as_str().unwrap(), version, "{after}");
    assert_eq!(after["total"], before["total"], "{after}");
    assert_eq!(after["by_status"], before["by_status"], "{after}");
    let (_, described) = get(&api, "/api/v1/workflows/live-renew").await;
    assert_ne!(described["run_id"], started_renew["run_id"], "{described}");

    // The history a page at a time.
    let (status, first) = get(&api, "/api/v1/workflows/live-1/events?page_size=1").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["events"].as_array().unwrap().len(), 1);
    assert_eq!(first["events"][0]["event_type"], "WorkflowExecutionStarted");
    assert_eq!(first["next_event_id"], 2);
    assert_eq!(first["closed"], false);
    assert_eq!(first["run_id"], started["run_id"]);
    let (_, rest) = get(&api, "/api/v1/workflows/live-1/events?from=2").await;
    let next = rest["next_event_id"].as_u64().unwrap();
    assert!(next > 2, "{rest}");
    // Nothing past the end: a long poll there answers when the signal's event is recorded.
    let waiting = {
        let api = api.clone();
        let uri = format!("/api/v1/workflows/live-1/events?from={next}&wait_ms=20000");
        tokio::spawn(async move { get(&api, &uri).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = call(
        &api,
        "POST",
        "/api/v1/workflows/live-1/signals/add",
        Some("5"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, arrived) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let events = arrived["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event_type"] == "WorkflowExecutionSignaled"),
        "{arrived}"
    );
    assert_eq!(events[0]["event_id"].as_u64(), Some(next));
    // Once closed, a page says so (and a long poll past the end answers at once).
    let (_, result) = get(&api, "/api/v1/workflows/live-1/result?wait_ms=10000").await;
    assert_eq!(result["result"], 5);
    let (_, done) = get(
        &api,
        "/api/v1/workflows/live-1/events?from=1000&wait_ms=20000",
    )
    .await;
    assert_eq!(done["closed"], true);
    assert!(done["events"].as_array().unwrap().is_empty());

    // A named run: describe and events of it; this one is the current run.
    let run = started["run_id"].as_str().unwrap();
    let (status, described) = get(&api, &format!("/api/v1/workflows/live-1?run_id={run}")).await;
    assert_eq!(status, StatusCode::OK, "{described}");
    assert_eq!(described["current"], true);
    assert_eq!(described["input"], 5);
    assert_eq!(described["status"], "completed");
    // Refused: a run id that is not one, a run of no such workflow, a page size out of bounds.
    for (uri, code) in [
        ("/api/v1/workflows/live-1?run_id=nope", "invalid_run_id"),
        (
            "/api/v1/workflows/live-1/events?run_id=nope",
            "invalid_run_id",
        ),
        (
            "/api/v1/workflows/live-1/events?page_size=0",
            "invalid_page_size",
        ),
        (
            "/api/v1/workflows/live-1/events?page_size=1001",
            "invalid_page_size",
        ),
    ] {
        let (status, error) = get(&api, uri).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{uri}"
        );
    }
    let stranger = "01a25189-9f37-756f-915e-365a66b13814";
    for uri in [
        format!("/api/v1/workflows/live-1?run_id={stranger}"),
        format!("/api/v1/workflows/live-1/events?run_id={stranger}"),
    ] {
        assert_eq!(get(&api, &uri).await.0, StatusCode::NOT_FOUND, "{uri}");
    }
}

/// Proves the UI's files are served from the binary with their types, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_files_are_served() {
    let api = router().await;
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("workflow.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let request = Request::builder()
            .uri(format!("/ui/{file}"))
            .body(Body::empty())
            .unwrap();
        let response = api.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(response.headers()["content-type"], kind, "{file}");
    }
    // A browser that has the file revalidates it for a 304 without the body.
    let request = Request::builder()
        .uri("/ui/workflows.js")
        .body(Body::empty())
        .unwrap();
    let response = api.clone().oneshot(request).await.unwrap();
    let etag = response.headers()["etag"].clone();
    let request = Request::builder()
        .uri("/ui/workflows.js")
        .header("if-none-match", etag)
        .body(Body::empty())
        .unwrap();
    let response = api.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    let request = Request::builder()
        .uri("/ui/workflows.js")
        .header("if-none-match", "\"0000000000000000\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        api.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    let (status, page) = get(&api, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("/ui/app.js"));
    for missing in ["/ui/nope.js", "/ui/..%2Fopenapi.json"] {
        let (status, error) = get(&api, missing).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{missing}"
        );
    }
}

/// Proves a batch operation over HTTP: terminate every workflow a query selects (more than a
/// page of them, so it resumes from its stored position), in the background, with progress;
/// what it skips and what it leaves alone; and bad batches refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_terminate_over_http() {
    let api = router().await;
    let selected = cairn_runtime::BATCH_PAGE_WORKFLOWS + 20;
    for i in 0..selected {
        let body = format!(r#"{{"workflow_id":"c-{i:03}","workflow_type":"counter","input":5}}"#);
        let (status, answer) = call(&api, "POST", "/api/v1/workflows", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let body = r#"{"workflow_id":"d-1","workflow_type":"doubler","input":2}"#;
    call(&api, "POST", "/api/v1/workflows", Some(body)).await;
    let (_, done) = get(&api, "/api/v1/workflows/d-1/result?wait_ms=10000").await;
    assert_eq!(done["result"], 4);
    // One counter closes before the batch reaches it: it counts as skipped.
    call(
        &api,
        "POST",
        "/api/v1/workflows/c-000/signals/add",
        Some("5"),
    )
    .await;
    let (_, closed) = get(&api, "/api/v1/workflows/c-000/result?wait_ms=10000").await;
    assert_eq!(closed["result"], 5);

    let body = r#"{"operation":"terminate","query":"WorkflowType = 'counter'","reason":"cleanup"}"#;
    let (status, batch) = call(&api, "POST", "/api/v1/batches", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    assert_eq!(batch["state"], "running");
    let id = batch["batch_id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let (_, batch) = get(&api, &format!("/api/v1/batches/{id}")).await;
        if batch["state"] != "running" {
            break batch;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch never finished: {batch}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(
        finished["visited"].as_u64(),
        Some(selected as u64),
        "{finished}"
    );
    assert_eq!(
        finished["applied"].as_u64(),
        Some(selected as u64 - 1),
        "{finished}"
    );
    assert_eq!(finished["skipped"], 1, "{finished}");
    assert_eq!(finished["failed"], 0, "{finished}");
    // Applied means the termination is in each run's mailbox; each run then closes.
    for id in ["c-001", "c-119"] {
        let (_, outcome) = get(
            &api,
            &format!("/api/v1/workflows/{id}/result?wait_ms=10000"),
        )
        .await;
        assert_eq!(outcome["status"], "terminated", "{id}: {outcome}");
        assert_eq!(outcome["reason"], "cleanup");
    }
    let (_, untouched) = get(&api, "/api/v1/workflows/d-1").await;
    assert_eq!(untouched["status"], "completed");
    let (_, listed) = get(&api, "/api/v1/batches").await;
    assert_eq!(listed[0]["batch_id"].as_str(), Some(id.as_str()));

    for (body, code) in [
        (r#"{"operation":"delete","query":""}"#, "invalid_batch"),
        (
            r#"{"operation":"cancel","query":"WorkflowType ="}"#,
            "invalid_query",
        ),
    ] {
        let (status, error) = call(&api, "POST", "/api/v1/batches", Some(body)).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}"
        );
    }
    let (status, error) = get(&api, "/api/v1/batches/no-such-batch").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("batch_not_found"))
    );
}

/// Proves a schedule's update over HTTP: `PUT` replaces its spec, action, policies, pause and
/// note in one go and keeps its history (actions started, recent actions); a bad update, a
/// body naming another schedule and an unknown schedule are refused, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_update_over_http() {
    let api = router().await;
    let create = r#"{"schedule_id": "hourly", "workflow_type": "doubler", "input": 1, "intervals": [{"every_ms": 3600000}]}"#;
    let (status, body) = call(&api, "POST", "/api/v1/schedules", Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = call(&api, "POST", "/api/v1/schedules/hourly/trigger", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let before = loop {
        let (_, described) = get(&api, "/api/v1/schedules/hourly").await;
        if described["actions_started"] == 1 {
            break described;
        }
        assert!(tokio::time::Instant::now() < deadline, "{described}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let update = r#"{"schedule_id": "hourly", "workflow_type": "doubler", "input": 2, "cron": ["0 9 * * MON-FRI"], "time_zone": "Europe/Paris", "overlap_policy": "allow_all", "paused": true, "note": "weekdays now"}"#;
    let (status, body) = call(&api, "PUT", "/api/v1/schedules/hourly", Some(update)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, after) = get(&api, "/api/v1/schedules/hourly").await;
    assert_eq!(after["spec"]["cron"], json!(["0 9 * * MON-FRI"]));
    assert_eq!(after["spec"]["intervals"], json!([]));
    assert_eq!(after["spec"]["time_zone"], "Europe/Paris");
    assert_eq!(after["input"], 2);
    assert_eq!(after["overlap_policy"], "allow_all");
    assert_eq!(
        (after["paused"].clone(), after["note"].clone()),
        (json!(true), json!("weekdays now"))
    );
    assert_eq!(after["actions_started"], 1, "the history stays: {after}");
    assert_eq!(after["recent_actions"], before["recent_actions"]);
    assert_eq!(after["created_unix_ms"], before["created_unix_ms"]);
    // Refused, changing nothing.
    for (uri, body, status, code) in [
        (
            "/api/v1/schedules/hourly",
            r#"{"schedule_id": "hourly", "workflow_type": "doubler", "cron": ["61 * * * *"]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_schedule",
        ),
        (
            "/api/v1/schedules/hourly",
            r#"{"schedule_id": "other", "workflow_type": "doubler", "cron": ["0 9 * * *"]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_schedule",
        ),
        (
            "/api/v1/schedules/hourly",
            r#"{"schedule_id": "hourly", "workflow_type": "nope", "cron": ["0 9 * * *"]}"#,
            StatusCode::BAD_REQUEST,
            "unknown_workflow_type",
        ),
        (
            "/api/v1/schedules/missing",
            r#"{"schedule_id": "missing", "workflow_type": "doubler", "input": 1, "cron": ["0 9 * * *"]}"#,
            StatusCode::NOT_FOUND,
            "schedule_not_found",
        ),
    ] {
        let (got, error) = call(&api, "PUT", uri, Some(body)).await;
        assert_eq!(
            (got, error["code"].as_str()),
            (status, Some(code)),
            "{body}: {error}"
        );
    }
    let (_, unchanged) = get(&api, "/api/v1/schedules/hourly").await;
    assert_eq!(unchanged["spec"], after["spec"]);
    assert_eq!(unchanged["note"], "weekdays now");
}

/// Beats `{"n": 1}` every 200 ms until canceled.
async fn beats_then_waits(ctx: ActivityContext, _: ()) -> Result<(), Failure> {
    loop {
        ctx.heartbeat(cairn::Payload::encode(&json!({"n": 1})).unwrap());
        tokio::select! {
            () = ctx.cancelled() => return Err(Failure::new("Canceled", "canceled")),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn beating_flow(ctx: Ctx, _: ()) -> Result<(), WorkflowError> {
    Ok(ctx
        .activity(beats_then_waits, ())
        .heartbeat_timeout(Duration::from_secs(1))
        .await?)
}

/// Proves describe shows a pending activity's last heartbeat: its details and when it was
/// sent (`last_heartbeat_unix_ms`, Temporal's `last_heartbeat_time`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_heartbeat_over_http() {
    let node = Node::builder()
        .workflow(beating_flow)
        .activity(beats_then_waits)
        .start(cairn::MemStore::new())
        .await
        .unwrap();
    let api = cairn_server::router(node.runtime(), None);
    let before = unix_ms();
    let body = r#"{"workflow_id":"beats","workflow_type":"beating_flow","input":null}"#;
    let (status, answer) = call(&api, "POST", "/api/v1/workflows", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let pending = loop {
        let (_, described) = get(&api, "/api/v1/workflows/beats").await;
        let pending = described["pending_activities"][0].clone();
        if pending["last_heartbeat_unix_ms"].is_u64() {
            break pending;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat described: {described}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pending["heartbeat_details"], json!({"n": 1}), "{pending}");
    let at = pending["last_heartbeat_unix_ms"].as_u64().unwrap();
    let now = unix_ms();
    assert!(before <= at && at <= now, "{before} <= {at} <= {now}");
    node.shutdown().await;
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Proves `GET /api/v1/task-queues?scope=cluster` answers every live node's queues (here one
/// node, so its own), and a scope it does not know is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_queues_of_the_cluster_over_http() {
    let node = Node::builder()
        .workflow(doubler)
        .activity(double)
        .start(cairn::MemStore::new())
        .await
        .unwrap();
    node.runtime()
        .note_poller("orders", cairn_runtime::PollKind::Activity, "worker-1");
    let api = cairn_server::router(node.runtime(), None);
    let (status, alone) = get(&api, "/api/v1/task-queues").await;
    assert_eq!(status, StatusCode::OK, "{alone}");
    assert!(alone.get("nodes").is_none(), "{alone}");
    let (status, cluster) = get(&api, "/api/v1/task-queues?scope=cluster").await;
    assert_eq!(status, StatusCode::OK, "{cluster}");
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{cluster}");
    assert_eq!(nodes[0]["node_id"], cluster["node_id"]);
    assert_eq!(nodes[0]["task_queues"][0]["name"], "orders");
    assert_eq!(
        nodes[0]["task_queues"][0]["pollers"][0]["identity"],
        "worker-1"
    );
    let (status, refused) = get(&api, "/api/v1/task-queues?scope=everywhere").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["code"], "invalid_parameter");
    node.shutdown().await;
}

/// Sleeps a minute: one durable timer due in the future.
async fn napping(ctx: Ctx, _: ()) -> Result<(), WorkflowError> {
    ctx.sleep(std::time::Duration::from_secs(60)).await;
    Ok(())
}

/// Proves `GET /api/v1/cluster` reports lag: each shard's earliest due time (here a nap's
/// timer, a minute ahead, in its shard only) and lag (none: it is not yet due), each node's
/// and the cluster's most lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_over_http_says_how_far_each_shard_lags() {
    let node = Node::builder()
        .workflow(napping)
        .start(cairn::MemStore::new())
        .await
        .unwrap();
    node.client()
        .start(napping, "nap", ())
        .send()
        .await
        .unwrap();
    let shard = node
        .runtime()
        .shard_of(&cairn::WorkflowId::new("nap").unwrap());
    let api = cairn_server::router(node.runtime(), None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let cluster = loop {
        let (status, cluster) = get(&api, "/api/v1/cluster").await;
        assert_eq!(status, StatusCode::OK, "{cluster}");
        if cluster["shards"][shard as usize]["earliest_due_unix_ms"].is_u64() {
            break cluster;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no timer shown: {cluster}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let now = cluster["now_unix_ms"].as_u64().unwrap();
    for s in cluster["shards"].as_array().unwrap() {
        assert_eq!(s["lag_ms"], 0, "{s}");
        let due = &s["earliest_due_unix_ms"];
        if s["shard"] == shard {
            assert!(due.as_u64().unwrap() > now + 50_000, "{s}");
        } else {
            assert!(due.is_null(), "{s}");
        }
    }
    assert_eq!(cluster["nodes"][0]["lag_ms"], 0, "{cluster}");
    assert_eq!(cluster["lag_ms"], 0, "{cluster}");
    node.shutdown().await;
}
