//! What every provider does the same way when rendering a [`Prompt`]: the
//! system prompt, message text, attachments, tool results as text, and
//! model options.

use chatd_shared::{parts::Part, status::MessageRole};
use serde_json::{Map, Value};

use super::{FileContent, Prompt};

/// The system prompt followed by the text of any `system` messages (e.g.
/// compaction summaries), separated by blank lines; `None` when empty.
/// Neither wire format needs them in place: Anthropic only has a top-level
/// system prompt, and one system prompt is what every OpenAI-compatible
/// chat template expects.
pub(crate) fn system_text(prompt: &Prompt) -> Option<String> {
    let texts: Vec<String> = prompt
        .system
        .iter()
        .cloned()
        .chain(
            prompt
                .messages
                .iter()
                .filter(|message| message.role == MessageRole::System)
                .map(|message| joined_text(&message.content)),
        )
        .filter(|text| !text.trim().is_empty())
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n\n"))
}

/// The text parts of a message, joined with newlines (file and source parts
/// carry nothing a model can read yet).
pub(crate) fn joined_text(parts: &[Part]) -> String {
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|part| match part {
            Part::Text { text } if !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
        .collect();
    texts.join("\n")
}

/// A `file` part of a user message, as every wire format decides it: an
/// image or PDF to send as such, a text file's text, or a note saying what
/// the model cannot see (so it never answers as if it had read a file it
/// was not given). Each wire format renders these its own way.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attachment<'a> {
    /// An image: its media type and base64 bytes.
    Image {
        /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
        media_type: &'a str,
        /// The bytes in base64.
        data: &'a str,
    },
    /// A PDF: its name and base64 bytes.
    Pdf {
        /// The file name.
        name: &'a str,
        /// The bytes in base64.
        data: &'a str,
    },
    /// A text file.
    Text {
        /// The file name.
        name: &'a str,
        /// Its media type.
        media_type: &'a str,
        /// Its text.
        text: &'a str,
    },
    /// What the model is told instead of the file.
    Note(String),
}

/// The attachment a `file` part refers to.
pub(crate) fn attachment<'a>(
    prompt: &'a Prompt,
    file_id: &str,
    name: Option<&str>,
) -> Attachment<'a> {
    let Some(file) = prompt.files.get(file_id) else {
        let name = name.unwrap_or(file_id);
        return Attachment::Note(format!("[Attached file {name} is no longer available.]"));
    };
    match (&file.content, file.media_type.as_str()) {
        (FileContent::Base64(data), "application/pdf") => Attachment::Pdf {
            name: &file.name,
            data,
        },
        (FileContent::Base64(data), media_type) if media_type.starts_with("image/") => {
            Attachment::Image { media_type, data }
        }
        (FileContent::Text(text), media_type) => Attachment::Text {
            name: &file.name,
            media_type,
            text,
        },
        (FileContent::Base64(_), media_type) => {
            Attachment::Note(unreadable(&file.name, media_type))
        }
    }
}

/// A text attachment as plain text: a line naming it, then its text.
pub(crate) fn named_text(name: &str, media_type: &str, text: &str) -> String {
    format!("[Attached file {name} ({media_type})]\n{text}")
}

/// The note for an attachment a wire format cannot carry.
pub(crate) fn unreadable(name: &str, media_type: &str) -> String {
    format!(
        "[Attached file {name} ({media_type}) is not included: this model's API cannot take it.]"
    )
}

/// A JSON value where a wire format wants text (tool results, OpenAI's
/// tool-call arguments): a string as it is (a tool's text output, or
/// arguments that were not valid JSON), anything else as JSON.
pub(crate) fn json_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Applies the model config's `options` to a request body as a JSON Merge
/// Patch (RFC 7396): objects merge recursively, other values replace, and
/// `null` removes a field (e.g. `{"max_tokens": null,
/// "max_completion_tokens": 8192}` for OpenAI reasoning models). Top-level
/// fields in `owned` (the model, the messages, streaming) are chatd's and
/// are left alone. Options that are not an object (or null) are an error.
pub(crate) fn apply_options(
    body: &mut Value,
    options: &Value,
    owned: &[&str],
) -> Result<(), String> {
    let patch = match options {
        Value::Null => return Ok(()),
        Value::Object(patch) => patch,
        _ => {
            return Err(format!(
                "the model options must be a JSON object, got {options}"
            ));
        }
    };
    let Value::Object(body) = body else {
        return Err("the request body is not a JSON object".to_owned());
    };
    for (key, value) in patch {
        if !owned.contains(&key.as_str()) {
            merge_field(body, key, value);
        }
    }
    Ok(())
}

fn merge_field(target: &mut Map<String, Value>, key: &str, patch: &Value) {
    match patch {
        Value::Null => {
            target.remove(key);
        }
        Value::Object(fields) => {
            let entry = target
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                for (key, value) in fields {
                    merge_field(inner, key, value);
                }
            }
        }
        other => {
            target.insert(key.to_owned(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::PromptMessage;
    use serde_json::json;

    fn prompt(system: Option<&str>, messages: Vec<PromptMessage>) -> Prompt {
        Prompt {
            model: "m".into(),
            system: system.map(str::to_owned),
            messages,
            tools: Vec::new(),
            max_output_tokens: 100,
            options: Value::Null,
            files: Default::default(),
        }
    }

    #[test]
    fn system_messages_fold_into_the_system_prompt() {
        let summary = PromptMessage {
            role: MessageRole::System,
            content: vec![Part::text("Summary so far.")],
        };
        let user = PromptMessage {
            role: MessageRole::User,
            content: vec![Part::text("hi")],
        };
        assert_eq!(
            system_text(&prompt(
                Some("Be brief."),
                vec![summary.clone(), user.clone()]
            )),
            Some("Be brief.\n\nSummary so far.".into())
        );
        assert_eq!(
            system_text(&prompt(None, vec![summary])),
            Some("Summary so far.".into())
        );
        assert_eq!(system_text(&prompt(Some(" "), vec![user])), None);
    }

    #[test]
    fn json_values_become_text() {
        assert_eq!(json_text(&json!("12:00")), "12:00");
        assert_eq!(json_text(&json!({"time": "12:00"})), r#"{"time":"12:00"}"#);
        assert_eq!(json_text(&Value::Null), "null");
    }

    #[test]
    fn options_merge_as_a_merge_patch_around_owned_fields() {
        let mut body = json!({
            "model": "m",
            "max_tokens": 100,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let options = json!({
            "model": "other",
            "stream": false,
            "temperature": 0.2,
            "max_tokens": null,
            "max_completion_tokens": 200,
            "stream_options": {"extra": 1},
        });
        apply_options(&mut body, &options, &["model", "stream"]).expect("an object applies");
        assert_eq!(
            body,
            json!({
                "model": "m",
                "stream": true,
                "stream_options": {"include_usage": true, "extra": 1},
                "temperature": 0.2,
                "max_completion_tokens": 200,
            })
        );
        assert!(apply_options(&mut body, &json!([1]), &[]).is_err());
        assert!(apply_options(&mut body, &Value::Null, &[]).is_ok());
    }
}
