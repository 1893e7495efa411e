//! The built-in tools.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Tool, ToolError};

/// The current time in UTC.
pub struct CurrentTime;

#[async_trait::async_trait]
impl Tool for CurrentTime {
    fn name(&self) -> &'static str {
        "current_time"
    }

    fn description(&self) -> &'static str {
        "Returns the current date and time in UTC (RFC 3339) and as a Unix timestamp."
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    }

    async fn call(&self, _args: Value) -> Result<Value, ToolError> {
        let now = chrono::Utc::now();
        Ok(
            json!({"utc": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "unix": now.timestamp()}),
        )
    }
}

/// Test tool: sleeps `ms` milliseconds, then answers.
pub struct TestSleep;

#[async_trait::async_trait]
impl Tool for TestSleep {
    fn name(&self) -> &'static str {
        "test_sleep"
    }

    fn description(&self) -> &'static str {
        "Test tool: waits the given number of milliseconds, then returns."
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}, "required": ["ms"]})
    }

    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let ms = args["ms"]
            .as_u64()
            .ok_or_else(|| ToolError("ms must be a non-negative integer".into()))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(json!({"slept_ms": ms}))
    }
}

/// Test tool: always fails with `message`.
pub struct TestFail;

#[async_trait::async_trait]
impl Tool for TestFail {
    fn name(&self) -> &'static str {
        "test_fail"
    }

    fn description(&self) -> &'static str {
        "Test tool: always fails with the given message."
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"message": {"type": "string"}}})
    }

    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        Err(ToolError(
            args["message"]
                .as_str()
                .unwrap_or("test_fail failed")
                .to_owned(),
        ))
    }
}

/// Test tool: panics.
pub struct TestPanic;

#[async_trait::async_trait]
impl Tool for TestPanic {
    fn name(&self) -> &'static str {
        "test_panic"
    }

    fn description(&self) -> &'static str {
        "Test tool: panics (to prove a crashing tool cannot take the turn down)."
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }

    async fn call(&self, _args: Value) -> Result<Value, ToolError> {
        panic!("test_panic was called");
    }
}
