//! Schedules through the gRPC frontend, as Temporal's SDKs call them, with hostile input: what
//! Cairn cannot honour is refused by name, a bad update leaves the schedule as it was, and a
//! remote workflow type's runs go to its task queue's workers.

use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::collections::HashMap;
use temporalio_protos::temporal::api::common::v1::{Payload, Payloads, WorkflowType};
use temporalio_protos::temporal::api::schedule::v1 as s;
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflow::v1::NewWorkflowExecutionInfo;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use temporalio_protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::Code;

fn schedule(cron: &str, interval_s: i64) -> s::Schedule {
    s::Schedule {
        spec: Some(s::ScheduleSpec {
            cron_string: if cron.is_empty() {
                vec![]
            } else {
                vec![cron.to_string()]
            },
            interval: if interval_s > 0 {
                vec![s::IntervalSpec {
                    interval: Some(prost_wkt_types::Duration {
                        seconds: interval_s,
                        nanos: 0,
                    }),
                    phase: None,
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }),
        action: Some(s::ScheduleAction {
            action: Some(s::schedule_action::Action::StartWorkflow(
                NewWorkflowExecutionInfo {
                    workflow_id: "report".into(),
                    workflow_type: Some(WorkflowType {
                        name: "DailyReportWorkflow".into(),
                    }),
                    task_queue: Some(TaskQueue {
                        name: "reports".into(),
                        ..Default::default()
                    }),
                    input: Some(Payloads {
                        payloads: vec![Payload {
                            metadata: HashMap::from([(
                                "encoding".to_string(),
                                b"json/plain".to_vec(),
                            )]),
                            data: b"\"daily\"".to_vec(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_refuse_what_they_cannot_honour_and_bad_updates_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let node = cairn::Node::builder()
        .config(cairn::NodeConfig {
            node_id: "sched".into(),
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
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut client = WorkflowServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let create = |id: &str, schedule: s::Schedule| ws::CreateScheduleRequest {
        namespace: "default".into(),
        schedule_id: id.into(),
        schedule: Some(schedule),
        ..Default::default()
    };
    client
        .create_schedule(create("daily", schedule("0 9 * * *", 0)))
        .await
        .unwrap();
    let again = client
        .create_schedule(create("daily", schedule("0 9 * * *", 0)))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    let bad_cron = client
        .create_schedule(create("bad", schedule("99 * * *", 0)))
        .await
        .unwrap_err();
    assert_eq!(bad_cron.code(), Code::InvalidArgument, "{bad_cron:?}");
    let mut calendar = schedule("", 0);
    calendar.spec.as_mut().unwrap().structured_calendar = vec![Default::default()];
    let refused = client
        .create_schedule(create("calendar", calendar))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    assert!(refused.message().contains("calendar"), "{refused:?}");
    let empty = client
        .create_schedule(create("empty", schedule("", 0)))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let huge = client
        .create_schedule(create("huge", schedule("", i64::MAX)))
        .await;
    assert!(huge.is_ok() || huge.unwrap_err().code() == Code::InvalidArgument);

    // A bad update is refused before anything changes.
    let update = client
        .update_schedule(ws::UpdateScheduleRequest {
            namespace: "default".into(),
            schedule_id: "daily".into(),
            schedule: Some(schedule("not a cron", 0)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(update.code(), Code::InvalidArgument, "{update:?}");
    let described = client
        .describe_schedule(ws::DescribeScheduleRequest {
            namespace: "default".into(),
            schedule_id: "daily".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described.schedule.unwrap().spec.unwrap().cron_string,
        ["0 9 * * *"],
        "the schedule is as it was"
    );
    let info = described.info.unwrap();
    assert!(!info.future_action_times.is_empty());
    assert!(
        info.future_action_times
            .iter()
            .all(|t| t.seconds % 86_400 == 9 * 3600)
    );

    // Paging lists every schedule once.
    for i in 0..5 {
        client
            .create_schedule(create(&format!("s{i}"), schedule("", 3600)))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = Vec::new();
    loop {
        let page = client
            .list_schedules(ws::ListSchedulesRequest {
                namespace: "default".into(),
                maximum_page_size: 2,
                next_page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.schedules.len() <= 2);
        seen.extend(page.schedules.into_iter().map(|e| e.schedule_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = ["daily", "s0", "s1", "s2", "s3", "s4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if seen.contains(&"huge".to_string()) {
        expected.push("huge".into());
    }
    expected.sort();
    assert_eq!(seen, expected);
    let gone = client
        .delete_schedule(ws::DeleteScheduleRequest {
            namespace: "default".into(),
            schedule_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    node.shutdown().await;
}
