//! `chatd migrate` as an operator runs it: exit status and what it prints.

use std::process::{Command, Output};

use chatd_shared::testing::{PASSWORD_ROLE, TestDb, cluster};

fn chatd_migrate(url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("migrate")
        .env("CHATD_DATABASE_URL", url)
        .env("CHATD_LOG", "error")
        .output()
        .expect("run chatd")
}

fn stderr_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(
        stderr.lines().count(),
        1,
        "exactly one line on stderr: {stderr:?}"
    );
    stderr
}

#[tokio::test]
async fn migrate_applies_the_schema_then_reports_it_up_to_date() {
    let db = TestDb::new_empty().await;
    let url = db.url().to_owned();
    let first = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chatd_migrate(&url)
    })
    .await
    .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied 0001_core_schema.sql"));
    let second = tokio::task::spawn_blocking(move || chatd_migrate(&url))
        .await
        .unwrap();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("schema up to date"));
}

#[test]
fn unreachable_server_names_host_and_port() {
    let port = chatd_shared::pg_server::free_port().unwrap();
    let output = chatd_migrate(&format!(
        "postgres://chatd:s3cret-pw@127.0.0.1:{port}/chatd"
    ));
    assert!(!output.status.success());
    let line = stderr_line(&output);
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(!line.contains("s3cret-pw"), "password leaked: {line}");
}

#[test]
fn malformed_url_is_refused_without_echoing_it() {
    let output = chatd_migrate("postgres://chatd:s3cret-pw@127.0.0.1:notaport/chatd");
    assert!(!output.status.success());
    let line = stderr_line(&output);
    assert!(line.contains("CHATD_DATABASE_URL"), "{line}");
    assert!(!line.contains("s3cret-pw"), "password leaked: {line}");
}

#[tokio::test]
async fn wrong_password_is_reported_with_host_and_port() {
    if !cluster().can_restart() {
        return; // password roles exist only on the private cluster
    }
    let db = TestDb::new_empty().await;
    db.connect()
        .await
        .batch_execute(&format!("DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right'; EXCEPTION WHEN duplicate_object THEN NULL; END $$"))
        .await
        .unwrap();
    let base = cluster().url(db.name());
    let url = base.replacen(
        "postgres://postgres@",
        &format!("postgres://{PASSWORD_ROLE}:wrong-pw-123@"),
        1,
    );
    let output = tokio::task::spawn_blocking(move || chatd_migrate(&url))
        .await
        .unwrap();
    assert!(!output.status.success());
    let line = stderr_line(&output);
    assert!(line.contains("password authentication failed"), "{line}");
    let port = base
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(!line.contains("wrong-pw-123"), "password leaked: {line}");
}
