//! `chatd migrate`: apply the schema and exit.

use anyhow::Context;
use chatd_shared::db::{Target, connect_dedicated, pool::parse_url};

use crate::cli::MigrateArgs;

/// Connects to the database and applies every missing migration.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let config = parse_url(&args.database_url).context("CHATD_DATABASE_URL")?;
    let target = Target(&config).to_string();
    let (mut client, _connection) = connect_dedicated(&args.database_url)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let report = chatd_migrations::migrate(&mut client)
        .await
        .with_context(|| format!("migrating {target}"))?;
    if report.applied.is_empty() {
        println!("{target}: schema up to date");
    } else {
        println!("{target}: applied {}", report.applied.join(", "));
    }
    Ok(())
}
