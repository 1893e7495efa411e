//! How the mock answers requests that carry no directive.

use std::time::Duration;

/// Server-wide defaults: reply length, pacing, seed and random failure rates.
/// A directive overrides them for its own conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Words in a random reply.
    pub tokens: usize,
    /// Pause between two streamed events.
    pub token_delay: Duration,
    /// Pause before the first streamed chunk (time to first token).
    pub ttft: Duration,
    /// Seeds every random choice; the same seed and request give the same reply.
    pub seed: u64,
    /// Chance that a random reply is one call to a random offered tool
    /// (only when tools are offered and the last message is not a tool result).
    pub tool_call_probability: f64,
    /// Chance that a request without directive gets a 429.
    pub error_rate_429: f64,
    /// Chance that a request without directive gets a 500.
    pub error_rate_500: f64,
    /// Chance that a streamed reply without directive is cut mid-stream.
    pub cut_rate: f64,
    /// When set, requests must carry this key (`Authorization: Bearer` for
    /// OpenAI, `x-api-key` for Anthropic) or get a 401.
    pub require_api_key: Option<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            tokens: 20,
            token_delay: Duration::ZERO,
            ttft: Duration::ZERO,
            seed: 0,
            tool_call_probability: 0.0,
            error_rate_429: 0.0,
            error_rate_500: 0.0,
            cut_rate: 0.0,
            require_api_key: None,
        }
    }
}

/// A [`Behaviour`] that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBehaviour {
    /// A probability is not within 0..=1.
    #[error("{name} must be between 0 and 1, got {value}")]
    Probability {
        /// The field's name.
        name: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// The failure rates add up to more than 1.
    #[error("error_rate_429 + error_rate_500 + cut_rate must not exceed 1, got {0}")]
    RatesExceedOne(f64),
}

impl Behaviour {
    /// Checks the probabilities; the engine refuses an invalid behaviour.
    pub fn validate(&self) -> Result<(), InvalidBehaviour> {
        for (name, value) in [
            ("tool_call_probability", self.tool_call_probability),
            ("error_rate_429", self.error_rate_429),
            ("error_rate_500", self.error_rate_500),
            ("cut_rate", self.cut_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(InvalidBehaviour::Probability { name, value });
            }
        }
        let failures = self.error_rate_429 + self.error_rate_500 + self.cut_rate;
        if failures > 1.0 {
            return Err(InvalidBehaviour::RatesExceedOne(failures));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Behaviour::default().validate(), Ok(()));
    }

    #[test]
    fn out_of_range_and_nan_probabilities_are_rejected() {
        for value in [-0.1, 1.5, f64::NAN] {
            let behaviour = Behaviour {
                cut_rate: value,
                ..Behaviour::default()
            };
            assert!(behaviour.validate().is_err(), "{value} accepted");
        }
    }

    #[test]
    fn failure_rates_must_not_sum_above_one() {
        let behaviour = Behaviour {
            error_rate_429: 0.6,
            error_rate_500: 0.6,
            ..Behaviour::default()
        };
        assert!(matches!(
            behaviour.validate(),
            Err(InvalidBehaviour::RatesExceedOne(_))
        ));
    }
}
