//! `@mock` directives: the script a test writes into its last user message to
//! demand exact behaviour. The schema is documented in the crate docs.

use serde::Deserialize;
use serde_json::Value;

use crate::plan::Malformed;

/// The marker that starts a directive; it must be followed by whitespace and
/// then one JSON object.
pub const DIRECTIVE_MARKER: &str = "@mock";

/// A parsed directive: the answers to the model calls of one user turn.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Step *i* answers the *i*-th model call after the user message.
    pub steps: Vec<Step>,
    /// Answer calls past the end with the last step instead of a plain reply.
    #[serde(default)]
    pub repeat_last: bool,
}

/// How to answer one model call. Every field is optional; `{}` is a plain
/// random reply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The exact reply text, streamed in whitespace-separated pieces.
    pub text: Option<String>,
    /// Reply with this many random words (only without `text`).
    pub tokens: Option<usize>,
    /// Reasoning emitted before the text.
    pub thinking: Option<String>,
    /// Tool calls made after the text, in parallel.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallSpec>,
    /// Fail with an HTTP error.
    pub error: Option<ErrorSpec>,
    /// Drop the connection after this many events, without a finish.
    pub cut_after: Option<usize>,
    /// Cut only the first this-many attempts (default: every attempt).
    pub cut_times: Option<u32>,
    /// Answer with a broken response.
    pub malformed: Option<Malformed>,
    /// Break only the first this-many attempts (default: every attempt).
    pub malformed_times: Option<u32>,
    /// Time to first token for this step, overriding the server's.
    pub ttft_ms: Option<u64>,
    /// Delay between events for this step, overriding the server's.
    pub token_delay_ms: Option<u64>,
    /// Report this many input tokens instead of the words of the request
    /// (so a chat looks close to its model's context limit).
    pub input_tokens: Option<u64>,
    /// Reply with a description of the request instead of text: a JSON
    /// object with the system prompt, the number of messages and whether a
    /// compaction summary was in the system prompt (see the crate docs).
    #[serde(default)]
    pub describe: bool,
    /// The answer to a title request about this conversation.
    pub title: Option<String>,
    /// How long a title request about this conversation takes.
    pub title_delay_ms: Option<u64>,
    /// Fail title requests about this conversation with this HTTP status.
    pub title_error: Option<u16>,
}

/// A tool call a step makes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallSpec {
    /// The tool's name (need not be one the request offers).
    pub name: String,
    /// The arguments; `{}` when absent.
    #[serde(default = "empty_object")]
    pub args: Value,
    /// A fixed call id; when absent the engine derives a deterministic one.
    pub id: Option<String>,
}

/// An HTTP error a step answers with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSpec {
    /// The status, 400..=599.
    pub status: u16,
    /// Seconds for `Retry-After` (default 1 for a 429, none otherwise).
    pub retry_after: Option<u64>,
    /// The error message (default: a generic one for the status).
    pub message: Option<String>,
    /// Fail only the first this-many attempts (default: every attempt).
    pub times: Option<u32>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Why a directive was rejected. The server answers such a request with a 400
/// carrying this message, so a typo in a test fails loudly.
#[derive(Debug, thiserror::Error)]
pub enum DirectiveError {
    /// The text after the marker does not start with a JSON value.
    #[error("the text after `@mock` is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The JSON value is not an object.
    #[error("a directive must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The object does not match the schema (unknown field, wrong type, …).
    #[error("the directive does not match the schema: {0}")]
    Schema(#[source] serde_json::Error),
    /// The object matches the schema but asks for something impossible.
    #[error("invalid directive: {0}")]
    Invalid(String),
}

impl Script {
    /// Finds and parses the directive in `text`: the first `@mock` followed
    /// by whitespace, then one JSON value (anything after it is ignored).
    /// `None` when the text has no directive.
    pub fn find(text: &str) -> Option<Result<Self, DirectiveError>> {
        let json = directive_json(text)?;
        let value = match serde_json::Deserializer::from_str(json)
            .into_iter::<Value>()
            .next()
        {
            Some(Ok(value)) => value,
            Some(Err(error)) => return Some(Err(DirectiveError::NotJson(error))),
            None => {
                return Some(Err(DirectiveError::Invalid(
                    "`@mock` must be followed by a JSON object".into(),
                )));
            }
        };
        Some(Self::from_value(value))
    }

    /// Builds a script from a directive's JSON: either `{"steps": […], …}`
    /// or a single step object.
    pub fn from_value(value: Value) -> Result<Self, DirectiveError> {
        let Value::Object(object) = &value else {
            return Err(DirectiveError::NotAnObject(json_type(&value)));
        };
        let script = if object.contains_key("steps") {
            serde_json::from_value::<Self>(value).map_err(DirectiveError::Schema)?
        } else {
            Self {
                steps: vec![serde_json::from_value::<Step>(value).map_err(DirectiveError::Schema)?],
                repeat_last: false,
            }
        };
        script.validate()?;
        Ok(script)
    }

    /// The step answering model call `index` of the turn; `None` past the
    /// end unless `repeat_last`.
    pub fn step(&self, index: usize) -> Option<&Step> {
        match self.steps.get(index) {
            Some(step) => Some(step),
            None if self.repeat_last => self.steps.last(),
            None => None,
        }
    }

    fn validate(&self) -> Result<(), DirectiveError> {
        if self.steps.is_empty() {
            return Err(DirectiveError::Invalid("`steps` must not be empty".into()));
        }
        for (index, step) in self.steps.iter().enumerate() {
            step.validate()
                .map_err(|reason| DirectiveError::Invalid(format!("step {index}: {reason}")))?;
        }
        Ok(())
    }
}

impl Step {
    /// True when some attempts of this step fail (error, malformed or cut),
    /// so its attempts must be counted.
    pub fn can_fail(&self) -> bool {
        self.error.is_some() || self.malformed.is_some() || self.cut_after.is_some()
    }

    fn validate(&self) -> Result<(), String> {
        if self.text.is_some() && self.tokens.is_some() {
            return Err("give `text` or `tokens`, not both".into());
        }
        if self.describe && (self.text.is_some() || self.tokens.is_some()) {
            return Err("`describe` replaces the text: give no `text` or `tokens`".into());
        }
        if let Some(status) = self.title_error
            && !(400..=599).contains(&status)
        {
            return Err(format!("title_error status {status} is not in 400..=599"));
        }
        if let Some(error) = &self.error
            && !(400..=599).contains(&error.status)
        {
            return Err(format!("error status {} is not in 400..=599", error.status));
        }
        if self.cut_times.is_some() && self.cut_after.is_none() {
            return Err("`cut_times` needs `cut_after`".into());
        }
        if self.malformed_times.is_some() && self.malformed.is_none() {
            return Err("`malformed_times` needs `malformed`".into());
        }
        if self.tool_calls.iter().any(|call| call.name.is_empty()) {
            return Err("a tool call needs a non-empty `name`".into());
        }
        Ok(())
    }
}

/// The text right after the first `@mock` that is followed by whitespace.
fn directive_json(text: &str) -> Option<&str> {
    let mut searched = 0;
    while let Some(found) = text[searched..].find(DIRECTIVE_MARKER) {
        let after = searched + found + DIRECTIVE_MARKER.len();
        if text[after..].starts_with(char::is_whitespace) {
            return Some(&text[after..]);
        }
        searched = after;
    }
    None
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Script, DirectiveError> {
        Script::find(text).unwrap_or_else(|| panic!("no directive in {text:?}"))
    }

    #[test]
    fn text_without_marker_has_no_directive() {
        assert!(Script::find("just a question").is_none());
        assert!(Script::find("@mockery {}").is_none());
    }

    #[test]
    fn single_step_object_is_a_one_step_script() {
        let script = parse(r#"please @mock {"text": "Hello there"} and ignore this"#)
            .expect("valid directive");
        assert_eq!(script.steps.len(), 1);
        assert_eq!(script.steps[0].text.as_deref(), Some("Hello there"));
        assert!(!script.repeat_last);
    }

    #[test]
    fn text_after_the_json_value_is_ignored_even_if_it_is_json() {
        let script = parse("@mock {\"tokens\": 3} {\"tokens\": 9} trailing").expect("valid");
        assert_eq!(script.steps[0].tokens, Some(3));
    }

    #[test]
    fn marker_may_be_followed_by_a_newline() {
        let script = parse("@mock\n{\"text\": \"x\"}").expect("valid");
        assert_eq!(script.steps[0].text.as_deref(), Some("x"));
    }

    #[test]
    fn multi_step_script_with_tool_calls() {
        let script = parse(
            r#"@mock {"steps": [
                {"tool_calls": [{"name": "now", "args": {"tz": "UTC"}}, {"name": "echo", "id": "call_fixed"}]},
                {"text": "done"}
            ], "repeat_last": true}"#,
        )
        .expect("valid");
        assert_eq!(script.steps.len(), 2);
        let calls = &script.steps[0].tool_calls;
        assert_eq!(calls[0].args, json!({"tz": "UTC"}));
        assert_eq!(calls[1].args, json!({}));
        assert_eq!(calls[1].id.as_deref(), Some("call_fixed"));
        assert!(script.repeat_last);
    }

    #[test]
    fn failure_fields_parse() {
        let script = parse(
            r#"@mock {"error": {"status": 429, "retry_after": 0, "times": 2}, "cut_after": 3, "cut_times": 1, "malformed": "sse"}"#,
        )
        .expect("valid");
        let step = &script.steps[0];
        assert_eq!(
            step.error,
            Some(ErrorSpec {
                status: 429,
                retry_after: Some(0),
                message: None,
                times: Some(2)
            })
        );
        assert_eq!(step.cut_after, Some(3));
        assert_eq!(step.malformed, Some(Malformed::Sse));
        assert!(step.can_fail());
    }

    #[test]
    fn invalid_directives_are_errors_not_ignored() {
        for text in [
            "@mock {\"txet\": \"typo\"}",
            "@mock [1, 2]",
            "@mock {not json",
            "@mock ",
            "@mock {\"steps\": []}",
            "@mock {\"text\": \"a\", \"tokens\": 2}",
            "@mock {\"error\": {\"status\": 200}}",
            "@mock {\"cut_times\": 1}",
            "@mock {\"malformed\": \"xml\"}",
            "@mock {\"describe\": true, \"text\": \"a\"}",
            "@mock {\"title_error\": 200}",
        ] {
            assert!(parse(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn steps_past_the_end_repeat_only_with_repeat_last() {
        let mut script =
            parse(r#"@mock {"steps": [{"text": "a"}, {"text": "b"}]}"#).expect("valid");
        assert_eq!(script.step(1).and_then(|s| s.text.as_deref()), Some("b"));
        assert!(script.step(2).is_none());
        script.repeat_last = true;
        assert_eq!(script.step(5).and_then(|s| s.text.as_deref()), Some("b"));
    }
}
