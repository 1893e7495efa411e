//! Tools the model can call, and running a step's calls (ARCHITECTURE.md §8): in
//! parallel, each with a timeout; an unknown tool, bad arguments, a failure,
//! a timeout or a panic all become error results, never a failed turn.

mod builtin;
pub mod ledger;
pub mod mcp;
mod toolset;

use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tracing::Instrument;

use serde_json::{Value, json};

pub use builtin::{CurrentTime, TestFail, TestPanic, TestSleep};
pub use toolset::{ChatToolset, Route};

use crate::llm::ToolSpec;

/// A tool's failure, reported to the model as an error result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// Something the model can call.
#[async_trait::async_trait]
pub trait Tool: Send + Sync + 'static {
    /// Its name, as the model sees it.
    fn name(&self) -> &'static str;
    /// What it does, for the model.
    fn description(&self) -> &'static str;
    /// JSON Schema of its arguments.
    fn parameters(&self) -> Value;
    /// Runs it.
    async fn call(&self, args: Value) -> Result<Value, ToolError>;
    /// True when running it twice does no harm (it has no side effect, or
    /// the same one): a call cut off by a crash is then run again. A tool
    /// with side effects says false, and such a call gets an error result
    /// instead ("may have run; not repeated").
    fn idempotent(&self) -> bool {
        true
    }
}

/// True for the names a chat's client tools may not take: the built-in
/// tools (test tools included) and the agent tools.
pub fn is_reserved(name: &str) -> bool {
    ToolRegistry::builtin(true).tools.contains_key(name) || crate::agents::NAMES.contains(&name)
}

/// The tools offered to every model call, by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<&'static str, Arc<dyn Tool>>,
    timeout: Option<Duration>,
}

/// A tool call to run (from the model's response).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The provider's call id.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments: an object, or the raw text when it was not valid JSON.
    pub args: Value,
}

/// The outcome of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The result (for errors, `{"error": "…"}`).
    pub result: Value,
    /// True when the call failed.
    pub is_error: bool,
}

impl Outcome {
    /// A successful result.
    pub fn ok(result: Value) -> Self {
        Self {
            result,
            is_error: false,
        }
    }

    /// An error result with a message for the model.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            result: json!({ "error": message.into() }),
            is_error: true,
        }
    }
}

impl ToolRegistry {
    /// The built-in tools; `with_test_tools` adds `test_sleep`, `test_fail`
    /// and `test_panic` (for tests and demos, never production).
    pub fn builtin(with_test_tools: bool) -> Self {
        let mut registry = Self {
            tools: BTreeMap::new(),
            timeout: Some(Duration::from_secs(60)),
        };
        registry.register(Arc::new(CurrentTime));
        if with_test_tools {
            registry.register(Arc::new(TestSleep));
            registry.register(Arc::new(TestFail));
            registry.register(Arc::new(TestPanic));
        }
        registry
    }

    /// Adds (or replaces) a tool.
    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.name(), tool);
    }

    /// Whether tool `name` may run twice (unknown tools are harmless: they
    /// only ever fail).
    pub fn idempotent(&self, name: &str) -> bool {
        self.tools.get(name).is_none_or(|tool| tool.idempotent())
    }

    /// True when the registry has tool `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// What the model is offered.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .values()
            .map(|tool| ToolSpec {
                name: tool.name().to_owned(),
                description: tool.description().to_owned(),
                parameters: tool.parameters(),
            })
            .collect()
    }

    /// Runs one call to completion, turning every failure into an error
    /// result. Dropping the future aborts the tool (interrupt, shutdown).
    pub async fn run(&self, call: &Call) -> Outcome {
        let Some(tool) = self.tools.get(call.name.as_str()).cloned() else {
            return Outcome::error(format!("unknown tool {:?}", call.name));
        };
        if !call.args.is_object() {
            return Outcome::error(format!(
                "arguments of {} are not a JSON object: {}",
                call.name, call.args
            ));
        }
        let args = call.args.clone();
        // Its own task, so a panic is caught here and not in the turn loop.
        let task = tokio::spawn(async move { tool.call(args).await }.in_current_span());
        let _abort = AbortOnDrop(task.abort_handle());
        let joined = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, task).await {
                Ok(joined) => joined,
                Err(_) => {
                    return Outcome::error(format!(
                        "{} timed out after {} s",
                        call.name,
                        limit.as_secs_f64()
                    ));
                }
            },
            None => task.await,
        };
        match joined {
            Ok(Ok(result)) => Outcome {
                result,
                is_error: false,
            },
            Ok(Err(err)) => Outcome::error(err.0),
            Err(join) if join.is_panic() => Outcome::error(format!("{} crashed", call.name)),
            Err(_) => Outcome::error(format!("{} was cancelled", call.name)),
        }
    }
}

/// Aborts a spawned tool task when its call is dropped (interrupt, shutdown).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: Value) -> Call {
        Call {
            id: "c1".into(),
            name: name.into(),
            args,
        }
    }

    #[tokio::test]
    async fn failures_become_error_results() {
        let tools = ToolRegistry::builtin(true).with_timeout(Duration::from_millis(100));
        let unknown = tools.run(&call("nope", json!({}))).await;
        assert!(
            unknown.is_error
                && unknown.result["error"]
                    .as_str()
                    .unwrap()
                    .contains("unknown tool")
        );
        let failed = tools
            .run(&call("test_fail", json!({"message": "boom"})))
            .await;
        assert_eq!(failed, Outcome::error("boom"));
        let panicked = tools.run(&call("test_panic", json!({}))).await;
        assert!(
            panicked.is_error
                && panicked.result["error"]
                    .as_str()
                    .unwrap()
                    .contains("crashed")
        );
        let slow = tools.run(&call("test_sleep", json!({"ms": 10_000}))).await;
        assert!(slow.is_error && slow.result["error"].as_str().unwrap().contains("timed out"));
        let bad_args = tools
            .run(&call("current_time", Value::String("{oops".into())))
            .await;
        assert!(bad_args.is_error);
        let ok = tools.run(&call("current_time", json!({}))).await;
        assert!(!ok.is_error && ok.result["utc"].is_string());
    }

    #[test]
    fn test_tools_are_offered_only_when_asked_for() {
        let names = |registry: ToolRegistry| {
            registry
                .specs()
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(ToolRegistry::builtin(false)), ["current_time"]);
        assert_eq!(
            names(ToolRegistry::builtin(true)),
            ["current_time", "test_fail", "test_panic", "test_sleep"]
        );
    }
}
