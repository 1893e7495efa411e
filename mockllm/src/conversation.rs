//! The provider-neutral view of a request: what the engine needs to decide a
//! reply. Both wire parsers build it; chatd's in-process `mock` provider builds
//! it from its own messages.

use crate::plan::ToolCall;

/// How the system prompt of a title request starts: the request is
/// answered with a title (chatd's title requests start this way).
pub const TITLE_REQUEST: &str = "Write a title";

/// How the system prompt of a compaction summary request starts: the
/// request is answered with a plain reply, whatever directives the
/// conversation it summarizes holds (chatd's summary requests start so).
pub const SUMMARY_REQUEST: &str = "Summarize the conversation";

/// What marks a compaction summary inside a system prompt (chatd wraps the
/// summaries it stores in this tag when it sends them to a model).
pub const SUMMARY_TAG: &str = "<conversation_summary>";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The next reply of the conversation.
    Reply,
    /// A title for it ([`TITLE_REQUEST`]).
    Title,
    /// A summary of it ([`SUMMARY_REQUEST`]).
    Summary,
}

/// A model call's input: the system prompt, the conversation and the offered tools.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    /// The system prompt (OpenAI `system`/`developer` messages, Anthropic `system`), joined.
    pub system: String,
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// Names of the tools the request offers.
    pub tools: Vec<String>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The user. Anthropic also sends tool results as user messages.
    User,
    /// The model.
    Assistant,
    /// A tool result message (OpenAI's `tool` role).
    Tool,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text parts, joined with `\n` (empty when it has none).
    pub text: String,
    /// Tool calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
    /// Tool results the message carries.
    pub tool_results: Vec<ToolResult>,
}

/// The result of a tool call, as sent back to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The id of the call it answers.
    pub call_id: String,
    /// The result's content as text.
    pub content: String,
}

impl Message {
    /// A user message with text.
    pub fn user(text: impl Into<String>) -> Self {
        Self::with_text(Role::User, text)
    }

    /// An assistant message with text.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::with_text(Role::Assistant, text)
    }

    /// An OpenAI-style `tool` message answering `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            text: String::new(),
            tool_calls: Vec::new(),
            tool_results: vec![ToolResult {
                call_id: call_id.into(),
                content: content.into(),
            }],
        }
    }

    fn with_text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            text: text.into(),
            tool_calls: Vec::new(),
            tool_results: Vec::new(),
        }
    }

    /// True when the message has text other than whitespace.
    pub fn has_text(&self) -> bool {
        !self.text.trim().is_empty()
    }
}

impl Conversation {
    /// What the request asks for, by how its system prompt starts.
    pub fn purpose(&self) -> Purpose {
        let system = self.system.trim_start();
        if system.starts_with(TITLE_REQUEST) {
            Purpose::Title
        } else if system.starts_with(SUMMARY_REQUEST) {
            Purpose::Summary
        } else {
            Purpose::Reply
        }
    }

    /// True when the system prompt holds a compaction summary ([`SUMMARY_TAG`]).
    pub fn has_summary(&self) -> bool {
        self.system.contains(SUMMARY_TAG)
    }

    /// The index of the last user message that has text: the one whose
    /// directive counts. A user message carrying only tool results (Anthropic)
    /// is not it.
    pub fn last_user_text_index(&self) -> Option<usize> {
        self.messages
            .iter()
            .rposition(|message| message.role == Role::User && message.has_text())
    }

    /// The text of the last user message that has text.
    pub fn last_user_text(&self) -> Option<&str> {
        self.last_user_text_index()
            .map(|index| self.messages[index].text.as_str())
    }

    /// Which model call of the current user turn this is: the number of
    /// assistant messages after the last user message with text (0 for the
    /// first call, 1 after one tool round trip, …).
    pub fn step_index(&self) -> usize {
        let start = self.last_user_text_index().map_or(0, |index| index + 1);
        self.messages[start..]
            .iter()
            .filter(|message| message.role == Role::Assistant)
            .count()
    }

    /// True when the last message carries tool results, i.e. the model is
    /// being asked to continue after its tools ran.
    pub fn answers_tool_result(&self) -> bool {
        self.messages
            .last()
            .is_some_and(|message| !message.tool_results.is_empty())
    }

    /// A stable 64-bit hash of the system prompt and the messages (not the
    /// tools). Identical conversations have identical fingerprints in every
    /// process and on every platform.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = Fnv1a::new();
        hash.write_str(&self.system);
        for message in &self.messages {
            hash.write(&[match message.role {
                Role::User => b'u',
                Role::Assistant => b'a',
                Role::Tool => b't',
            }]);
            hash.write_str(&message.text);
            for call in &message.tool_calls {
                hash.write_str(&call.id);
                hash.write_str(&call.name);
                hash.write_str(&call.arguments());
            }
            for result in &message.tool_results {
                hash.write_str(&result.call_id);
                hash.write_str(&result.content);
            }
        }
        hash.finish()
    }

    /// Prompt size in the mock's unit (words), never 0.
    pub fn input_tokens(&self) -> u64 {
        (words(&self.system) + self.messages.iter().map(message_words).sum::<u64>()).max(1)
    }

    /// The words before the last message: what a provider's prompt cache
    /// would hold from the previous call of the same chat.
    pub fn cached_tokens(&self) -> u64 {
        match self.messages.split_last() {
            Some((_, earlier)) if !earlier.is_empty() => {
                words(&self.system) + earlier.iter().map(message_words).sum::<u64>()
            }
            _ => 0,
        }
    }
}

fn message_words(message: &Message) -> u64 {
    words(&message.text)
        + message
            .tool_calls
            .iter()
            .map(|call| 1 + words(&call.arguments()))
            .sum::<u64>()
        + message
            .tool_results
            .iter()
            .map(|result| words(&result.content))
            .sum::<u64>()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// FNV-1a, 64 bit: tiny, stable across Rust versions and platforms (unlike
/// `DefaultHasher`), which reproducible replies need.
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Self {
        Self(Self::OFFSET)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
    }

    /// Length-prefixed, so `("ab", "c")` and `("a", "bc")` hash differently.
    pub(crate) fn write_str(&mut self, text: &str) {
        self.write(&(text.len() as u64).to_le_bytes());
        self.write(text.as_bytes());
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assistant_with_call(id: &str) -> Message {
        Message {
            role: Role::Assistant,
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: "now".into(),
                args: json!({}),
            }],
            tool_results: Vec::new(),
        }
    }

    /// Anthropic's shape: the tool result travels in a user message.
    fn user_with_result(id: &str) -> Message {
        Message {
            role: Role::User,
            text: String::new(),
            tool_calls: Vec::new(),
            tool_results: vec![ToolResult {
                call_id: id.into(),
                content: "12:00".into(),
            }],
        }
    }

    #[test]
    fn first_call_of_a_turn_is_step_zero() {
        let conversation = Conversation {
            messages: vec![
                Message::user("hi"),
                Message::assistant("hello"),
                Message::user("again"),
            ],
            ..Conversation::default()
        };
        assert_eq!(conversation.step_index(), 0);
        assert_eq!(conversation.last_user_text(), Some("again"));
    }

    #[test]
    fn tool_round_trips_advance_the_step_in_both_shapes() {
        let openai = Conversation {
            messages: vec![
                Message::user("go"),
                assistant_with_call("call_1"),
                Message::tool_result("call_1", "12:00"),
                assistant_with_call("call_2"),
                Message::tool_result("call_2", "12:01"),
            ],
            ..Conversation::default()
        };
        assert_eq!(openai.step_index(), 2);
        assert!(openai.answers_tool_result());

        let anthropic = Conversation {
            messages: vec![
                Message::user("go"),
                assistant_with_call("toolu_1"),
                user_with_result("toolu_1"),
            ],
            ..Conversation::default()
        };
        assert_eq!(anthropic.step_index(), 1);
        assert_eq!(anthropic.last_user_text(), Some("go"));
    }

    #[test]
    fn fingerprint_depends_on_every_message() {
        let a = Conversation {
            messages: vec![Message::user("ab"), Message::assistant("c")],
            ..Conversation::default()
        };
        let b = Conversation {
            messages: vec![Message::user("a"), Message::assistant("bc")],
            ..Conversation::default()
        };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    #[test]
    fn cached_tokens_are_the_prefix_before_the_last_message() {
        let conversation = Conversation {
            system: "be brief".into(),
            messages: vec![Message::user("one two"), Message::user("three")],
            ..Conversation::default()
        };
        assert_eq!(conversation.input_tokens(), 5);
        assert_eq!(conversation.cached_tokens(), 4);
        let first = Conversation {
            messages: vec![Message::user("one two")],
            ..Conversation::default()
        };
        assert_eq!(first.cached_tokens(), 0);
    }
}
