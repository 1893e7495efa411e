//! Building the model's prompt from a chat's messages, and what the turn
//! loop keeps knowing about it while a run goes on: the last user message
//! (where compaction cuts), the latest summary, and the latest reported
//! usage (what compaction is triggered by and spend reservations estimate
//! from).

use std::sync::Arc;

use chatd_shared::{db::messages::Message, ids::MessageId, parts::Part, status::MessageRole};

use crate::{
    llm::{Prompt, PromptMessage, joined_text},
    models::ResolvedModel,
    tools::ChatToolset,
};

/// How a compaction summary is marked in the system prompt (the mock model
/// reports whether it saw one by this tag).
const SUMMARY_OPEN: &str = "<conversation_summary>";
const SUMMARY_CLOSE: &str = "</conversation_summary>";

/// The system prompts of a chat's model calls, in the order the model gets
/// them (ARCHITECTURE.md §17): the deployment's, the owner's, the chat's. Empty ones
/// are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemPrompts(Vec<String>);

impl SystemPrompts {
    /// The deployment's, the user's and the chat's prompts, in that order.
    pub fn new(deployment: &str, user: &str, chat: Option<&str>) -> Self {
        Self(
            [deployment, user, chat.unwrap_or_default()]
                .into_iter()
                .filter(|prompt| !prompt.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

/// The latest model call's usage: where the next call's input estimate
/// starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// Input tokens the provider reported.
    pub input_tokens: i64,
    /// Output tokens it reported (the reply is input of the next call).
    pub output_tokens: i64,
    /// How many prompt messages the call and its reply cover.
    pub covered: usize,
}

/// What the turn loop knows about a run's prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptState {
    /// The three system prompts.
    pub system: SystemPrompts,
    /// The latest compaction summary, sent after the system prompts.
    pub summary: Option<String>,
    /// The last user message: its id, and its index in the prompt's messages.
    pub last_user: Option<(MessageId, usize)>,
    /// The latest model call's usage, unless a summary replaced what it read.
    pub reported: Option<Reported>,
    /// A compaction failed in this run: it is not tried again before the
    /// next run (each attempt would cost the summary's timeout).
    pub compaction_failed: bool,
    /// The owner's spend-limit override, as the run read it.
    pub spend_override: Option<i64>,
    /// The chat's first message, while its title is still to be made (the
    /// first model call the turn may make hands it to the generator).
    pub title_from: Option<Vec<Part>>,
}

/// A run's model, tools, prompt and prompt state, kept in step with what
/// the run persists (nobody else adds to a chat we own).
pub struct Loaded {
    /// The chat's model.
    pub model: Arc<ResolvedModel>,
    /// The chat's tools (the prompt offers their specs).
    pub tools: Arc<ChatToolset>,
    /// The next call's prompt.
    pub prompt: Prompt,
    /// What the turn loop knows about it.
    pub state: PromptState,
}

impl Loaded {
    /// The prompt on `model` with `tools`, the system prompts and `history`
    /// (in id order, as [`prompt_context`] reads it).
    ///
    /// [`prompt_context`]: chatd_shared::db::prompt_context
    pub fn build(
        model: Arc<ResolvedModel>,
        tools: Arc<ChatToolset>,
        system: SystemPrompts,
        history: &[Message],
    ) -> Self {
        let prompt = Prompt {
            model: model.config.model.clone(),
            system: None,
            messages: Vec::with_capacity(history.len()),
            tools: tools.specs(),
            max_output_tokens: u32::try_from(model.config.max_output_tokens).unwrap_or(4096),
            options: model.config.options.clone(),
            files: Default::default(),
        };
        let mut loaded = Self {
            model,
            tools,
            prompt,
            state: PromptState {
                system,
                ..PromptState::default()
            },
        };
        loaded.append(history);
        loaded.compose_system();
        loaded
    }

    /// Appends committed messages (the next call sees them). A summary
    /// among them (a `system` message) becomes the system prompt's summary.
    pub fn append(&mut self, committed: &[Message]) {
        for message in committed {
            if message.role == MessageRole::System {
                // Summaries (the only system messages) join the system prompt.
                self.state.summary = Some(joined_text(&message.content));
                self.state.reported = None;
                self.compose_system();
                continue;
            }
            let content: Vec<Part> = message
                .content
                .iter()
                .filter(|part| !part.is_delta())
                .cloned()
                .collect();
            // An empty message (a model reply with nothing in it) would be
            // refused by some providers and tells the model nothing.
            if content.is_empty() {
                continue;
            }
            let index = self.prompt.messages.len();
            match message.role {
                MessageRole::User => self.state.last_user = Some((message.id, index)),
                MessageRole::Assistant => {
                    if let Some(input_tokens) = message.usage.input_tokens {
                        self.state.reported = Some(Reported {
                            input_tokens,
                            output_tokens: message.usage.output_tokens.unwrap_or(0),
                            covered: index + 1,
                        });
                    }
                }
                _ => {}
            }
            self.prompt.messages.push(PromptMessage {
                role: message.role,
                content,
            });
        }
    }

    /// Replaces everything before the last user message with `summary`
    /// (stored already): what the prompt is after a compaction.
    pub fn compacted(&mut self, summary: String) {
        if let Some((id, index)) = self.state.last_user {
            self.prompt.messages.drain(..index);
            self.state.last_user = Some((id, 0));
        }
        self.state.summary = Some(summary);
        self.state.reported = None;
        self.compose_system();
    }

    /// The system prompt: the three prompts, then the summary, in its tag.
    fn compose_system(&mut self) {
        let summary = self
            .state
            .summary
            .as_ref()
            .map(|summary| format!("{SUMMARY_OPEN}\n{summary}\n{SUMMARY_CLOSE}"));
        let parts: Vec<String> = self.state.system.0.iter().cloned().chain(summary).collect();
        self.prompt.system = (!parts.is_empty()).then(|| parts.join("\n\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prompts_keep_their_order_and_skip_empty_ones() {
        let prompts = SystemPrompts::new("Deployment.", "", Some("Chat."));
        assert_eq!(prompts.0, ["Deployment.", "Chat."]);
        assert_eq!(SystemPrompts::new(" ", "", None).0, Vec::<String>::new());
    }
}
