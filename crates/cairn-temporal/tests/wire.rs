//! Temporal's own generated client (from `temporalio-protos`) against a Cairn node's gRPC
//! frontend: what Temporal's SDKs and CLI send, checked through the wire.

use cairn::{ActivityContext, Ctx, Failure, Query, Signal, WorkflowError};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use temporalio_protos::google::rpc::Status as RpcStatus;
use temporalio_protos::temporal::api::common::v1::{
    Memo, Payload, Payloads, SearchAttributes, WorkflowExecution, WorkflowType,
};
use temporalio_protos::temporal::api::enums::v1::{
    EventType, HistoryEventFilterType, WorkflowExecutionStatus, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy,
};
use temporalio_protos::temporal::api::errordetails::v1::WorkflowExecutionAlreadyStartedFailure;
use temporalio_protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_protos::temporal::api::query::v1::WorkflowQuery;
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use temporalio_protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn shout(_ctx: ActivityContext, word: String) -> Result<String, Failure> {
    Ok(word.to_uppercase())
}

const WORD: Signal<String> = Signal::new("word");
const HEARD: Query<(), u32> = Query::new("heard");

/// Collects `word` signals until one says "done"; shouts them through an activity after a
/// timer; answers `heard` meanwhile.
async fn collector(ctx: Ctx, (prefix, limit): (String, u32)) -> Result<String, WorkflowError> {
    let words = Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let done = Rc::new(Cell::new(false));
    let (w, d) = (words.clone(), done.clone());
    ctx.on_signal(&WORD, move |word: String| {
        if word == "done" {
            d.set(true);
        } else {
            w.borrow_mut().push(word);
        }
    });
    let w = words.clone();
    ctx.on_query(&HEARD, move |()| w.borrow().len() as u32);
    let (w, d) = (words.clone(), done.clone());
    ctx.wait_condition(move || d.get() || w.borrow().len() as u32 >= limit)
        .await;
    ctx.sleep(Duration::from_millis(10)).await;
    let joined = words.borrow().join(" ");
    let loud = ctx.activity(shout, joined).await?;
    Ok(format!("{prefix}{loud}"))
}

struct Server {
    node: cairn::Node<EmbeddedStore>,
    client: WorkflowServiceClient<Channel>,
    address: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

const CUSTOMER: cairn::SearchAttribute<String> = cairn::SearchAttribute::new("CustomerId");

async fn serve(store: EmbeddedStore, token: Option<&str>) -> Server {
    let node = cairn::Node::builder()
        .workflow(collector)
        .activity(shout)
        .search_attribute(&CUSTOMER)
        .config(cairn::NodeConfig {
            node_id: "wire".into(),
            shard_count: 4,
            ..cairn::NodeConfig::default()
        })
        .start(store)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(cairn_temporal::serve(
        listener,
        node.runtime(),
        token.map(str::to_string),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = WorkflowServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    Server {
        node,
        client,
        address,
        stop: Some(stop),
        served,
    }
}

impl Server {
    async fn stop(mut self) -> cairn::Node<EmbeddedStore> {
        let _ = self.stop.take().unwrap().send(());
        drop(self.client);
        self.served.await.unwrap().unwrap();
        self.node
    }
}

fn json(value: serde_json::Value) -> Payload {
    Payload {
        metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
        data: serde_json::to_vec(&value).unwrap(),
        ..Default::default()
    }
}

/// A search attribute value as Temporal's SDKs send it: JSON with its type in metadata.
fn typed(value: serde_json::Value, ty: &str) -> Payload {
    let mut payload = json(value);
    payload
        .metadata
        .insert("type".to_string(), ty.as_bytes().to_vec());
    payload
}

fn args(values: Vec<serde_json::Value>) -> Option<Payloads> {
    Some(Payloads {
        payloads: values.into_iter().map(json).collect(),
    })
}

fn start_request(id: &str, prefix: &str, limit: u32) -> ws::StartWorkflowExecutionRequest {
    ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: id.into(),
        workflow_type: Some(WorkflowType {
            name: "collector".into(),
        }),
        task_queue: Some(TaskQueue {
            name: "anything".into(),
            ..Default::default()
        }),
        input: args(vec![serde_json::json!(prefix), serde_json::json!(limit)]),
        request_id: uuid_like(id),
        ..Default::default()
    }
}

fn uuid_like(id: &str) -> String {
    format!("req-{id}")
}

fn execution(id: &str) -> Option<WorkflowExecution> {
    Some(WorkflowExecution {
        workflow_id: id.into(),
        run_id: String::new(),
    })
}

async fn signal(client: &mut WorkflowServiceClient<Channel>, id: &str, word: &str) {
    client
        .signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: execution(id),
            signal_name: "word".into(),
            input: args(vec![serde_json::json!(word)]),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The result as Temporal's clients wait for it: a close-event long poll, polled again on an
/// empty answer.
async fn result(client: &mut WorkflowServiceClient<Channel>, id: &str) -> serde_json::Value {
    let mut token = Vec::new();
    loop {
        let answer = client
            .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
                namespace: "default".into(),
                execution: execution(id),
                wait_new_event: true,
                history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
                next_page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let events = answer.history.unwrap_or_default().events;
        if let Some(event) = events.first() {
            assert_eq!(events.len(), 1, "the close event only");
            match &event.attributes {
                Some(Attributes::WorkflowExecutionCompletedEventAttributes(done)) => {
                    let payload = &done.result.as_ref().unwrap().payloads[0];
                    assert_eq!(payload.metadata["encoding"], b"json/plain");
                    return serde_json::from_slice(&payload.data).unwrap();
                }
                other => panic!("{id} closed with {other:?}"),
            }
        }
        token = answer.next_page_token;
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done in 60 s"))
}

fn store() -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    (store, dir)
}

/// Proves the round trip a Temporal client makes: start with JSON arguments, signal, query,
/// await the close event, describe, and read a history whose ids, workflow tasks and
/// references are Temporal's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporal_client_runs_a_rust_workflow() {
    let (store, _dir) = store();
    let mut server = serve(store, None).await;
    let client = &mut server.client;
    let info = client
        .get_system_info(ws::GetSystemInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(info.server_version.starts_with("cairn"));
    let started = client
        .start_workflow_execution(start_request("round-trip", "heard: ", 99))
        .await
        .unwrap()
        .into_inner();
    assert!(started.started);
    for word in ["durable", "actors"] {
        signal(client, "round-trip", word).await;
    }
    let heard = loop {
        let answer = client
            .query_workflow(ws::QueryWorkflowRequest {
                namespace: "default".into(),
                execution: execution("round-trip"),
                query: Some(WorkflowQuery {
                    query_type: "heard".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let payload = &answer.query_result.unwrap().payloads[0];
        let n: u32 = serde_json::from_slice(&payload.data).unwrap();
        if n == 2 {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(heard, 2);
    signal(client, "round-trip", "done").await;
    assert_eq!(
        within("result", result(client, "round-trip")).await,
        serde_json::json!("heard: DURABLE ACTORS")
    );

    let described = client
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution("round-trip"),
        })
        .await
        .unwrap()
        .into_inner();
    let info = described.workflow_execution_info.unwrap();
    assert_eq!(info.status, WorkflowExecutionStatus::Completed as i32);
    assert_eq!(info.execution.unwrap().run_id, started.run_id);

    let history = client
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution("round-trip"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(history.next_page_token.is_empty(), "one page, closed run");
    let events = history.history.unwrap().events;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event_id, i as i64 + 1, "ids count from 1 without gaps");
    }
    let types: Vec<EventType> = events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect();
    assert_eq!(types[0], EventType::WorkflowExecutionStarted);
    assert_eq!(types[1], EventType::WorkflowTaskScheduled);
    assert_eq!(types[2], EventType::WorkflowTaskStarted);
    assert_eq!(types[3], EventType::WorkflowTaskCompleted);
    assert_eq!(
        *types.last().unwrap(),
        EventType::WorkflowExecutionCompleted
    );
    let signals = types
        .iter()
        .filter(|t| **t == EventType::WorkflowExecutionSignaled)
        .count();
    assert_eq!(signals, 3);
    // Every command points at the workflow task completed just before it, and the activity's
    // result at its scheduling.
    let mut last_task = 0;
    let mut scheduled = 0;
    for e in &events {
        match &e.attributes {
            Some(Attributes::WorkflowTaskCompletedEventAttributes(a)) => {
                assert_eq!(a.started_event_id, e.event_id - 1);
                assert_eq!(a.scheduled_event_id, e.event_id - 2);
                last_task = e.event_id;
            }
            Some(Attributes::TimerStartedEventAttributes(a)) => {
                assert_eq!(a.workflow_task_completed_event_id, last_task);
            }
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                assert_eq!(a.workflow_task_completed_event_id, last_task);
                assert_eq!(a.activity_type.as_ref().unwrap().name, "shout");
                scheduled = e.event_id;
            }
            Some(Attributes::ActivityTaskStartedEventAttributes(a)) => {
                assert_eq!(a.scheduled_event_id, scheduled);
            }
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                assert_eq!(a.scheduled_event_id, scheduled);
                assert_eq!(a.started_event_id, e.event_id - 1);
            }
            Some(Attributes::WorkflowExecutionCompletedEventAttributes(a)) => {
                assert_eq!(a.workflow_task_completed_event_id, last_task);
            }
            _ => {}
        }
    }
    assert!(scheduled > 0, "the activity is in the history");

    // Paged, as the CLI reads long histories.
    let mut token = Vec::new();
    let mut paged = Vec::new();
    loop {
        let page = client
            .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
                namespace: "default".into(),
                execution: execution("round-trip"),
                maximum_page_size: 4,
                next_page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let events = page.history.unwrap().events;
        assert!(events.len() <= 4);
        paged.extend(events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, events);

    let listed = client
        .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: "WorkflowType = 'collector' AND ExecutionStatus = 'Completed'".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
    let count = client
        .count_workflow_executions(ws::CountWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: "WorkflowId STARTS_WITH 'round'".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 1);
    server.stop().await.shutdown().await;
}

fn already_started_run(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let rpc = <RpcStatus as prost::Message>::decode(status.details()).unwrap();
    let any = &rpc.details[0];
    assert_eq!(
        any.type_url,
        "type.googleapis.com/temporal.api.errordetails.v1.WorkflowExecutionAlreadyStartedFailure"
    );
    <WorkflowExecutionAlreadyStartedFailure as prost::Message>::decode(any.value.as_slice())
        .unwrap()
        .run_id
}

/// Proves id reuse and conflict policies as Temporal's clients send them: a start repeated
/// with its request id answers the same run; another start of a running id is refused with the detail the SDKs turn into `WorkflowAlreadyStartedError`,
/// USE_EXISTING answers the running run, TERMINATE_EXISTING replaces it, REJECT_DUPLICATE
/// refuses after the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_follow_id_reuse_and_conflict_policies() {
    let (store, _dir) = store();
    let mut server = serve(store, None).await;
    let client = &mut server.client;
    let first = client
        .start_workflow_execution(start_request("reuse", "", 1))
        .await
        .unwrap()
        .into_inner();
    // The same request again (a client's retry after a lost answer): the same run.
    let retried = client
        .start_workflow_execution(start_request("reuse", "", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.run_id, first.run_id);
    let refused = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            request_id: "another request".into(),
            ..start_request("reuse", "", 1)
        })
        .await
        .unwrap_err();
    assert_eq!(already_started_run(&refused), first.run_id);
    let existing = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            workflow_id_conflict_policy: WorkflowIdConflictPolicy::UseExisting as i32,
            request_id: "third request".into(),
            ..start_request("reuse", "", 1)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(existing.run_id, first.run_id);
    assert!(!existing.started);
    let replaced = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            workflow_id_conflict_policy: WorkflowIdConflictPolicy::TerminateExisting as i32,
            request_id: "fourth request".into(),
            ..start_request("reuse", "second:", 1)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(replaced.started);
    assert_ne!(replaced.run_id, first.run_id);
    let old = client
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id: "reuse".into(),
                run_id: first.run_id.clone(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        old.code(),
        Code::NotFound,
        "an old run is not the current one"
    );
    signal(client, "reuse", "x").await;
    assert_eq!(
        within("replaced", result(client, "reuse")).await,
        serde_json::json!("second:X")
    );
    let rejected = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            workflow_id_reuse_policy: WorkflowIdReusePolicy::RejectDuplicate as i32,
            request_id: "fifth request".into(),
            ..start_request("reuse", "", 1)
        })
        .await
        .unwrap_err();
    assert_eq!(rejected.code(), Code::AlreadyExists, "{rejected:?}");
    server.stop().await.shutdown().await;
}

/// Proves malformed and unsupported requests get a clear status and write nothing: unknown
/// namespace, unregistered type, foreign payload encodings, bad JSON, options Cairn cannot
/// honour (memo, cron), a missing task queue, a forged page token, and RPCs not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_write_nothing() {
    let (store, _dir) = store();
    let mut server = serve(store, None).await;
    let client = &mut server.client;
    let check = |status: tonic::Status, code: Code, says: &str| {
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(says),
            "{:?} lacks {says:?}",
            status.message()
        );
    };
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            namespace: "prod".into(),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::NotFound, "\"prod\"");
    // (A type the node has no code for is no error: it runs in remote workers, see
    // tests/workflow_tasks.rs.)
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            input: Some(Payloads {
                payloads: vec![Payload {
                    metadata: HashMap::from([(
                        "encoding".to_string(),
                        b"binary/protobuf".to_vec(),
                    )]),
                    data: vec![1, 2, 3],
                    ..Default::default()
                }],
            }),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "binary/protobuf");
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            input: Some(Payloads {
                payloads: vec![Payload {
                    metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
                    data: b"{\"unterminated".to_vec(),
                    ..Default::default()
                }],
            }),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "not JSON");
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            input: args(vec![serde_json::json!({"not": "a tuple"})]),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "does not decode");
    let memo = |fields: Vec<(String, Payload)>| Memo {
        fields: fields.into_iter().collect(),
    };
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            memo: Some(memo(vec![(
                "big".into(),
                json(serde_json::json!("x".repeat(40_000))),
            )])),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "the limit is 32000");
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            memo: Some(memo(
                (0..65)
                    .map(|i| (format!("k{i}"), json(serde_json::json!(i))))
                    .collect(),
            )),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "65 fields");
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            memo: Some(memo(vec![("".into(), json(serde_json::json!(1)))])),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "memo key");
    let attributes = |name: &str, payload: Payload| SearchAttributes {
        indexed_fields: HashMap::from([(name.to_string(), payload)]),
    };
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            search_attributes: Some(attributes("Undeclared", json(serde_json::json!("x")))),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "not declared on this node");
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            search_attributes: Some(attributes("CustomerId", typed(serde_json::json!(7), "Int"))),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "declared Keyword on this node");
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            search_attributes: Some(attributes(
                "WorkflowType",
                typed(serde_json::json!("x"), "Keyword"),
            )),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "built-in");
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            search_attributes: Some(attributes(
                "CustomerId",
                typed(serde_json::json!("y".repeat(3_000)), "Keyword"),
            )),
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "limit is 2048");
    for (cron, says) in [
        ("every morning", "invalid cron_schedule"),
        ("@every 5 fortnights", "not a duration"),
        ("CRON_TZ=Atlantis/Lost 0 9 * * *", "IANA time zone"),
        (
            &*format!("0 9 * * * {}", "1".repeat(300)),
            "longer than 256 bytes",
        ),
    ] {
        let e = client
            .start_workflow_execution(ws::StartWorkflowExecutionRequest {
                cron_schedule: cron.into(),
                ..start_request("bad", "", 1)
            })
            .await
            .unwrap_err();
        check(e, Code::InvalidArgument, says);
    }
    // A start delay: not supported, and never with a cron schedule.
    for (cron, code, says) in [
        (
            "0 9 * * *",
            Code::InvalidArgument,
            "may not be used together",
        ),
        ("", Code::Unimplemented, "workflow_start_delay"),
    ] {
        let e = client
            .start_workflow_execution(ws::StartWorkflowExecutionRequest {
                cron_schedule: cron.into(),
                workflow_start_delay: Some(prost_wkt_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                ..start_request("bad", "", 1)
            })
            .await
            .unwrap_err();
        check(e, code, says);
    }
    let e = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            task_queue: None,
            ..start_request("bad", "", 1)
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "task_queue");
    let e = client
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution("bad"),
            next_page_token: b"forged".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "next_page_token");
    let e = client
        .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: "WorkflowType = ".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "query");
    let e = client
        .poll_workflow_task_queue(ws::PollWorkflowTaskQueueRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "task_queue is required");
    let e = client
        .update_workflow_execution(ws::UpdateWorkflowExecutionRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "workflow_execution is required");
    let update = |workflow_id: &str, name: &str| ws::UpdateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(workflow_id),
        request: Some(temporalio_protos::temporal::api::update::v1::Request {
            input: Some(temporalio_protos::temporal::api::update::v1::Input {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = client
        .update_workflow_execution(update("never-started", ""))
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, "request.input.name is required");
    let e = client
        .update_workflow_execution(update("never-started", "set"))
        .await
        .unwrap_err();
    check(e, Code::NotFound, "never-started");
    let e = client
        .reset_workflow_execution(ws::ResetWorkflowExecutionRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(
        e,
        Code::Unimplemented,
        "WorkflowService/ResetWorkflowExecution",
    );
    let e = client
        .signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: execution("never-started"),
            signal_name: "word".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    check(e, Code::NotFound, "never-started");
    let count = client
        .count_workflow_executions(ws::CountWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 0, "nothing was written");
    server.stop().await.shutdown().await;
}

/// Proves a start's memo and search attributes: the workflow is found by them at once (before
/// its first step), describe and list show the memo exactly as written (a codec's payload
/// too), an untyped value takes the declared type, the first event carries both, and a
/// signal-with-start sets them as a start does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memo_and_search_attributes_at_start() {
    let (store, _dir) = store();
    let mut server = serve(store, None).await;
    let client = &mut server.client;
    let opaque = Payload {
        metadata: HashMap::from([
            ("encoding".to_string(), b"binary/encrypted".to_vec()),
            ("encryption-key-id".to_string(), b"k1".to_vec()),
        ]),
        data: vec![0, 159, 146, 150],
        ..Default::default()
    };
    let memo = Memo {
        fields: HashMap::from([
            (
                "owner".to_string(),
                json(serde_json::json!({"team": "ops"})),
            ),
            ("secret".to_string(), opaque.clone()),
        ]),
    };
    let started = client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            memo: Some(memo.clone()),
            // Untyped, as the Go SDK and the CLI send it: the declared type applies.
            search_attributes: Some(SearchAttributes {
                indexed_fields: HashMap::from([(
                    "CustomerId".to_string(),
                    json(serde_json::json!(["c-42"])),
                )]),
            }),
            ..start_request("noted", "", 1)
        })
        .await
        .unwrap()
        .into_inner();
    let listed = client
        .list_workflow_executions(ws::ListWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: "CustomerId = 'c-42'".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .executions;
    assert_eq!(listed.len(), 1, "found by its start's attribute at once");
    let info = &listed[0];
    assert_eq!(info.execution.as_ref().unwrap().run_id, started.run_id);
    let shown = info.memo.as_ref().unwrap();
    assert_eq!(
        shown.fields["secret"], opaque,
        "an opaque memo value comes back exactly"
    );
    let owner: serde_json::Value = serde_json::from_slice(&shown.fields["owner"].data).unwrap();
    assert_eq!(owner, serde_json::json!({"team": "ops"}));
    let described = client
        .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution("noted"),
        })
        .await
        .unwrap()
        .into_inner()
        .workflow_execution_info
        .unwrap();
    assert_eq!(described.memo.unwrap().fields["secret"], opaque);
    let attribute = &described.search_attributes.unwrap().indexed_fields["CustomerId"];
    assert_eq!(attribute.metadata["type"], b"Keyword");
    assert_eq!(attribute.data, b"\"c-42\"");
    let history = client
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: execution("noted"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .history
        .unwrap();
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(first)) =
        &history.events[0].attributes
    else {
        panic!("the first event is the start");
    };
    assert_eq!(first.memo.as_ref().unwrap().fields["secret"], opaque);
    assert!(
        first
            .search_attributes
            .as_ref()
            .unwrap()
            .indexed_fields
            .contains_key("CustomerId")
    );
    client
        .signal_with_start_workflow_execution(ws::SignalWithStartWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_id: "noted-by-signal".into(),
            workflow_type: Some(WorkflowType {
                name: "collector".into(),
            }),
            task_queue: Some(TaskQueue {
                name: "anything".into(),
                ..Default::default()
            }),
            input: args(vec![serde_json::json!(""), serde_json::json!(5)]),
            signal_name: "word".into(),
            signal_input: args(vec![serde_json::json!("hello")]),
            memo: Some(memo),
            search_attributes: Some(SearchAttributes {
                indexed_fields: HashMap::from([(
                    "CustomerId".to_string(),
                    typed(serde_json::json!("c-43"), "Keyword"),
                )]),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let count = client
        .count_workflow_executions(ws::CountWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: "CustomerId = 'c-43'".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        count.count, 1,
        "signal-with-start sets attributes as a start does"
    );
    server.stop().await.shutdown().await;
}

/// Proves many clients at once over several connections, with the node crashing in the
/// middle: 60 workflows started concurrently and left waiting, the node killed, a new node and
/// server on the same store, then every one signalled and awaited over the new server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_and_a_node_crash_in_the_middle() {
    let (store, _dir) = store();
    let server = serve(store.clone(), None).await;
    let address = server.address;
    let ids: Vec<String> = (0..60).map(|i| format!("crowd-{i}")).collect();
    let starts = ids.iter().enumerate().map(|(i, id)| async move {
        // Six connections, ten workflows each.
        let mut client = WorkflowServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let _ = i;
        client
            .start_workflow_execution(start_request(id, &format!("{id}:"), 2))
            .await
            .unwrap();
        signal(&mut client, id, "one").await;
    });
    within("starts", futures::future::join_all(starts)).await;
    let node = server.stop().await;
    node.crash();

    let mut server = serve(store, None).await;
    let address = server.address;
    let finishes = ids.iter().map(|id| async move {
        let mut client = WorkflowServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        signal(&mut client, id, "two").await;
        result(&mut client, id).await
    });
    let results = within("results", futures::future::join_all(finishes)).await;
    for (id, result) in ids.iter().zip(results) {
        assert_eq!(result, serde_json::json!(format!("{id}:ONE TWO")));
    }
    let count = server
        .client
        .count_workflow_executions(ws::CountWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: "ExecutionStatus = 'Completed'".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 60);
    server.stop().await.shutdown().await;
}

/// Proves a node with a token refuses calls without it (as `UNAUTHENTICATED`) and serves
/// calls carrying it as Temporal's clients send an API key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_grpc_api() {
    let (store, _dir) = store();
    let mut server = serve(store, Some("s3cret")).await;
    let e = server
        .client
        .get_system_info(ws::GetSystemInfoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut request = Request::new(ws::GetSystemInfoRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        server
            .client
            .get_system_info(request)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let mut request = Request::new(ws::GetSystemInfoRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    server.client.get_system_info(request).await.unwrap();
    server.stop().await.shutdown().await;
}

/// Proves a signal acknowledged over gRPC is in the run's history whatever closes the run at
/// the same moment: three Temporal clients pour signals into runs as they are terminated, or
/// as they complete on their own (having heard 150 words), and every signal answered `Ok` is a
/// `WorkflowExecutionSignaled` event of the final history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_acknowledged_over_grpc_survive_a_racing_close() {
    let (store, _dir) = store();
    let server = serve(store, None).await;
    let mut checked = 0;
    for run in 0..6 {
        // Even runs are terminated; odd ones complete by themselves mid-stream.
        let terminated = run % 2 == 0;
        let id = format!("grpc-race-{run}");
        let mut client = server.client.clone();
        let limit = if terminated { 1_000_000 } else { 150 };
        client
            .start_workflow_execution(start_request(&id, "", limit))
            .await
            .unwrap();
        let senders = (0..3).map(|sender| {
            let (mut client, id) = (server.client.clone(), id.clone());
            async move {
                let mut acknowledged = Vec::new();
                for n in 0..300 {
                    let word = format!("w{sender}-{n}");
                    let sent = client
                        .signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
                            namespace: "default".into(),
                            workflow_execution: execution(&id),
                            signal_name: "word".into(),
                            input: args(vec![serde_json::json!(word)]),
                            ..Default::default()
                        })
                        .await;
                    match sent {
                        Ok(_) => acknowledged.push(word),
                        Err(e) if e.code() == Code::NotFound => break,
                        Err(_) => {}
                    }
                }
                acknowledged
            }
        });
        let terminate = async {
            if !terminated {
                return;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            client
                .terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
                    namespace: "default".into(),
                    workflow_execution: execution(&id),
                    reason: "enough".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        };
        let (sent, ()) = within("race", async {
            tokio::join!(futures::future::join_all(senders), terminate)
        })
        .await;
        let handle = server.node.client().handle::<String>(&id).unwrap();
        // The final history: once the run has closed.
        let outcome = within("closed", handle.result()).await;
        assert_eq!(outcome.is_ok(), !terminated, "{id}: {outcome:?}");
        let history = handle.history().await.unwrap();
        let recorded: std::collections::BTreeSet<String> = history
            .iter()
            .filter_map(|e| match &e.kind {
                cairn_types::EventKind::WorkflowExecutionSignaled { input, .. } => {
                    input.decode::<String>().ok()
                }
                _ => None,
            })
            .collect();
        for word in sent.concat() {
            assert!(
                recorded.contains(&word),
                "{id}: acknowledged signal {word} is not in the history"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no signal raced the terminations");
    server.stop().await;
}
