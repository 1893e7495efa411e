//! Spend reservations in the turn loop (ARCHITECTURE.md §17, invariant 15): before
//! each model call (a step's, or a compaction summary's) the run reserves
//! what the call may cost: the input it reads at the input price and its
//! whole output cap at the output price. The step's commit replaces the
//! reservation with the real cost. A call that cannot reserve is not made:
//! the turn ends in `error` with `spend_limit_exceeded`.

use chatd_shared::db::lifecycle::TurnEnd;

use super::{Loaded, TurnRunner, cost};
use crate::{
    llm::{Prompt, PromptMessage},
    operations::{Reserved, SpendRefusal},
    runtime::{RunContext, RunError},
};

/// Bytes per token when counting text nobody reported yet: fewer than
/// common tokenizers average, so estimates err high.
const BYTES_PER_TOKEN: usize = 3;

/// The input tokens of `loaded`'s next call: the input and output the
/// provider reported for the latest call, plus the messages after it; the
/// whole prompt when nothing was reported since it was loaded or compacted.
pub(super) fn input_tokens(loaded: &Loaded) -> i64 {
    match loaded.state.reported {
        Some(reported) => {
            let after = loaded
                .prompt
                .messages
                .get(reported.covered..)
                .unwrap_or_default();
            reported.input_tokens + reported.output_tokens + unreported(after)
        }
        None => prompt_tokens(&loaded.prompt),
    }
}

/// The input tokens of `prompt` as a whole, none of it reported yet: its
/// system prompt, tools and messages.
pub(super) fn prompt_tokens(prompt: &Prompt) -> i64 {
    let system = prompt.system.as_deref().map_or(0, str::len);
    let tools: usize = prompt
        .tools
        .iter()
        .map(|tool| tool.name.len() + tool.description.len() + tool.parameters.to_string().len())
        .sum();
    unreported(&prompt.messages) + tokens(system + tools)
}

/// Estimated tokens of messages no provider counted yet.
fn unreported(messages: &[PromptMessage]) -> i64 {
    let bytes = messages
        .iter()
        .map(|message| serde_json::to_string(&message.content).map_or(0, |content| content.len()))
        .sum();
    tokens(bytes)
}

fn tokens(bytes: usize) -> i64 {
    i64::try_from(bytes.div_ceil(BYTES_PER_TOKEN)).unwrap_or(i64::MAX)
}

impl TurnRunner {
    /// Reserves the cost of a call reading `input_tokens` on `loaded`'s
    /// model; `Some` end of the turn when the limit refuses it.
    pub(super) async fn reserve(
        &self,
        run: &mut RunContext,
        loaded: &Loaded,
        input_tokens: i64,
    ) -> Result<Option<TurnEnd>, RunError> {
        let estimate = cost::estimate_micros(&loaded.model.config, input_tokens);
        match run
            .reserve_spend(loaded.state.spend_override, estimate)
            .await?
        {
            Reserved::Unlimited | Reserved::Reserved => Ok(None),
            Reserved::OverLimit(refusal) => {
                self.metrics.spend_refusal();
                tracing::info!(chat_id = %run.fence().chat_id, estimate, limit = refusal.limit_micros, spent = refusal.spent_micros, "spend limit refused a model call");
                Ok(Some(TurnEnd::Refused {
                    code: SpendRefusal::CODE.to_owned(),
                    message: refusal.message(),
                }))
            }
            // The run context stopped the run already.
            Reserved::OwnershipLost => Err(RunError::OwnershipLost),
        }
    }
}
