//! What a turn reads when it starts (ARCHITECTURE.md §8, step 2), in one statement:
//! the messages the model sees and its owner's settings (custom prompt and
//! spend-limit override). The deployment's settings and the model come
//! from caches, so this is the one statement a turn's prompt costs, shared
//! by the runs that start together ([`Loads`], [`super::batched`]).

use std::sync::LazyLock;

use super::{DbResult, GenericClient, batched::BatchStatement, messages::Message};
use crate::ids::{ChatId, MessageId, UserId};

/// The prompt's inputs read from the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptContext {
    /// The owner's custom prompt ("" when none).
    pub user_prompt: String,
    /// The owner's spend limit override, in micro-dollars per period
    /// (`None`: the deployment's default applies).
    pub user_spend_limit: Option<i64>,
    /// Whether the owner had any webhook when this was read (a turn end
    /// without the outbox is tried first when not, see
    /// [`super::lifecycle::OwnerWebhooks`]).
    pub owner_webhooks: bool,
    /// What the model sees, in id order: live messages visible to the
    /// model that were not folded into a compaction summary (so the latest
    /// summary and what followed it).
    pub history: Vec<Message>,
}

/// `m.`-qualified message columns.
fn message_columns() -> String {
    super::messages::COLUMNS
        .split(',')
        .map(|column| format!("m.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The prompt contexts of many chats: for each chat one row with its
/// owner's settings (message columns null), then a row per message with the
/// settings null. The settings are read once per chat, not once per message:
/// repeated on every row, a 2 KB custom prompt doubled the read of an
/// 800-message history, and the webhook probe ran per message. The `LATERAL`
/// subquery reads each chat's messages on its own (`OFFSET 0` keeps it from
/// being flattened into a join that could scan every chat's messages);
/// nothing is sorted here, [`load_each`] puts each history in id order
/// (cheaper than two sorts of wide rows in the server: a long history is
/// most of what this reads).
static LOAD_EACH: LazyLock<String> = LazyLock::new(|| {
    // A union's columns are named by its first branch.
    let nulls = super::messages::COLUMNS
        .split(',')
        .map(|column| format!("NULL AS {}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH w AS (
             SELECT * FROM {wants} AS w(chat_id, user_id, want)
         )
         SELECT w.want, s.custom_prompt AS owner_prompt, s.spend_limit_micros AS owner_limit,
                EXISTS (SELECT 1 FROM webhooks h WHERE h.owner_id = w.user_id) AS owner_webhooks,
                {nulls}
         FROM w LEFT JOIN user_settings s ON s.user_id = w.user_id
         UNION ALL
         SELECT w.want, NULL, NULL, NULL, {columns}
         FROM w CROSS JOIN LATERAL (
             SELECT * FROM chat_messages
             WHERE chat_id = w.chat_id AND NOT deleted AND NOT compacted AND visibility <> 'user'
             OFFSET 0
         ) m",
        columns = message_columns(),
        wants = super::batched::numbered_wants(&["$1::uuid[]", "$2::uuid[]"]),
    )
});

/// Reads chat `chat_id`'s prompt context; `owner` is its owner.
pub async fn load(
    db: &impl GenericClient,
    chat_id: ChatId,
    owner: UserId,
) -> DbResult<PromptContext> {
    Ok(load_each(db, &[(chat_id, owner)])
        .await?
        .pop()
        .unwrap_or_default())
}

/// [`load`] for each `(chat, owner)` of `wants`, in one statement; one
/// context per want, in the order of `wants`.
pub async fn load_each(
    db: &impl GenericClient,
    wants: &[(ChatId, UserId)],
) -> DbResult<Vec<PromptContext>> {
    let mut contexts = vec![PromptContext::default(); wants.len()];
    if wants.is_empty() {
        return Ok(contexts);
    }
    let chats: Vec<ChatId> = wants.iter().map(|(chat, _)| *chat).collect();
    let owners: Vec<UserId> = wants.iter().map(|(_, owner)| *owner).collect();
    let stmt = db.prepare_cached(&LOAD_EACH).await?;
    for row in db.query(&stmt, &[&chats, &owners]).await? {
        if let Some(context) = super::batched::answer_of(&mut contexts, &row)? {
            context.add(&row)?;
        }
    }
    for context in &mut contexts {
        context.history.sort_unstable_by_key(|message| message.id);
    }
    Ok(contexts)
}

impl PromptContext {
    /// Takes in one row of [`LOAD_EACH`]: a message, or the chat's one row
    /// of owner settings (no message id).
    fn add(&mut self, row: &tokio_postgres::Row) -> DbResult<()> {
        if row.try_get::<_, Option<MessageId>>("id")?.is_some() {
            self.history.push(Message::from_row(row)?);
            return Ok(());
        }
        if let Some(prompt) = row.try_get::<_, Option<String>>("owner_prompt")? {
            self.user_prompt = prompt;
        }
        self.user_spend_limit = row.try_get("owner_limit")?;
        self.owner_webhooks = row.try_get("owner_webhooks")?;
        Ok(())
    }
}

/// Prompt contexts as a batched read ([`super::batched`]): the runs a claim
/// starts together read their prompts in one statement.
pub struct Loads;

impl BatchStatement for Loads {
    type Want = (ChatId, UserId);
    type Got = PromptContext;
    const WRITES: bool = false;

    async fn run_each(
        client: &deadpool_postgres::Client,
        wants: &[Self::Want],
    ) -> DbResult<Vec<Self::Got>> {
        load_each(client, wants).await
    }
}
