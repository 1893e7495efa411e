//! What a turn reads when it starts (ARCHITECTURE.md §8, step 2), in one statement:
//! the messages the model sees and its owner's settings (custom prompt and
//! spend-limit override). The deployment's settings and the model come
//! from caches, so this is the one statement a turn's prompt costs.

use std::sync::LazyLock;

use super::{DbResult, GenericClient, messages::Message};
use crate::ids::{ChatId, MessageId, UserId};

/// The prompt's inputs read from the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptContext {
    /// The owner's custom prompt ("" when none).
    pub user_prompt: String,
    /// The owner's spend limit override, in micro-dollars per period
    /// (`None`: the deployment's default applies).
    pub user_spend_limit: Option<i64>,
    /// What the model sees, in id order: live messages visible to the
    /// model that were not folded into a compaction summary (so the latest
    /// summary and what followed it).
    pub history: Vec<Message>,
}

static LOAD: LazyLock<String> = LazyLock::new(|| {
    let columns = super::messages::COLUMNS
        .split(',')
        .map(|column| format!("m.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT s.custom_prompt AS owner_prompt, s.spend_limit_micros AS owner_limit, {columns}
         FROM (SELECT $2::uuid AS user_id) o
         LEFT JOIN user_settings s ON s.user_id = o.user_id
         LEFT JOIN chat_messages m ON m.chat_id = $1 AND NOT m.deleted AND NOT m.compacted
                                  AND m.visibility <> 'user'
         ORDER BY m.id"
    )
});

/// Reads chat `chat_id`'s prompt context; `owner` is its owner.
pub async fn load(
    db: &impl GenericClient,
    chat_id: ChatId,
    owner: UserId,
) -> DbResult<PromptContext> {
    let stmt = db.prepare_cached(&LOAD).await?;
    let rows = db.query(&stmt, &[&chat_id, &owner]).await?;
    let mut context = PromptContext::default();
    for row in &rows {
        if let Some(prompt) = row.try_get::<_, Option<String>>("owner_prompt")? {
            context.user_prompt = prompt;
        }
        context.user_spend_limit = row.try_get("owner_limit")?;
        if row.try_get::<_, Option<MessageId>>("id")?.is_some() {
            context.history.push(Message::from_row(row)?);
        }
    }
    Ok(context)
}
