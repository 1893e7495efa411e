//! Generated titles (ARCHITECTURE.md §17): once per chat, after its first user
//! message, a non-streaming call to the model flagged `use_for_titles` (or
//! the chat's own) makes a 2–8 word title. It runs beside the turn, never in
//! its way: the turn loop only hands the first message over and goes on, so
//! a slow or failing title model never delays or fails the reply. The title
//! is written only while the chat has none
//! ([`ChatOps::set_generated_title`]), so a title the user set wins, also
//! when it races the generator. Outcomes are counted in
//! `chatd_titles_total{outcome}`: `generated`, `user_title` (the chat had a
//! title by then), `failed` (the call failed or timed out), `empty` (the
//! answer had no usable words), `skipped` (too many in flight).

use std::{sync::Arc, time::Duration};

use chatd_shared::{ids::ChatId, parts::Part, status::MessageRole};
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Meter},
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    llm::{Prompt, PromptMessage, joined_text},
    models::{ModelCatalog, ResolvedModel},
    operations::{ChatOps, TitleOutcome},
};

/// The instructions of a title request. The mock model recognizes title
/// requests by how they start ("Write a title").
const INSTRUCTIONS: &str = "Write a title for the conversation that starts with the user's \
    message below: 2 to 8 words, at most 80 characters, in the message's language, without \
    quotes or a final period. Reply with the title only.";

/// Words a title has at most.
const MAX_WORDS: usize = 8;
/// Characters a title has at most.
const MAX_CHARS: usize = 80;
/// Characters of the first message the title model reads at most.
const MAX_MESSAGE_CHARS: usize = 4000;
/// Output cap of a title call.
const TITLE_MAX_TOKENS: u32 = 64;

/// How titles are made.
#[derive(Debug, Clone, Copy)]
pub struct TitleConfig {
    /// A title call that has not answered by then has failed.
    pub timeout: Duration,
    /// Title calls in flight at most on a replica; past it a chat gets none.
    pub max_in_flight: usize,
}

impl Default for TitleConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_in_flight: 256,
        }
    }
}

/// A replica's title generator. Cheap to clone.
#[derive(Clone)]
pub struct Titles {
    inner: Arc<Inner>,
}

struct Inner {
    ops: ChatOps,
    catalog: Arc<ModelCatalog>,
    config: TitleConfig,
    in_flight: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
    outcomes: Counter<u64>,
}

impl Titles {
    /// A generator writing through `ops`, calling models of `catalog`; its
    /// calls run on `tracker` and stop on `stop`.
    pub fn new(
        ops: ChatOps,
        catalog: Arc<ModelCatalog>,
        config: TitleConfig,
        tracker: TaskTracker,
        stop: CancellationToken,
        meter: &Meter,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ops,
                catalog,
                in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
                config,
                tracker,
                stop,
                outcomes: meter
                    .u64_counter("chatd_titles")
                    .with_description("Generated titles, by outcome")
                    .build(),
            }),
        }
    }

    /// Starts making chat `chat_id`'s title from its first message
    /// (`content`) with the title model, else `chat_model`; returns at once.
    pub fn generate(&self, chat_id: ChatId, chat_model: Arc<ResolvedModel>, content: &[Part]) {
        let Ok(permit) = self.inner.in_flight.clone().try_acquire_owned() else {
            self.inner.count("skipped");
            return;
        };
        let text: String = joined_text(content)
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect();
        if text.trim().is_empty() {
            self.inner.count("empty");
            return;
        }
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = inner.stop.cancelled() => {}
                _ = inner.generate(chat_id, chat_model, text) => {}
            }
        });
    }
}

impl Inner {
    fn count(&self, outcome: &'static str) {
        self.outcomes.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    async fn generate(&self, chat_id: ChatId, chat_model: Arc<ResolvedModel>, text: String) {
        let model = match self.catalog.resolve_title_model().await {
            Ok(Some(model)) => model,
            Ok(None) => chat_model,
            Err(error) => {
                tracing::warn!(%chat_id, %error, "the title model cannot be used; the chat's model writes the title");
                chat_model
            }
        };
        let prompt = Prompt {
            model: model.config.model.clone(),
            system: Some(INSTRUCTIONS.to_owned()),
            messages: vec![PromptMessage {
                role: MessageRole::User,
                content: vec![Part::text(text)],
            }],
            tools: Vec::new(),
            max_output_tokens: TITLE_MAX_TOKENS,
            options: model.config.options.clone(),
            files: Default::default(),
        };
        let answer = match tokio::time::timeout(
            self.config.timeout,
            model.provider.complete(&prompt),
        )
        .await
        {
            Ok(Ok(completion)) => completion.text,
            Ok(Err(error)) => {
                tracing::info!(%chat_id, %error, "title generation failed");
                return self.count("failed");
            }
            Err(_) => {
                tracing::info!(%chat_id, timeout = ?self.config.timeout, "title generation timed out");
                return self.count("failed");
            }
        };
        let Some(title) = clean(&answer) else {
            return self.count("empty");
        };
        match self.ops.set_generated_title(chat_id, &title).await {
            Ok(TitleOutcome::Set) => self.count("generated"),
            Ok(TitleOutcome::Kept) => self.count("user_title"),
            Err(error) => {
                tracing::warn!(%chat_id, error = %chatd_shared::error_chain::Chain(&error), "storing a generated title failed");
                self.count("failed");
            }
        }
    }
}

/// A model's answer as a title: its first non-empty line, without a
/// `Title:` label, quotes, markdown emphasis or final punctuation, white
/// space collapsed, cut to 8 words and 80 characters (at a word boundary).
/// `None` when nothing is left.
pub fn clean(answer: &str) -> Option<String> {
    const QUOTES: &[char] = &['"', '\'', '`', '“', '”', '‘', '’', '«', '»', '*', '#', '_'];
    let line = answer
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())?;
    let line = line
        .strip_prefix("Title:")
        .or_else(|| line.strip_prefix("title:"))
        .unwrap_or(line);
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|word| word.trim_matches(QUOTES))
        .filter(|word| !word.is_empty())
        .take(MAX_WORDS)
        .collect();
    let mut title = String::new();
    for word in words {
        let extra = usize::from(!title.is_empty()) + word.chars().count();
        if title.chars().count() + extra > MAX_CHARS {
            break;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    let title = title.trim_end_matches(['.', '!', ':', ';', ',']).trim_end();
    (!title.is_empty()).then(|| title.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_cleaned_into_titles() {
        assert_eq!(
            clean("\"Fixing the login bug.\"").as_deref(),
            Some("Fixing the login bug")
        );
        assert_eq!(
            clean("Title: **Paris trip**\nMore text").as_deref(),
            Some("Paris trip")
        );
        assert_eq!(
            clean("one two three four five six seven eight nine ten").as_deref(),
            Some("one two three four five six seven eight")
        );
        assert_eq!(clean("  \n \"\" ").as_deref(), None);
        let long = "supercalifragilistic ".repeat(8);
        let title = clean(&long).expect("a title");
        assert!(title.chars().count() <= MAX_CHARS, "{title}");
        assert_eq!(title.split(' ').count(), 3);
    }
}
