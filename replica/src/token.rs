//! `chatd token create`: bootstrap the first admin (ARCHITECTURE.md §10).

use anyhow::Context;
use chatd_shared::{
    auth_token,
    db::{DbConfig, Target, connect_pool, pool::parse_url, tokens, users},
    status::UserRole,
};

use crate::cli::TokenCreateArgs;

/// Creates the user if missing (promoting it with `--admin`), then a token;
/// the token is the last line of stdout.
pub async fn create(args: TokenCreateArgs) -> anyhow::Result<()> {
    let config = parse_url(&args.database_url).context("CHATD_DATABASE_URL")?;
    let target = Target(&config).to_string();
    let username = args.username.trim();
    if username.is_empty() || username.chars().count() > 64 {
        anyhow::bail!("--username must have 1 to 64 characters");
    }
    let mut database = DbConfig::new(args.database_url.clone());
    database.pool_size = 1;
    let pool = connect_pool(&database).context("CHATD_DATABASE_URL")?;
    let client = pool
        .get()
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let (user, secret) = issue(&client, username, args.admin, &args.name)
        .await
        .with_context(|| {
            format!("creating user {username:?} (has {target} been migrated? run chatd migrate)")
        })?;
    eprintln!("token for {} ({}), shown once:", user.username, user.role);
    println!("{secret}");
    Ok(())
}

/// Creates user `username` if missing (an admin with `admin`, promoting an
/// existing member), then a token labelled `label`; returns the user and the
/// token's secret.
pub async fn issue(
    client: &impl chatd_shared::db::GenericClient,
    username: &str,
    admin: bool,
    label: &str,
) -> Result<(users::User, String), chatd_shared::db::DbError> {
    let role = if admin {
        UserRole::Admin
    } else {
        UserRole::Member
    };
    let mut user = users::upsert_by_username(client, username, role).await?;
    if admin && user.role != UserRole::Admin {
        users::set_role(client, user.id, UserRole::Admin).await?;
        user.role = UserRole::Admin;
    }
    let secret = auth_token::generate();
    tokens::insert(
        client,
        &tokens::NewApiToken {
            user_id: user.id,
            name: label,
            token_hash: &auth_token::hash(&secret),
            prefix: &auth_token::display_prefix(&secret),
            expires_at: None,
        },
    )
    .await?;
    Ok((user, secret))
}
