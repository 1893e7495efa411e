//! Assembling a model's streamed events into the parts clients see while it
//! streams (deltas, then each tool call once complete) and the parts stored
//! when the step ends.

use chatd_shared::parts::{Part, Usage};
use serde_json::Value;

use crate::{
    llm::{FinishReason, StreamEvent},
    tools::Call,
};

/// The step in progress.
#[derive(Debug, Default)]
pub struct Draft {
    reasoning: String,
    signature: Option<String>,
    text: String,
    calls: Vec<DraftCall>,
    /// Index of the call whose arguments are still streaming.
    open_call: Option<usize>,
    usage: Usage,
    finish: Option<FinishReason>,
    received: bool,
}

#[derive(Debug)]
struct DraftCall {
    index: usize,
    id: String,
    name: String,
    args: String,
}

impl DraftCall {
    /// The arguments as JSON; invalid JSON is kept as its raw text (the tool
    /// then answers with an error result, and the model sees what it sent).
    fn args(&self) -> Value {
        if self.args.trim().is_empty() {
            return Value::Object(Default::default());
        }
        serde_json::from_str(&self.args).unwrap_or_else(|_| Value::String(self.args.clone()))
    }

    fn part(&self) -> Part {
        Part::ToolCall {
            id: self.id.clone(),
            name: self.name.clone(),
            args: self.args(),
        }
    }
}

impl Draft {
    /// Applies one event; returns the parts to stream now.
    pub fn apply(&mut self, event: StreamEvent) -> Vec<Part> {
        self.received = true;
        match event {
            StreamEvent::TextDelta(text) if !text.is_empty() => {
                self.text.push_str(&text);
                vec![Part::TextDelta { text }]
            }
            StreamEvent::ReasoningDelta(text) if !text.is_empty() => {
                self.reasoning.push_str(&text);
                vec![Part::ReasoningDelta { text }]
            }
            StreamEvent::TextDelta(_) | StreamEvent::ReasoningDelta(_) => Vec::new(),
            StreamEvent::ReasoningSignature(signature) => {
                self.signature = Some(signature);
                Vec::new()
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                let parts = self.close_call();
                self.calls.push(DraftCall {
                    index,
                    id,
                    name,
                    args: String::new(),
                });
                self.open_call = Some(self.calls.len() - 1);
                parts
            }
            StreamEvent::ToolCallDelta { index, args } => {
                let Some(position) = self.calls.iter().position(|call| call.index == index) else {
                    return Vec::new();
                };
                let call = &mut self.calls[position];
                call.args.push_str(&args);
                vec![Part::ToolCallDelta {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    args_delta: args,
                }]
            }
            StreamEvent::Usage(usage) => {
                self.usage.merge(&usage);
                Vec::new()
            }
            StreamEvent::Finish(reason) => {
                self.finish = Some(reason);
                self.close_call()
            }
        }
    }

    /// The complete `tool_call` part of the call that was streaming, if any.
    fn close_call(&mut self) -> Vec<Part> {
        match self.open_call.take() {
            Some(position) => vec![self.calls[position].part()],
            None => Vec::new(),
        }
    }

    /// True once the model said it is done.
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// Why the model stopped, once it did.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish.as_ref()
    }

    /// True when any event arrived (the first token is in).
    pub fn has_output(&self) -> bool {
        !self.text.is_empty() || !self.reasoning.is_empty() || !self.calls.is_empty()
    }

    /// The parts to store: reasoning, text, tool calls (in call order).
    pub fn parts(&self) -> Vec<Part> {
        let mut parts = Vec::new();
        if !self.reasoning.is_empty() || self.signature.is_some() {
            parts.push(Part::Reasoning {
                text: self.reasoning.clone(),
                signature: self.signature.clone(),
            });
        }
        if !self.text.is_empty() {
            parts.push(Part::text(self.text.clone()));
        }
        parts.extend(self.calls.iter().map(DraftCall::part));
        parts
    }

    /// The tool calls to run, in call order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .iter()
            .map(|call| Call {
                id: call.id.clone(),
                name: call.name.clone(),
                args: call.args(),
            })
            .collect()
    }

    /// Usage reported so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }
}

/// Later values of a field replace earlier ones (providers report in parts).
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn deltas_stream_and_tool_calls_complete_in_order() {
        let mut draft = Draft::default();
        assert_eq!(
            draft.apply(StreamEvent::ReasoningDelta("hm".into())),
            [Part::ReasoningDelta { text: "hm".into() }]
        );
        draft.apply(StreamEvent::ReasoningSignature("sig".into()));
        assert_eq!(
            draft.apply(StreamEvent::TextDelta("Hi".into())),
            [Part::TextDelta { text: "Hi".into() }]
        );
        assert!(
            draft
                .apply(StreamEvent::ToolCallStart {
                    index: 0,
                    id: "a".into(),
                    name: "t".into()
                })
                .is_empty()
        );
        draft.apply(StreamEvent::ToolCallDelta {
            index: 0,
            args: "{\"x\":".into(),
        });
        draft.apply(StreamEvent::ToolCallDelta {
            index: 0,
            args: "1}".into(),
        });
        // The next call starting completes the first.
        let done = draft.apply(StreamEvent::ToolCallStart {
            index: 1,
            id: "b".into(),
            name: "t".into(),
        });
        assert_eq!(
            done,
            [Part::ToolCall {
                id: "a".into(),
                name: "t".into(),
                args: json!({"x": 1})
            }]
        );
        draft.apply(StreamEvent::ToolCallDelta {
            index: 1,
            args: "{oops".into(),
        });
        draft.apply(StreamEvent::Usage(Usage {
            input_tokens: Some(5),
            ..Default::default()
        }));
        draft.apply(StreamEvent::Usage(Usage {
            output_tokens: Some(7),
            ..Default::default()
        }));
        let last = draft.apply(StreamEvent::Finish(FinishReason::ToolCalls));
        assert_eq!(
            last,
            [Part::ToolCall {
                id: "b".into(),
                name: "t".into(),
                args: json!("{oops")
            }]
        );
        assert!(draft.is_finished());
        assert_eq!(
            draft.parts(),
            [
                Part::Reasoning {
                    text: "hm".into(),
                    signature: Some("sig".into())
                },
                Part::text("Hi"),
                Part::ToolCall {
                    id: "a".into(),
                    name: "t".into(),
                    args: json!({"x": 1})
                },
                Part::ToolCall {
                    id: "b".into(),
                    name: "t".into(),
                    args: json!("{oops")
                },
            ]
        );
        assert_eq!(draft.calls().len(), 2);
        assert_eq!(
            (draft.usage().input_tokens, draft.usage().output_tokens),
            (Some(5), Some(7))
        );
    }
}
