//! Validating what users send as message content, and the JSON Schema
//! that states the same rules.

use serde_json::json;
use utoipa::openapi::{
    AllOfBuilder, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, Type,
    extensions::Extensions,
    schema::{AdditionalProperties, AnyOfBuilder, SchemaType},
};

use super::schema;
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

/// The JSON Schema of a user message's `content`: at most [`MAX_PARTS`]
/// text, file and source parts, not all of them empty (see
/// [`user_content`]).
pub fn user_parts_schema() -> Schema {
    let kind = |name: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([name]))
    };
    let part = |name: &str, description: &str| {
        ObjectBuilder::new()
            .description(Some(description))
            .property("type", kind(name))
            .required("type")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    let text = part("text", "Plain text.")
        .property("text", schema::text(None))
        .required("text");
    let file = part("file", "An attached file.")
        .property("file_id", schema::text(None))
        .required("file_id")
        .property("media_type", schema::text(None))
        .required("media_type")
        .property("name", schema::or_null(schema::text(None)));
    let source = part("source", "A source.")
        .property("url", schema::text(None))
        .required("url")
        .property("title", schema::or_null(schema::text(None)));
    let parts = ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(text.build())
                .item(file.build())
                .item(source.build()),
        )
        .max_items(Some(MAX_PARTS));
    // Something to say: a file or a source, or text that is not all
    // white space. utoipa has no field for `contains`.
    let something = json!({"anyOf": [
        {"properties": {"type": {"enum": ["file", "source"]}}},
        {"properties": {"text": {"pattern": schema::non_blank_pattern()}}},
    ]});
    AllOfBuilder::new()
        .description(Some(format!(
            "The message's parts: at most {MAX_PARTS} text, file and source parts, \
             not all of them empty."
        )))
        .item(parts.build())
        .item(keyword("contains", something))
        .build()
        .into()
}

/// The JSON Schema of a user message's `text`: more than white space.
pub fn message_text_schema() -> ObjectBuilder {
    schema::non_blank().description(Some("The message as plain text (not all white space)."))
}

/// The `content` field of a message body (`null`: not given).
pub(super) fn content_field_schema() -> Schema {
    OneOfBuilder::new()
        .item(user_parts_schema())
        .item(schema::null())
        .build()
        .into()
}

/// The `text` field of a message body (`null`: not given).
pub(super) fn text_field_schema() -> Object {
    schema::or_null(message_text_schema())
}

/// The rule a body's `content` and `text` follow together: exactly one of
/// them is given (`optional`: or neither), `null` counting as not given.
/// Stated beside the body's own schema (an `allOf`), since it is about two
/// fields at once.
pub fn content_or_text_schema(optional: bool) -> Schema {
    let null = || ObjectBuilder::new().schema_type(Type::Null);
    let given = |field: &str, kind: Type, other: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .required(field)
            .property(field, ObjectBuilder::new().schema_type(kind))
            .property(other, null())
    };
    let mut rule = AnyOfBuilder::new()
        .item(given("content", Type::Array, "text").build())
        .item(given("text", Type::String, "content").build());
    if optional {
        rule = rule.item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .property("content", null())
                .property("text", null())
                .build(),
        );
    }
    rule.build().into()
}

/// A schema of one JSON Schema keyword utoipa has no field for: an
/// object's extensions are written in place, under their own names.
fn keyword(name: &str, value: serde_json::Value) -> Object {
    let mut extensions = Extensions::default();
    extensions.insert(name.to_owned(), value);
    let mut object = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .build();
    object.extensions = Some(extensions);
    object
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
