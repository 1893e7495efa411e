//! `api_tokens`: bearer tokens, stored as SHA-256 hashes.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient, users::User};
use crate::ids::{TokenId, UserId};

/// A row of `api_tokens` (never the secret itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Its id.
    pub id: TokenId,
    /// The user it authenticates.
    pub user_id: UserId,
    /// A label chosen by whoever made it.
    pub name: String,
    /// SHA-256 of the secret.
    pub token_hash: Vec<u8>,
    /// The first characters of the secret, to recognise it in listings.
    pub prefix: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Roughly when it was last used (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// After this it no longer authenticates.
    pub expires_at: Option<DateTime<Utc>>,
    /// Set when revoked; it no longer authenticates.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            token_hash: row.try_get("token_hash")?,
            prefix: row.try_get("prefix")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

const COLUMNS: &str =
    "id, user_id, name, token_hash, prefix, created_at, last_used_at, expires_at, revoked_at";

/// What [`insert`] stores.
#[derive(Debug, Clone)]
pub struct NewApiToken<'a> {
    /// The user it authenticates.
    pub user_id: UserId,
    /// A label.
    pub name: &'a str,
    /// SHA-256 of the secret.
    pub token_hash: &'a [u8],
    /// The secret's first characters.
    pub prefix: &'a str,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores a token.
pub async fn insert(db: &impl GenericClient, token: &NewApiToken<'_>) -> DbResult<ApiToken> {
    let sql = format!(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &TokenId::new_random(),
                &token.user_id,
                &token.name,
                &token.token_hash,
                &token.prefix,
                &token.expires_at,
            ],
        )
        .await?;
    ApiToken::from_row(&row)
}

/// The token with this hash and its user, if it is neither revoked nor expired.
pub async fn find_active(
    db: &impl GenericClient,
    token_hash: &[u8],
) -> DbResult<Option<(ApiToken, User)>> {
    let stmt = db
        .prepare_cached(
            "SELECT t.id, t.user_id, t.name, t.token_hash, t.prefix, t.created_at,
                    t.last_used_at, t.expires_at, t.revoked_at,
                    u.username, u.role, u.created_at AS user_created_at
             FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL
               AND (t.expires_at IS NULL OR t.expires_at > now())",
        )
        .await?;
    let Some(row) = db.query_opt(&stmt, &[&token_hash]).await? else {
        return Ok(None);
    };
    let token = ApiToken::from_row(&row)?;
    let user = User {
        id: token.user_id,
        username: row.try_get("username")?,
        role: row.try_get("role")?,
        created_at: row.try_get("user_created_at")?,
    };
    Ok(Some((token, user)))
}

/// Records a use, unless one was recorded in the last minute (so a busy token
/// costs one write a minute, not one per request). Returns whether it wrote.
pub async fn touch_last_used(db: &impl GenericClient, id: TokenId) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "UPDATE api_tokens SET last_used_at = now()
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
        .await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}

/// Revokes a token. Returns false when it did not exist or was revoked already.
pub async fn revoke(db: &impl GenericClient, id: TokenId) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}

/// A user's tokens, newest first.
pub async fn list_for_user(db: &impl GenericClient, user_id: UserId) -> DbResult<Vec<ApiToken>> {
    let sql =
        format!("SELECT {COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC, id");
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[&user_id])
        .await?
        .iter()
        .map(ApiToken::from_row)
        .collect()
}

/// Revokes `user_id`'s token `id`. Returns false when the user has no such
/// token or it was revoked already (so one user's token id cannot revoke
/// another's).
pub async fn revoke_for_user(
    db: &impl GenericClient,
    user_id: UserId,
    id: TokenId,
) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "UPDATE api_tokens SET revoked_at = now()
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        )
        .await?;
    Ok(db.execute(&stmt, &[&id, &user_id]).await? == 1)
}
