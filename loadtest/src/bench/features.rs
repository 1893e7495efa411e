//! `bench --features`: the chat features of ARCHITECTURE.md §17 switched on before
//! the run, through the admin API, as an operator would: a deployment system
//! prompt and the user's own, prices on the default model (so every step's
//! cost is accounted), and titles by a second, cheaper model. With a spend
//! limit, every model call also reserves (one more statement per call).

use anyhow::Context;
use chatd_shared::{
    api::{CreateModelConfig, SpendLimits, UpdateModelConfig},
    client::Client,
    status::SpendPeriod,
};

/// Switches the features on for the user of `client` (an admin).
pub async fn switch_on(client: &Client, spend_limit_micros: Option<i64>) -> anyhow::Result<()> {
    client
        .set_system_prompt("You are chatd's load test model. Answer briefly.")
        .await
        .context("setting the deployment's system prompt")?;
    client
        .set_my_prompt("The user is a load test: plain words suit it.")
        .await
        .context("setting the user's prompt")?;
    let models = client
        .list_model_configs()
        .await
        .context("listing the model configs")?;
    let default = models
        .iter()
        .find(|model| model.is_default)
        .context("no default model to price")?;
    let prices = UpdateModelConfig {
        price_input_micros_per_mtok: Some(Some(3_000_000)),
        price_output_micros_per_mtok: Some(Some(15_000_000)),
        price_cache_read_micros_per_mtok: Some(Some(300_000)),
        ..UpdateModelConfig::default()
    };
    client
        .update_model_config(default.id, &prices)
        .await
        .context("pricing the default model")?;
    let titles = CreateModelConfig {
        provider_id: default.provider_id,
        model: format!("{}-titles", default.model),
        display_name: Some("Titles".into()),
        enabled: None,
        is_default: None,
        use_for_titles: Some(true),
        context_limit: default.context_limit,
        compaction_threshold_pct: None,
        max_output_tokens: Some(64),
        price_input_micros_per_mtok: Some(150_000),
        price_output_micros_per_mtok: Some(600_000),
        price_cache_read_micros_per_mtok: None,
        price_cache_write_micros_per_mtok: None,
        options: None,
    };
    client
        .create_model_config(&titles)
        .await
        .context("adding the title model")?;
    if let Some(limit) = spend_limit_micros {
        let limits = SpendLimits {
            default_limit_micros: Some(limit),
            period: SpendPeriod::Month,
        };
        client
            .set_spend_limits(&limits)
            .await
            .context("setting the spend limit")?;
    }
    Ok(())
}
