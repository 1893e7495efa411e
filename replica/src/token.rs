//! `chatd token create`: bootstrap the first admin (DESIGN §10).

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
    let role = if args.admin {
        UserRole::Admin
    } else {
        UserRole::Member
    };
    let mut user = users::upsert_by_username(&client, username, role)
        .await
        .with_context(|| {
            format!("creating user {username:?} (has {target} been migrated? run chatd migrate)")
        })?;
    if args.admin && user.role != UserRole::Admin {
        users::set_role(&client, user.id, UserRole::Admin)
            .await
            .context("promoting the user")?;
        user.role = UserRole::Admin;
    }
    let secret = auth_token::generate();
    let hash = auth_token::hash(&secret);
    let prefix = auth_token::display_prefix(&secret);
    tokens::insert(
        &client,
        &tokens::NewApiToken {
            user_id: user.id,
            name: &args.name,
            token_hash: &hash,
            prefix: &prefix,
            expires_at: None,
        },
    )
    .await
    .context("storing the token")?;
    eprintln!("token for {} ({}), shown once:", user.username, user.role);
    println!("{secret}");
    Ok(())
}
