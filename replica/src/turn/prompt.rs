//! Building the model's prompt from a chat's messages.

use chatd_shared::{
    db::{chats::Chat, messages::Message},
    parts::Part,
    status::MessageRole,
};

use crate::{
    llm::{Prompt, PromptMessage, ToolSpec},
    models::ResolvedModel,
};

/// The prompt for `chat` with `history` (in id order), offering `tools`.
pub fn build(
    chat: &Chat,
    model: &ResolvedModel,
    tools: Vec<ToolSpec>,
    history: &[Message],
) -> Prompt {
    let mut system: Vec<String> = chat.system_prompt.iter().cloned().collect();
    let mut messages = Vec::with_capacity(history.len());
    for message in history {
        if message.role == MessageRole::System {
            // Summaries and instructions stored as messages join the system prompt.
            system.extend(message.content.iter().filter_map(|part| match part {
                Part::Text { text } => Some(text.clone()),
                _ => None,
            }));
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
        messages.push(PromptMessage {
            role: message.role,
            content,
        });
    }
    Prompt {
        model: model.config.model.clone(),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        tools,
        max_output_tokens: u32::try_from(model.config.max_output_tokens).unwrap_or(4096),
        options: model.config.options.clone(),
        files: Default::default(),
    }
}

/// Appends committed messages to a prompt (the next step sees them).
pub fn append(prompt: &mut Prompt, committed: &[Message]) {
    prompt.messages.extend(
        committed
            .iter()
            .filter(|message| !message.content.is_empty())
            .map(|message| PromptMessage {
                role: message.role,
                content: message.content.clone(),
            }),
    );
}
