//! The tool-call ledger (ARCHITECTURE.md §17): a call is recorded before it runs, so
//! a turn recovered after its worker died never runs a side effect twice
//! unknowingly. An idempotent tool runs again; one that is not gets the
//! documented error result ("may have run; not repeated") and the model
//! decides.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_replica::{
    tools::{Tool, ToolError, ToolRegistry},
    turn::TurnConfig,
};
use chatd_shared::{
    parts::Part,
    status::{ChatStatus, MessageRole},
    testing::{TestDb, eventually},
};
use common::*;
use serde_json::{Value, json};

/// A tool that counts its runs and, on its first, holds until the test
/// kills its replica. Idempotent or not, as asked.
struct Effect {
    name: &'static str,
    idempotent: bool,
    runs: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Tool for Effect {
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        "Does something in the world."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }
    async fn call(&self, _args: Value) -> Result<Value, ToolError> {
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            // The first run never ends: its replica dies under it.
            std::future::pending::<()>().await;
        }
        Ok(json!({"done": true}))
    }
}

struct Crash {
    db: TestDb,
    mock: MockLlm,
    runs: Arc<AtomicUsize>,
    history: Vec<chatd_shared::db::messages::Message>,
}

/// A chat calls `tool` (idempotent or not) on one replica, which dies while
/// the call runs; a second replica takes the turn over and finishes it.
async fn crash_during(tool: &'static str, idempotent: bool) -> Crash {
    let db = TestDb::new().await;
    let mock = MockLlm::start(Behaviour::default()).await.unwrap();
    let model = mock_model(&db, &mock, Wire::OpenAi, "key").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let tools = || {
        let mut tools = ToolRegistry::builtin(false);
        tools.register(Arc::new(Effect {
            name: tool,
            idempotent,
            runs: runs.clone(),
        }));
        tools
    };
    let config = TurnConfig::default;
    let first = TestReplica::start(&db, turn_runner(db.pool(), tools(), config()), |_| {}).await;
    let owner = user(&db).await;
    let script = json!({"steps": [
        {"text": "On it.", "tool_calls": [{"name": tool, "id": "call_effect"}]},
        {"text": "Finished."}
    ]});
    let id = start_chat(&db, &first.pubsub, owner, model, &format!("@mock {script}")).await;
    eventually("the tool to run", WAIT, || {
        let started = runs.load(Ordering::SeqCst) == 1;
        async move { started.then_some(()) }
    })
    .await;
    // Its call and the assistant message asking for it are on record.
    let recorded = messages(&db, id).await;
    assert_eq!(
        recorded.iter().map(|m| m.role).collect::<Vec<_>>(),
        [MessageRole::User, MessageRole::Assistant]
    );

    let second = TestReplica::start(&db, turn_runner(db.pool(), tools(), config()), |_| {}).await;
    first.crash();
    let done = wait_idle(&db, id).await;
    assert_eq!(done.status, ChatStatus::Waiting);
    let history = messages(&db, id).await;
    second.shutdown().await;
    Crash {
        db,
        mock,
        runs,
        history,
    }
}

fn tool_result(history: &[chatd_shared::db::messages::Message]) -> Vec<(Value, bool)> {
    history
        .iter()
        .filter(|m| m.role == MessageRole::Tool)
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            Part::ToolResult {
                result, is_error, ..
            } => Some((result.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_turn_does_not_rerun_a_non_idempotent_call_and_tells_the_model() {
    let crash = crash_during("send_email", false).await;
    assert_eq!(
        crash.runs.load(Ordering::SeqCst),
        1,
        "the side effect ran once, never again"
    );
    let results = tool_result(&crash.history);
    assert_eq!(results.len(), 1, "{:#?}", crash.history);
    let (result, is_error) = &results[0];
    assert!(is_error);
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("may have run; not repeated"), "{error}");
    // The model was told, and decided (it answered after the error).
    // The last turn request (streamed; a title request is not).
    let asked = crash.mock.requests();
    let last = asked
        .iter()
        .rev()
        .find(|request| {
            request
                .body
                .as_ref()
                .is_some_and(|body| body["stream"] == true)
        })
        .unwrap();
    let last = serde_json::to_string(&last.body).unwrap();
    assert!(last.contains("may have run; not repeated"), "{last}");
    let roles: Vec<_> = crash.history.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
            MessageRole::Assistant
        ],
        "the step is stored once, its call answered once"
    );
    let client = crash.db.pool().get().await.unwrap();
    let open: i64 = client
        .query_one(
            "SELECT count(*) FROM tool_calls WHERE finished_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "the ledger row is finished with its result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_turn_runs_an_idempotent_call_again() {
    let crash = crash_during("read_weather", true).await;
    assert_eq!(
        crash.runs.load(Ordering::SeqCst),
        2,
        "run again after the crash"
    );
    assert_eq!(
        tool_result(&crash.history),
        [(json!({"done": true}), false)]
    );
}
