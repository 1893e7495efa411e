//! Users and their API tokens: who may call the API. A change that can
//! end a login (a revoked token) is announced as [`Change::TokensChanged`],
//! so each replica's token cache forgets what it trusted.

use chatd_shared::{
    auth_token,
    db::{
        DbError, Pool,
        tokens::{self, ApiToken, NewApiToken},
        users::{self, User},
    },
    ids::{TokenId, UserId},
    pubsub::PubSub,
    status::UserRole,
};
use chrono::{DateTime, Utc};

use super::{Change, announce, is_foreign_key_violation};

/// What [`Accounts::create_user`] did.
#[derive(Debug, Clone)]
pub enum CreateUserOutcome {
    /// Created.
    Created(User),
    /// Another user has this name.
    UsernameTaken,
}

/// What [`Accounts::create_token`] did.
#[derive(Debug, Clone)]
pub enum CreateTokenOutcome {
    /// Created: the secret (shown this once; only its hash is stored) and
    /// the stored row.
    Created {
        /// `chatd_…`, for `Authorization: Bearer`.
        secret: String,
        /// The stored row.
        token: Box<ApiToken>,
    },
    /// No such user.
    UserNotFound,
}

/// The transitions of users and tokens, each announced. Cheap to clone (a
/// pool and a pubsub handle).
#[derive(Clone)]
pub struct Accounts {
    pool: Pool,
    pubsub: PubSub,
}

impl Accounts {
    /// Operations on `pool`'s database, announced through `pubsub`.
    pub fn new(pool: Pool, pubsub: PubSub) -> Self {
        Self { pool, pubsub }
    }

    /// Every user, by username.
    pub async fn users(&self) -> Result<Vec<User>, DbError> {
        let client = self.pool.get().await?;
        users::list(&client).await
    }

    /// User `id`, if it exists.
    pub async fn user(&self, id: UserId) -> Result<Option<User>, DbError> {
        let client = self.pool.get().await?;
        users::get(&client, id).await
    }

    /// Creates a user (with no token yet), unless the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        role: UserRole,
    ) -> Result<CreateUserOutcome, DbError> {
        let client = self.pool.get().await?;
        match users::insert(&client, UserId::new_random(), username, role).await {
            Ok(user) => Ok(CreateUserOutcome::Created(user)),
            Err(error) if error.is_unique_violation() => Ok(CreateUserOutcome::UsernameTaken),
            Err(error) => Err(error),
        }
    }

    /// User `id`'s tokens, newest first, revoked ones included; `None` when
    /// there is no such user.
    pub async fn tokens(&self, id: UserId) -> Result<Option<Vec<ApiToken>>, DbError> {
        let client = self.pool.get().await?;
        if users::get(&client, id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(tokens::list_for_user(&client, id).await?))
    }

    /// Creates a token for user `user_id`, labelled `name`, working until
    /// `expires_at` (or for good).
    pub async fn create_token(
        &self,
        user_id: UserId,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<CreateTokenOutcome, DbError> {
        let secret = auth_token::generate();
        let new = NewApiToken {
            user_id,
            name,
            token_hash: &auth_token::hash(&secret),
            prefix: &auth_token::display_prefix(&secret),
            expires_at,
        };
        let client = self.pool.get().await?;
        match tokens::insert(&client, &new).await {
            Ok(token) => Ok(CreateTokenOutcome::Created {
                secret,
                token: Box::new(token),
            }),
            Err(error) if is_foreign_key_violation(&error) => Ok(CreateTokenOutcome::UserNotFound),
            Err(error) => Err(error),
        }
    }

    /// Revokes user `user_id`'s token `token_id`; false when the user has no
    /// such token or it was revoked already. Announces the change.
    pub async fn revoke_token(&self, user_id: UserId, token_id: TokenId) -> Result<bool, DbError> {
        let revoked = {
            let client = self.pool.get().await?;
            tokens::revoke_for_user(&client, user_id, token_id).await?
        };
        if revoked {
            announce::announce(&self.pubsub, [Change::TokensChanged]);
        }
        Ok(revoked)
    }

    /// The token whose secret hashes to `hash` and its user, if the token is
    /// neither revoked nor expired.
    pub async fn login(&self, hash: &[u8]) -> Result<Option<(ApiToken, User)>, DbError> {
        let client = self.pool.get().await?;
        tokens::find_active(&client, hash).await
    }

    /// Records a use of token `id` (at most one write a minute per token).
    pub async fn touch(&self, id: TokenId) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        tokens::touch_last_used(&client, id).await.map(drop)
    }
}
