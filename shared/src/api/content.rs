//! Validating what users send as message content.

use crate::parts::Part;

/// At most this many parts in one message.
pub const MAX_PARTS: usize = 100;

/// Why content is not acceptable (a 422, or 400 for shape problems).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// Neither `content` nor `text` was given, or both were.
    #[error("give exactly one of `content` and `text`")]
    Shape,
    /// Nothing to say.
    #[error("the message is empty")]
    Empty,
    /// Too many parts.
    #[error("a message has at most {MAX_PARTS} parts")]
    TooManyParts,
    /// A part users cannot send (tool calls, results, reasoning, deltas).
    #[error("part {index} has type {kind}, which users cannot send (allowed: text, file, source)")]
    PartNotAllowed {
        /// Its position.
        index: usize,
        /// Its type.
        kind: &'static str,
    },
}

/// The parts of a user message given as `content` or `text` (exactly one),
/// checked: only text, file and source parts, not all empty.
pub fn user_content(
    content: Option<Vec<Part>>,
    text: Option<String>,
) -> Result<Vec<Part>, ContentError> {
    let parts = match (content, text) {
        (Some(parts), None) => parts,
        (None, Some(text)) => vec![Part::Text { text }],
        _ => return Err(ContentError::Shape),
    };
    if parts.len() > MAX_PARTS {
        return Err(ContentError::TooManyParts);
    }
    let mut has_something = false;
    for (index, part) in parts.iter().enumerate() {
        match part {
            Part::Text { text } => has_something |= !text.trim().is_empty(),
            Part::File { .. } | Part::Source { .. } => has_something = true,
            other => {
                return Err(ContentError::PartNotAllowed {
                    index,
                    kind: part_kind(other),
                });
            }
        }
    }
    if !has_something {
        return Err(ContentError::Empty);
    }
    Ok(parts)
}

fn part_kind(part: &Part) -> &'static str {
    match part {
        Part::Text { .. } => "text",
        Part::Reasoning { .. } => "reasoning",
        Part::ToolCall { .. } => "tool_call",
        Part::ToolResult { .. } => "tool_result",
        Part::File { .. } => "file",
        Part::Source { .. } => "source",
        Part::TextDelta { .. } => "text_delta",
        Part::ReasoningDelta { .. } => "reasoning_delta",
        Part::ToolCallDelta { .. } => "tool_call_delta",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_text_or_content_and_refuses_the_rest() {
        assert_eq!(
            user_content(None, Some("hi".into())),
            Ok(vec![Part::text("hi")])
        );
        assert_eq!(
            user_content(Some(vec![Part::text("hi")]), None),
            Ok(vec![Part::text("hi")])
        );
        assert_eq!(user_content(None, None), Err(ContentError::Shape));
        assert_eq!(
            user_content(Some(vec![]), Some("x".into())),
            Err(ContentError::Shape)
        );
        assert_eq!(
            user_content(None, Some("  ".into())),
            Err(ContentError::Empty)
        );
        assert_eq!(user_content(Some(vec![]), None), Err(ContentError::Empty));
        let call = Part::ToolCall {
            id: "c".into(),
            name: "t".into(),
            args: serde_json::json!({}),
        };
        assert_eq!(
            user_content(Some(vec![Part::text("x"), call]), None),
            Err(ContentError::PartNotAllowed {
                index: 1,
                kind: "tool_call"
            })
        );
    }
}
