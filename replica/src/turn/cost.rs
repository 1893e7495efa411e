//! What a model call costs (ARCHITECTURE.md §17, "Cost"): micro-dollars from the
//! model config's prices per million tokens, rounded up once for the call.

use chatd_shared::{db::model_configs::ModelConfig, parts::Usage};

/// A million, the unit prices are per.
const MTOK: i128 = 1_000_000;

/// Cost of a call with `usage` on `model`, in micro-dollars, rounded up;
/// `None` when the model has neither an input nor an output price.
///
/// Input tokens include cache reads and writes (every provider's usage is
/// read that way), which are priced on their own: at the cache prices, or
/// at the input price when the model has none. Output tokens include
/// reasoning tokens (both wire formats count them in the output), so
/// reasoning is priced as output. Missing counts count as zero.
pub fn cost_micros(model: &ModelConfig, usage: &Usage) -> Option<i64> {
    if model.price_input_micros_per_mtok.is_none() && model.price_output_micros_per_mtok.is_none() {
        return None;
    }
    let price = |price: Option<i64>| i128::from(price.unwrap_or(0));
    let tokens = |count: Option<i64>| i128::from(count.unwrap_or(0).max(0));
    let cache_read = tokens(usage.cache_read_tokens);
    let cache_write = tokens(usage.cache_write_tokens);
    let uncached = (tokens(usage.input_tokens) - cache_read - cache_write).max(0);
    let input = model.price_input_micros_per_mtok;
    let total = uncached * price(input)
        + tokens(usage.output_tokens) * price(model.price_output_micros_per_mtok)
        + cache_read * price(model.price_cache_read_micros_per_mtok.or(input))
        + cache_write * price(model.price_cache_write_micros_per_mtok.or(input));
    Some(round_up(total))
}

/// The most a call of `input_tokens` may cost on `model` if it writes its
/// whole output cap: what a run reserves before it (ARCHITECTURE.md §17, "Spend
/// limits"). Zero when the model is unpriced.
pub fn estimate_micros(model: &ModelConfig, input_tokens: i64) -> i64 {
    let price = |price: Option<i64>| i128::from(price.unwrap_or(0));
    let total = i128::from(input_tokens.max(0)) * price(model.price_input_micros_per_mtok)
        + i128::from(model.max_output_tokens.max(0)) * price(model.price_output_micros_per_mtok);
    round_up(total)
}

/// Micro-dollars per million tokens × tokens, in micro-dollars, rounded up.
fn round_up(total: i128) -> i64 {
    i64::try_from((total + MTOK - 1).div_euclid(MTOK)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(prices: [Option<i64>; 4]) -> ModelConfig {
        ModelConfig {
            id: chatd_shared::ids::ModelConfigId::new_random(),
            provider_id: chatd_shared::ids::ProviderId::new_random(),
            model: "m".into(),
            display_name: "m".into(),
            enabled: true,
            is_default: false,
            use_for_titles: false,
            context_limit: 1000,
            compaction_threshold_pct: 70,
            max_output_tokens: 100,
            price_input_micros_per_mtok: prices[0],
            price_output_micros_per_mtok: prices[1],
            price_cache_read_micros_per_mtok: prices[2],
            price_cache_write_micros_per_mtok: prices[3],
            options: serde_json::json!({}),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            deleted_at: None,
        }
    }

    fn usage(input: i64, output: i64, read: i64, write: i64) -> Usage {
        Usage {
            input_tokens: Some(input),
            output_tokens: Some(output),
            reasoning_tokens: None,
            cache_read_tokens: Some(read),
            cache_write_tokens: Some(write),
        }
    }

    #[test]
    fn tokens_times_prices_rounded_up_once() {
        // $3 / $15 per million: 1,000 in and 100 out is 3,000 + 1,500 µ$.
        let priced = model([Some(3_000_000), Some(15_000_000), None, None]);
        assert_eq!(cost_micros(&priced, &usage(1000, 100, 0, 0)), Some(4500));
        // One token at $1 per million is one micro-dollar; a third of one rounds up.
        let cheap = model([Some(1_000_000), Some(0), None, None]);
        assert_eq!(cost_micros(&cheap, &usage(1, 0, 0, 0)), Some(1));
        let cheaper = model([Some(333_333), Some(0), None, None]);
        assert_eq!(cost_micros(&cheaper, &usage(1, 0, 0, 0)), Some(1));
        assert_eq!(cost_micros(&cheaper, &usage(3, 0, 0, 0)), Some(1));
        assert_eq!(cost_micros(&cheaper, &usage(4, 0, 0, 0)), Some(2));
    }

    #[test]
    fn cache_reads_and_writes_have_their_own_prices() {
        let priced = model([
            Some(3_000_000),
            Some(15_000_000),
            Some(300_000),
            Some(3_750_000),
        ]);
        // 1,000 input tokens: 600 uncached, 300 read, 100 written.
        let cost = cost_micros(&priced, &usage(1000, 0, 300, 100));
        assert_eq!(cost, Some(1800 + 90 + 375));
        // Without cache prices they cost what input costs.
        let plain = model([Some(3_000_000), Some(15_000_000), None, None]);
        assert_eq!(cost_micros(&plain, &usage(1000, 0, 300, 100)), Some(3000));
    }

    #[test]
    fn reasoning_is_priced_as_output() {
        let priced = model([Some(0), Some(10_000_000), None, None]);
        let mut thinking = usage(0, 50, 0, 0);
        thinking.reasoning_tokens = Some(40);
        assert_eq!(cost_micros(&priced, &thinking), Some(500));
    }

    #[test]
    fn unpriced_models_have_no_cost_and_reserve_nothing() {
        let unpriced = model([None, None, Some(1), Some(1)]);
        assert_eq!(cost_micros(&unpriced, &usage(1000, 100, 10, 10)), None);
        assert_eq!(estimate_micros(&unpriced, 1000), 0);
    }

    #[test]
    fn the_estimate_is_the_input_and_the_whole_output_cap() {
        let priced = model([Some(3_000_000), Some(15_000_000), None, None]);
        assert_eq!(estimate_micros(&priced, 1000), 3000 + 1500);
    }
}
