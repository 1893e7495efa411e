//! What operators see (ARCHITECTURE.md §11): every metric §11 names is on `/metrics`
//! from the start, and the diagnosis endpoints answer "why is this chat not
//! running?" and "how loaded is each replica?".

mod common;

use std::time::Duration;

use chatd_shared::{
    api::{ChatDiagnosis, CreateChat},
    client::Client,
    ids::ChatId,
    status::ChatStatus,
    testing::{eventually, metric_present, metric_sum, metric_sum_where},
};
use common::{
    WAIT,
    app::{TestApp, say},
};
use serde_json::json;

/// Every instrument ARCHITECTURE.md §11 asks for, by its name on `/metrics`
/// (counters carry Prometheus' `_total`).
const DESIGN_METRICS: &[&str] = &[
    "chatd_running_chats",
    "chatd_max_running_chats",
    "chatd_pending_chats",
    "chatd_acquires_total",
    "chatd_acquire_batch_size",
    "chatd_turn_duration_seconds",
    "chatd_step_duration_seconds",
    "chatd_time_to_first_token_seconds",
    "chatd_queue_wait_seconds",
    "chatd_provider_requests_total",
    "chatd_provider_retries_total",
    "chatd_tool_calls_total",
    "chatd_recoveries_total",
    "chatd_replica_deaths_detected_total",
    "chatd_death_recovery_seconds",
    "chatd_lease_renew_seconds",
    "chatd_lease_renew_failures_total",
    "chatd_hand_backs_total",
    "chatd_pubsub_publishes_total",
    "chatd_pubsub_publish_batches_total",
    "chatd_pubsub_publish_bytes_total",
    "chatd_pubsub_received_total",
    "chatd_pubsub_reconnects_total",
    "chatd_pubsub_connected",
    "chatd_pubsub_resyncs_total",
    "chatd_pubsub_latency_seconds",
    "chatd_relay_peers_connected",
    "chatd_relay_subscriptions",
    "chatd_relay_frames_total",
    "chatd_relay_parts_total",
    "chatd_relay_bytes_total",
    "chatd_relay_overflows_total",
    "chatd_relay_reconnects_total",
    "chatd_relay_latency_seconds",
    "chatd_stream_subscribers",
    "chatd_stream_overflows_total",
    "chatd_db_pool_in_use",
    "chatd_db_pool_idle",
    "chatd_db_pool_waiting",
    "chatd_db_pool_max_size",
    "chatd_db_pool_wait_seconds",
    "chatd_http_requests_total",
    "chatd_http_request_duration_seconds",
];

/// The metric families of a `/metrics` text (from its `# TYPE` lines).
fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_design_names_is_on_metrics_from_the_start_and_counts_a_turn() {
    let app = TestApp::start(1, |_| {}).await;
    let text = app.metrics(0).await;
    let exported = families(&text);
    for name in DESIGN_METRICS {
        let family = name.trim_end_matches("_total");
        assert!(
            exported.iter().any(|f| f == family) || exported.iter().any(|f| f == name),
            "{name} is not on /metrics before any turn; families: {exported:#?}"
        );
        let series = if text.contains(&format!("# TYPE {family} histogram")) {
            format!("{family}_count")
        } else {
            (*name).to_owned()
        };
        assert!(metric_present(&text, &series), "{series} has no sample yet");
    }
    // Histograms nothing was recorded in yet are there, empty.
    assert!(metric_present(&text, "chatd_death_recovery_seconds_count"));
    assert_eq!(metric_sum(&text, "chatd_death_recovery_seconds_count"), 0.0);

    let admin = app.admin(0);
    let chat = admin
        .create_chat(
            &CreateChat {
                text: Some(say(json!({"steps": [
                    {"tool_calls": [{"name": "current_time"}]},
                    {"text": "done"}
                ]}))),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("create")
        .body;
    wait_idle(&admin, chat.id).await;
    let text = app.metrics(0).await;
    for (name, labels, at_least) in [
        ("chatd_acquires_total", &[][..], 1.0),
        ("chatd_queue_wait_seconds_count", &[], 1.0),
        ("chatd_turn_duration_seconds_count", &[], 1.0),
        ("chatd_step_duration_seconds_count", &[], 2.0),
        ("chatd_db_pool_wait_seconds_count", &["outcome=\"ok\""], 1.0),
        (
            "chatd_tool_calls_total",
            &["outcome=\"ok\"", "tool=\"current_time\""],
            1.0,
        ),
        (
            "chatd_provider_requests_total",
            &["outcome=\"ok\"", "provider=\"mock\""],
            2.0,
        ),
    ] {
        let value = metric_sum_where(&text, name, labels);
        assert!(
            value >= at_least,
            "{name}{labels:?} = {value}, expected ≥ {at_least}"
        );
    }
    assert_eq!(metric_sum(&text, "chatd_db_pool_max_size"), 8.0);
    app.shutdown().await;
}

/// Waits until chat `id` is idle again.
async fn wait_idle(client: &Client, id: ChatId) {
    eventually("the chat to finish its turn", WAIT, || async {
        let chat = client.get_chat(id).await.expect("chat");
        matches!(chat.status, ChatStatus::Waiting | ChatStatus::Error).then_some(())
    })
    .await;
}

/// Waits until the diagnosis of `id` satisfies `done`; returns it.
async fn diagnosis_until(
    client: &Client,
    id: ChatId,
    what: &str,
    done: impl Fn(&ChatDiagnosis) -> bool,
) -> ChatDiagnosis {
    eventually(what, WAIT, || async {
        let diagnosis = client.chat_diagnosis(id).await.expect("diagnosis");
        done(&diagnosis).then_some(diagnosis)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_chat_reports_its_place_in_line_and_replicas_their_free_slots() {
    // A replica that runs nothing: every chat stays pending, oldest first.
    let app = TestApp::start(1, |config| config.runtime.max_running_chats = 0).await;
    let admin = app.admin(0);
    let mut chats = Vec::new();
    for _ in 0..3 {
        let chat = admin
            .create_chat(
                &CreateChat {
                    text: Some("hello".into()),
                    ..Default::default()
                },
                None,
            )
            .await
            .expect("create")
            .body;
        chats.push(chat.id);
    }
    let third = admin.chat_diagnosis(chats[2]).await.expect("diagnosis");
    assert_eq!(third.status, ChatStatus::Pending);
    let queue = third.queue.expect("a pending chat has a place in line");
    assert_eq!((queue.position, queue.ahead, queue.pending), (3, 2, 3));
    assert!(third.worker.is_none());
    let first = admin.chat_diagnosis(chats[0]).await.expect("diagnosis");
    assert_eq!(first.queue.map(|q| q.position), Some(1));
    assert_eq!((first.step_retries, first.queued_messages), (0, 0));

    let replicas = admin.list_replicas().await.expect("replicas").replicas;
    let [replica] = &replicas[..] else {
        panic!("one replica: {replicas:#?}")
    };
    assert_eq!(replica.max_running_chats, Some(0));
    assert_eq!((replica.running_chats, replica.free_slots), (0, Some(0)));
    assert!(!replica.lease_expired && !replica.draining);
    assert_eq!(replica.version, env!("CARGO_PKG_VERSION"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_whose_worker_died_reports_the_expired_lease_until_it_is_recovered() {
    // Replica 0 runs the chat. Replica 1 answers, runs nothing, and judges
    // no death: not by lock (its session is "too young" for an hour) nor,
    // for half a minute, by lease (its heartbeat). So the dead worker's
    // chat stays as it was left until replica 2 arrives and recovers it.
    let mut app = TestApp::start_each(2, |index, config| {
        if index == 1 {
            config.runtime.max_running_chats = 0;
            config.runtime.lock_judge_after = Duration::from_secs(3600);
            config.runtime.heartbeat_interval = Duration::from_secs(30);
            config.runtime.lease_ttl = Duration::from_secs(60);
        }
    })
    .await;
    let admin = app.admin(1);
    let chat = admin
        .create_chat(
            &CreateChat {
                text: Some(say(
                    json!({"steps": [{"tokens": 2000, "token_delay_ms": 20}]}),
                )),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("create")
        .body;
    let running = diagnosis_until(&admin, chat.id, "the chat running", |d| {
        d.status == ChatStatus::Running
    })
    .await;
    let dead = running.worker.expect("a running chat has a worker");
    assert!(!dead.lease_expired && dead.registered, "{dead:#?}");
    assert!(dead.lease_age_seconds.is_some_and(|age| age < 5.0));
    assert!(running.queue.is_none());
    // The run registers just after the claim that shows it running commits.
    eventually("replica 0 to run it", WAIT, || async {
        app.replicas[0]
            .running()
            .iter()
            .any(|(id, _)| *id == chat.id)
            .then_some(())
    })
    .await;

    app.replicas.remove(0).kill();
    let stuck = diagnosis_until(&admin, chat.id, "the dead worker's lease expired", |d| {
        d.worker.as_ref().is_some_and(|w| w.lease_expired)
    })
    .await;
    assert_eq!(stuck.status, ChatStatus::Running);
    assert_eq!(stuck.generation, running.generation);
    assert_eq!(
        stuck.worker.as_ref().map(|w| w.replica_id),
        Some(dead.replica_id)
    );
    let replicas = admin.list_replicas().await.expect("replicas").replicas;
    let listed = replicas
        .iter()
        .find(|r| r.id == dead.replica_id)
        .expect("the dead replica's row stays until recovery");
    assert!(listed.lease_expired && listed.free_slots == Some(0));
    assert_eq!(listed.running_chats, 1);

    app.add(|_| {}).await;
    let recovered = diagnosis_until(&admin, chat.id, "the chat recovered elsewhere", |d| {
        d.generation > running.generation
            && d.worker
                .as_ref()
                .is_none_or(|w| w.replica_id != dead.replica_id)
    })
    .await;
    assert!(recovered.worker.as_ref().is_none_or(|w| !w.lease_expired));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_step_reports_its_retries_until_the_step_is_saved() {
    let app = TestApp::start(1, |_| {}).await;
    let admin = app.admin(0);
    let chat = admin
        .create_chat(
            &CreateChat {
                text: Some(say(json!({"steps": [
                    {"error": {"status": 429, "retry_after": 3, "times": 1}, "text": "after the wait"}
                ]}))),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("create")
        .body;
    let retrying = diagnosis_until(&admin, chat.id, "the step retried once", |d| {
        d.step_retries == 1
    })
    .await;
    assert_eq!(retrying.status, ChatStatus::Running);
    wait_idle(&admin, chat.id).await;
    let done = admin.chat_diagnosis(chat.id).await.expect("diagnosis");
    assert_eq!((done.status, done.step_retries), (ChatStatus::Waiting, 0));
    assert_eq!(done.last_error, None);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnosis_is_for_admins_and_an_unknown_or_malformed_chat_is_a_json_error() {
    let app = TestApp::start(1, |_| {}).await;
    let (_, token) = app.user("member").await;
    let member = app.client(0, &token);
    let own = member
        .create_chat(&CreateChat::default(), None)
        .await
        .expect("create")
        .body;
    for refused in [
        member.chat_diagnosis(own.id).await.map(|_| ()),
        member.list_replicas().await.map(|_| ()),
    ] {
        let err = refused.expect_err("members may not");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");
    }
    let err = app
        .admin(0)
        .chat_diagnosis(ChatId::new_v7())
        .await
        .expect_err("no such chat");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err}");
    assert_eq!(err.code(), Some("not_found"));
    let idle = app
        .admin(0)
        .chat_diagnosis(own.id)
        .await
        .expect("admins see every chat");
    assert_eq!(idle.status, ChatStatus::Waiting);
    assert!(idle.queue.is_none() && idle.worker.is_none());
    // ARCHITECTURE.md §9: a malformed id is a 400, no token a 401, each as the JSON error.
    let http = reqwest::Client::new();
    for (token, path, status, code) in [
        (
            Some(app.admin_token.as_str()),
            "admin/chats/not-a-chat/diagnosis",
            400,
            "invalid_path",
        ),
        (None, "admin/replicas", 401, "unauthorized"),
    ] {
        let mut request = http.get(format!("{}/api/v1/{path}", app.url(0)));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: serde_json::Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    app.shutdown().await;
}
