//! The deployment's system prompt (`deployment_settings.system_prompt`)
//! and each user's custom prompt (`user_settings.custom_prompt`): the first
//! two of the three system prompts every model call gets (ARCHITECTURE.md §17). The
//! third is the chat's own (`chats.system_prompt`).

use super::{DbResult, GenericClient};
use crate::ids::UserId;

/// The deployment-wide system prompt ("" when none).
pub async fn deployment(db: &impl GenericClient) -> DbResult<String> {
    let stmt = db
        .prepare_cached("SELECT system_prompt FROM deployment_settings")
        .await?;
    Ok(db.query_one(&stmt, &[]).await?.try_get(0)?)
}

/// Replaces the deployment-wide system prompt.
pub async fn set_deployment(db: &impl GenericClient, prompt: &str) -> DbResult<()> {
    let stmt = db
        .prepare_cached("UPDATE deployment_settings SET system_prompt = $1, updated_at = now()")
        .await?;
    db.execute(&stmt, &[&prompt]).await?;
    Ok(())
}

/// `user`'s custom prompt ("" when none).
pub async fn user(db: &impl GenericClient, user: UserId) -> DbResult<String> {
    let stmt = db
        .prepare_cached(
            "SELECT coalesce((SELECT custom_prompt FROM user_settings WHERE user_id = $1), '')",
        )
        .await?;
    Ok(db.query_one(&stmt, &[&user]).await?.try_get(0)?)
}

/// Replaces `user`'s custom prompt; `false` when the user does not exist.
pub async fn set_user(db: &impl GenericClient, user: UserId, prompt: &str) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "INSERT INTO user_settings (user_id, custom_prompt)
             SELECT id, $2 FROM users WHERE id = $1
             ON CONFLICT (user_id) DO UPDATE SET custom_prompt = EXCLUDED.custom_prompt,
                 updated_at = now()",
        )
        .await?;
    Ok(db.execute(&stmt, &[&user, &prompt]).await? == 1)
}
