//! What the tool-call ledger means to a run that takes over a turn (after a
//! crash, or when a wait ended): the calls of the last step without a
//! result, and what each gets. The rows are in
//! [`chatd_shared::db::tool_calls`].

use chatd_shared::{db::messages::Message, parts::Part, status::MessageRole};

use super::Call;

/// The error result of a call that may have run on a replica that stopped
/// before its result was stored, and must not run twice.
pub fn may_have_run(tool: &str) -> String {
    format!(
        "{tool} may have run; not repeated: the replica running it stopped before its result \
         was stored, and {tool} is not safe to run twice. Check its effect before calling it again."
    )
}

/// The error result of a client call whose deadline passed.
pub const CLIENT_DEADLINE: &str = "the client sent no result before the deadline";

/// The calls of the last step in `history` (id order) that have no result:
/// the step's assistant message was stored, and the run that made it ended
/// (it waits, or it crashed) before every result was. Empty when the
/// history ends otherwise (a user message, a reply without calls, results
/// for every call).
pub fn unresolved(history: &[Message]) -> Vec<Call> {
    let Some(last) = history
        .iter()
        .rposition(|message| message.role != MessageRole::Tool)
    else {
        return Vec::new();
    };
    if history[last].role != MessageRole::Assistant {
        return Vec::new();
    }
    let answered: Vec<&str> = history[last + 1..]
        .iter()
        .flat_map(|message| &message.content)
        .filter_map(|part| match part {
            Part::ToolResult { tool_call_id, .. } => Some(tool_call_id.as_str()),
            _ => None,
        })
        .collect();
    history[last]
        .content
        .iter()
        .filter_map(|part| match part {
            Part::ToolCall { id, name, args } if !answered.contains(&id.as_str()) => Some(Call {
                id: id.clone(),
                name: name.clone(),
                args: args.clone(),
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chatd_shared::ids::ChatId;
    use serde_json::json;

    use super::*;

    fn message(id: i64, role: MessageRole, content: Vec<Part>) -> Message {
        chatd_shared::testing::stored_message(ChatId::new_v7(), id, role, content)
    }

    fn call(id: &str) -> Part {
        Part::ToolCall {
            id: id.into(),
            name: "t".into(),
            args: json!({}),
        }
    }

    fn result(id: &str) -> Part {
        Part::ToolResult {
            tool_call_id: id.into(),
            name: "t".into(),
            result: json!(1),
            is_error: false,
        }
    }

    #[test]
    fn only_calls_of_the_last_step_without_results_are_unresolved() {
        let user = message(1, MessageRole::User, vec![Part::text("hi")]);
        let asked = message(
            2,
            MessageRole::Assistant,
            vec![call("a"), call("b"), call("c")],
        );
        let a = message(3, MessageRole::Tool, vec![result("a")]);
        let history = vec![user.clone(), asked.clone(), a.clone()];
        let ids: Vec<String> = unresolved(&history).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["b", "c"]);

        let b = message(4, MessageRole::Tool, vec![result("b")]);
        let c = message(5, MessageRole::Tool, vec![result("c")]);
        assert!(unresolved(&[user.clone(), asked.clone(), a, b, c]).is_empty());
        assert!(
            unresolved(std::slice::from_ref(&user)).is_empty(),
            "a new turn"
        );
        let reply = message(6, MessageRole::Assistant, vec![Part::text("done")]);
        assert!(unresolved(&[user, asked, reply]).is_empty());
    }
}
