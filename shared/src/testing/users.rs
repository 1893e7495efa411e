//! Users with API tokens, for tests and benchmarks that act as clients.

use crate::{
    auth_token,
    db::{tokens, users},
    ids::UserId,
    status::UserRole,
};

use super::TestDb;

/// Inserts a user named `name` with `role` and a token for them; returns
/// the user's id and the token's secret.
pub async fn user_with_token(db: &TestDb, name: &str, role: UserRole) -> (UserId, String) {
    let client = db.pool().get().await.expect("a database connection");
    let user = users::insert(&client, UserId::new_random(), name, role)
        .await
        .expect("insert user");
    let secret = auth_token::generate();
    tokens::insert(
        &client,
        &tokens::NewApiToken {
            user_id: user.id,
            name: "test",
            token_hash: &auth_token::hash(&secret),
            prefix: &auth_token::display_prefix(&secret),
            expires_at: None,
        },
    )
    .await
    .expect("insert token");
    (user.id, secret)
}

/// Gives `owner` a webhook for every chat of theirs (to a URL nobody
/// serves): what changes how their turns end.
pub async fn webhook_for(client: &impl crate::db::GenericClient, owner: UserId) {
    crate::db::webhooks::insert(
        client,
        &crate::db::webhooks::NewWebhook {
            id: crate::ids::WebhookId::new_random(),
            owner_id: owner,
            url: "https://example.com/hook",
            events: &["turn.completed".to_owned()],
            chat_id: None,
            secret: "s",
        },
    )
    .await
    .expect("insert webhook");
}
