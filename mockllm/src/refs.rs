//! References in a directive's tool-call arguments to the results of
//! earlier calls, so a script can pass on what a tool returned (the id of a
//! subagent it started, say) without knowing it in advance.
//!
//! A string argument (at any depth) of the form `$ref:CALL_ID/POINTER` is
//! replaced by the value at the JSON Pointer `/POINTER` in the result of
//! call `CALL_ID` (the result as the request carries it, read as JSON, or
//! as a string when it is not JSON). `$ref:CALL_ID` alone is the whole
//! result. A reference to a result the conversation does not have is an
//! error, so a typo fails loudly.

use serde_json::Value;

use crate::conversation::Conversation;

/// The prefix of a reference.
pub const REF_PREFIX: &str = "$ref:";

/// `args` with every reference replaced by what it names.
pub fn resolve(args: &Value, conversation: &Conversation) -> Result<Value, String> {
    match args {
        Value::String(text) => match text.strip_prefix(REF_PREFIX) {
            Some(reference) => lookup(reference, conversation),
            None => Ok(args.clone()),
        },
        Value::Array(items) => items
            .iter()
            .map(|item| resolve(item, conversation))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| Ok((key.clone(), resolve(value, conversation)?)))
            .collect::<Result<_, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

fn lookup(reference: &str, conversation: &Conversation) -> Result<Value, String> {
    let (call_id, pointer) = match reference.find('/') {
        Some(at) => reference.split_at(at),
        None => (reference, ""),
    };
    let content = conversation
        .messages
        .iter()
        .flat_map(|message| &message.tool_results)
        .rfind(|result| result.call_id == call_id)
        .map(|result| result.content.as_str())
        .ok_or_else(|| {
            format!("{REF_PREFIX}{reference}: no result of call {call_id:?} in the conversation")
        })?;
    let result: Value =
        serde_json::from_str(content).unwrap_or_else(|_| Value::String(content.to_owned()));
    result.pointer(pointer).cloned().ok_or_else(|| {
        format!("{REF_PREFIX}{reference}: the result of {call_id:?} has nothing at {pointer:?}")
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::conversation::Message;

    #[test]
    fn references_become_the_values_they_name() {
        let mut conversation = Conversation::default();
        conversation.messages.push(Message::user("go"));
        conversation.messages.push(Message::tool_result(
            "call_a",
            r#"{"agent_id": "A1", "n": 2}"#,
        ));
        conversation
            .messages
            .push(Message::tool_result("call_b", "plain text"));
        let args = json!({
            "ids": ["$ref:call_a/agent_id", "$ref:call_b"],
            "n": "$ref:call_a/n",
            "keep": "text",
        });
        assert_eq!(
            resolve(&args, &conversation).unwrap(),
            json!({"ids": ["A1", "plain text"], "n": 2, "keep": "text"})
        );
        assert!(resolve(&json!("$ref:call_x/agent_id"), &conversation).is_err());
        assert!(resolve(&json!("$ref:call_a/missing"), &conversation).is_err());
    }
}
