//! JSON Schema of request fields whose rules go beyond their Rust type, so
//! the OpenAPI document states what the server refuses: text PostgreSQL
//! cannot store (NUL), names that are trimmed and have no control
//! characters, messages that say something. The server enforces the same
//! rules where the field is read; each function names its check.
//!
//! Patterns are anchored (JSON Schema patterns match anywhere) and spell
//! character classes out, since `\s` differs between regex dialects.

use utoipa::openapi::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type, schema::SchemaType};

/// The characters `char::is_whitespace` matches (Unicode `White_Space`),
/// as the inside of a character class.
const WHITESPACE: &str =
    r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The characters `char::is_control` matches (Unicode `Cc`).
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// Text without NUL, the one character PostgreSQL cannot store in `text`
/// or `jsonb` (the JSON extractor refuses it in any string of a body).
pub const NO_NUL: &str = r"^[^\u0000]*$";

/// A string of at most `max` characters without NUL.
pub fn text(max: Option<usize>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NO_NUL))
        .max_length(max)
}

/// Text that is more than white space (and has no NUL): a message.
pub fn non_blank() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(non_blank_pattern()))
}

/// The pattern of [`non_blank`].
pub fn non_blank_pattern() -> String {
    format!(r"^[^\u0000]*[^{WHITESPACE}\u0000][^\u0000]*$")
}

/// A name read the way the admin API reads names and keys: white space
/// around it is trimmed, and what is left is not empty (unless `optional`),
/// has at most `max` characters and no control character.
pub fn trimmed_name(optional: bool, max: Option<usize>) -> ObjectBuilder {
    // One character that is neither white space nor control, or two such
    // with at most max-2 characters that are not control between them; any
    // white space (control characters among it) around.
    let edge = format!("[^{WHITESPACE}{CONTROL}]");
    let name = match max {
        Some(0) => String::new(),
        Some(1) => edge,
        Some(max) => format!("{edge}(?:[^{CONTROL}]{{0,{}}}{edge})?", max - 2),
        None => format!("{edge}(?:[^{CONTROL}]*{edge})?"),
    };
    let name = if optional {
        format!("(?:{name})?")
    } else {
        name
    };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^[{WHITESPACE}]*{name}[{WHITESPACE}]*$")))
}

/// A portable environment variable name (letters, digits and `_`, not
/// starting with a digit), white space around it trimmed.
pub fn variable_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(
            "^[{WHITESPACE}]*[A-Za-z_][A-Za-z0-9_]*[{WHITESPACE}]*$"
        )))
}

/// A secret sent as a header value: not empty, no control character.
pub fn secret() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(format!("^[^{CONTROL}]+$")))
}

/// A tool's name as providers accept it: 1–64 of `[A-Za-z0-9_-]`.
pub fn tool_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some("^[A-Za-z0-9_-]+$"))
}

/// A JSON object, free-form (its strings without NUL).
pub fn json_object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

/// A UUID.
pub fn uuid() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

/// `null`.
pub fn null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Null)
}

/// `builder`'s schema, also allowing `null` (a field that may be sent as
/// `null`, which reads as left out).
pub fn or_null(builder: ObjectBuilder) -> Object {
    let mut object = builder.build();
    let types = match object.schema_type {
        SchemaType::Type(kind) => vec![kind, Type::Null],
        SchemaType::Array(mut kinds) => {
            kinds.push(Type::Null);
            kinds
        }
        SchemaType::AnyValue => return object,
    };
    object.schema_type = SchemaType::Array(types);
    object
}
