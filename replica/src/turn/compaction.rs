//! Context compaction in the turn loop (ARCHITECTURE.md §17). When the input tokens
//! the provider reported for the previous model call pass the model's
//! `compaction_threshold_pct` of its `context_limit`, the next call first
//! asks the model for a summary of everything before the last user message
//! (one non-streaming call, no tools, within `TurnConfig::summary_timeout`,
//! retried at most once). The summary is stored as a hidden message and the
//! messages it replaces are marked (one fenced statement,
//! [`ChatOps::compact`](crate::operations::ChatOps::compact)); the prompt
//! then starts from it. A summary that cannot be had leaves the prompt as
//! it is for the rest of the run.
//!
//! Never twice for one range: the trigger is the usage of a call made
//! after the latest summary (a recovered run that finds the summary
//! stored has no such call yet), and the statement stores nothing when the
//! range holds no message left to replace.

use std::time::Duration;

use chatd_shared::{
    db::{
        compaction::{Compacted, Summary},
        lifecycle::TurnEnd,
    },
    parts::Part,
    status::MessageRole,
};
use tokio::time::Instant;

use super::{Loaded, TurnRunner, cost, spend};
use crate::{
    llm::{Completion, Prompt, PromptMessage, ProviderError},
    runtime::{RunContext, RunError},
};

/// The instructions of a summary request. The mock model recognizes
/// summary requests by how they start ("Summarize the conversation").
const INSTRUCTIONS: &str = "Summarize the conversation below so that it can be continued from \
    the summary alone: the user's goals and requests, decisions made, facts and results \
    learned (including tool results that still matter), and open questions. Be concise and \
    complete; write the summary only.";

/// Output cap of a summary.
const SUMMARY_MAX_TOKENS: u32 = 2048;

/// How a compaction went.
pub(super) enum Compaction {
    /// Not due, or done: go on with the (possibly compacted) prompt.
    Continue,
    /// An interrupt arrived during the summary call: end the turn.
    Interrupted,
    /// The spend limit refused the summary call: end the turn so.
    Refused(TurnEnd),
}

/// True when `loaded`'s next call must compact first: its previous call
/// read more than the threshold, and there is something before the last
/// user message to replace.
pub(super) fn due(loaded: &Loaded) -> bool {
    let config = &loaded.model.config;
    let threshold =
        i64::from(config.context_limit) * i64::from(config.compaction_threshold_pct) / 100;
    !loaded.state.compaction_failed
        && loaded
            .state
            .reported
            .is_some_and(|reported| reported.input_tokens > threshold)
        && loaded.state.last_user.is_some_and(|(_, index)| index > 0)
}

/// The summary request: the instructions, and the conversation before the
/// last user message (the latest summary first) as one transcript, so no
/// tool is offered and none can be called, in any wire format.
pub(super) fn request(loaded: &Loaded) -> Prompt {
    let before = loaded
        .state
        .last_user
        .map_or(0, |(_, index)| index)
        .min(loaded.prompt.messages.len());
    let transcript = transcript(
        loaded.state.summary.as_deref(),
        &loaded.prompt.messages[..before],
    );
    Prompt {
        model: loaded.prompt.model.clone(),
        system: Some(INSTRUCTIONS.to_owned()),
        messages: vec![PromptMessage {
            role: MessageRole::User,
            content: vec![Part::text(transcript)],
        }],
        tools: Vec::new(),
        max_output_tokens: loaded.prompt.max_output_tokens.min(SUMMARY_MAX_TOKENS),
        options: loaded.prompt.options.clone(),
        files: Default::default(),
    }
}

/// The conversation as text: who said what, tool calls and their results.
fn transcript(summary: Option<&str>, messages: &[PromptMessage]) -> String {
    let mut lines = Vec::with_capacity(messages.len() + 1);
    if let Some(summary) = summary {
        lines.push(format!("Summary of what came before:\n{summary}"));
    }
    for message in messages {
        let who = match message.role {
            MessageRole::User => "User",
            MessageRole::Assistant => "Assistant",
            MessageRole::Tool => "Tool",
            MessageRole::System => "System",
        };
        for part in &message.content {
            let line = match part {
                Part::Text { text } => format!("{who}: {text}"),
                Part::ToolCall { name, args, .. } => format!("{who} called {name} with {args}"),
                Part::ToolResult {
                    name,
                    result,
                    is_error,
                    ..
                } => {
                    let outcome = if *is_error { "failed" } else { "returned" };
                    format!("{who} {name} {outcome}: {result}")
                }
                _ => continue,
            };
            lines.push(line);
        }
    }
    lines.join("\n\n")
}

/// Why a summary could not be had.
enum Failure {
    /// The provider failed.
    Provider(ProviderError),
    /// No answer within the timeout.
    Timeout(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Provider(error) => error.fmt(f),
            Self::Timeout(after) => write!(f, "no summary within {after:?}"),
        }
    }
}

/// How the summary call ended.
enum Summarized {
    Done(Completion),
    Failed(Failure),
    Interrupted,
    Stopped,
}

impl TurnRunner {
    /// Compacts `loaded`'s chat first if [`due`]; see the module docs.
    pub(super) async fn compact_if_due(
        &self,
        run: &mut RunContext,
        loaded: &mut Loaded,
    ) -> Result<Compaction, RunError> {
        if !due(loaded) {
            return Ok(Compaction::Continue);
        }
        let Some((before, _)) = loaded.state.last_user else {
            return Ok(Compaction::Continue);
        };
        let request = request(loaded);
        let input = spend::prompt_tokens(&request);
        if let Some(end) = self.reserve(run, loaded, input).await? {
            return Ok(Compaction::Refused(end));
        }
        let started = Instant::now();
        let completion = match self.summarize(run, loaded, &request).await {
            Summarized::Done(completion) if !completion.text.trim().is_empty() => completion,
            Summarized::Done(_) => {
                return Ok(self.give_up(run, loaded, "the model's summary was empty"));
            }
            Summarized::Failed(failure) => {
                return Ok(self.give_up(run, loaded, &failure.to_string()));
            }
            Summarized::Interrupted => {
                self.metrics.compaction("interrupted");
                return Ok(Compaction::Interrupted);
            }
            Summarized::Stopped => {
                return Err(RunError::Stopped(
                    run.stop_reason()
                        .unwrap_or(crate::runtime::StopReason::OwnershipLost),
                ));
            }
        };
        let text = completion.text.trim().to_owned();
        let content = [Part::text(text.clone())];
        let model = &loaded.model.config;
        let summary = Summary {
            before,
            content: &content,
            model_config_id: model.id,
            usage: completion.usage,
            cost_micros: cost::cost_micros(model, &completion.usage),
            runtime_ms: started.elapsed().as_millis() as i64,
        };
        match run.compact(&summary).await? {
            Compacted::Stored { .. } => {
                self.metrics.compaction("compacted");
                loaded.compacted(text);
            }
            // Replaced already (by this chat's run before a recovery): the
            // prompt read after it starts from that summary.
            Compacted::NothingToReplace | Compacted::OwnershipLost => {
                self.metrics.compaction("nothing_to_replace");
                loaded.state.compaction_failed = true;
            }
        }
        Ok(Compaction::Continue)
    }

    /// The summary call: bounded by the summary timeout, retried once.
    async fn summarize(&self, run: &RunContext, loaded: &Loaded, request: &Prompt) -> Summarized {
        let control = run.control();
        let provider = loaded.model.provider.clone();
        let timeout = self.config.summary_timeout;
        let mut last = None;
        for _ in 0..2 {
            let call = tokio::time::timeout(timeout, provider.complete(request));
            let outcome = tokio::select! {
                biased;
                _ = control.cancelled() => return Summarized::Stopped,
                _ = control.interrupted() => return Summarized::Interrupted,
                outcome = call => outcome,
            };
            let failure = match outcome {
                Ok(Ok(completion)) => return Summarized::Done(completion),
                Ok(Err(error)) if !error.is_retryable() => {
                    return Summarized::Failed(Failure::Provider(error));
                }
                Ok(Err(error)) => Failure::Provider(error),
                Err(_elapsed) => Failure::Timeout(timeout),
            };
            last = Some(failure);
        }
        Summarized::Failed(last.unwrap_or(Failure::Timeout(timeout)))
    }

    /// A compaction that cannot be had: the turn goes on without it, and
    /// this run does not try again.
    fn give_up(&self, run: &RunContext, loaded: &mut Loaded, why: &str) -> Compaction {
        tracing::warn!(chat_id = %run.fence().chat_id, reason = %why, "compaction failed; the turn goes on uncompacted");
        self.metrics.compaction("failed");
        loaded.state.compaction_failed = true;
        Compaction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_transcript_says_who_said_what() {
        let messages = [
            PromptMessage {
                role: MessageRole::User,
                content: vec![Part::text("what time is it?")],
            },
            PromptMessage {
                role: MessageRole::Assistant,
                content: vec![Part::ToolCall {
                    id: "c".into(),
                    name: "now".into(),
                    args: json!({"tz": "UTC"}),
                }],
            },
            PromptMessage {
                role: MessageRole::Tool,
                content: vec![Part::ToolResult {
                    tool_call_id: "c".into(),
                    name: "now".into(),
                    result: json!("12:00"),
                    is_error: false,
                }],
            },
        ];
        assert_eq!(
            transcript(Some("We met."), &messages),
            "Summary of what came before:\nWe met.\n\nUser: what time is it?\n\n\
             Assistant called now with {\"tz\":\"UTC\"}\n\nTool now returned: \"12:00\""
        );
    }
}
