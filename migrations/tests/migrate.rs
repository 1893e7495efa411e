//! The migration runner against a real PostgreSQL.

use chatd_migrations::{EMBEDDED, MigrateError, Migration, migrate, migrate_with};
use chatd_shared::testing::TestDb;

async fn recorded(db: &TestDb) -> Vec<(i32, String)> {
    let client = db.connect().await;
    client
        .query(
            "SELECT version, name FROM chatd_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("read chatd_schema_migrations")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn applies_to_an_empty_database_and_a_second_run_changes_nothing() {
    let db = TestDb::new_empty().await;
    let mut client = db.connect().await;

    let first = migrate(&mut client).await.expect("first run");
    let names: Vec<&str> = EMBEDDED.iter().map(|m| m.name).collect();
    assert_eq!(first.applied, names);

    let tables_before: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let second = migrate(&mut client).await.expect("second run");
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );
    let tables_after: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables_before, tables_after);
    assert_eq!(recorded(&db).await.len(), EMBEDDED.len());
    // The schema is really there.
    client
        .query("SELECT id, generation, worker_id FROM chats", &[])
        .await
        .expect("chats exists");
}

#[tokio::test]
async fn five_concurrent_runners_apply_each_migration_exactly_once() {
    let db = TestDb::new_empty().await;
    let mut runners = Vec::new();
    for _ in 0..5 {
        let mut client = db.connect().await;
        runners.push(tokio::spawn(async move { migrate(&mut client).await }));
    }
    let mut applied = Vec::new();
    for runner in runners {
        let report = runner.await.expect("runner task").expect("runner succeeds");
        applied.extend(report.applied);
    }
    applied.sort();
    let mut expected: Vec<&str> = EMBEDDED.iter().map(|m| m.name).collect();
    expected.sort();
    assert_eq!(
        applied, expected,
        "every migration applied by exactly one runner"
    );
    let rows = recorded(&db).await;
    assert_eq!(rows.len(), EMBEDDED.len());
}

#[tokio::test]
async fn a_changed_migration_is_reported_with_its_file_name() {
    let db = TestDb::new_empty().await;
    let mut client = db.connect().await;
    let original = [
        Migration {
            version: 1,
            name: "0001_widgets.sql",
            sql: "CREATE TABLE widgets (id int)",
        },
        Migration {
            version: 2,
            name: "0002_gadgets.sql",
            sql: "CREATE TABLE gadgets (id int)",
        },
    ];
    migrate_with(&mut client, &original)
        .await
        .expect("original set applies");

    let edited = [
        original[0],
        Migration {
            version: 2,
            name: "0002_gadgets.sql",
            sql: "CREATE TABLE gadgets (id bigint)",
        },
    ];
    let err = migrate_with(&mut client, &edited)
        .await
        .expect_err("edited file must be refused");
    assert!(
        matches!(
            err,
            MigrateError::ChecksumMismatch {
                name: "0002_gadgets.sql",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("0002_gadgets.sql"),
        "message names the file: {err}"
    );

    // The lock was released: the unedited set still runs on the same connection.
    let report = migrate_with(&mut client, &original)
        .await
        .expect("lock released after failure");
    assert!(report.applied.is_empty());
}

#[tokio::test]
async fn a_failing_migration_is_rolled_back_and_named() {
    let db = TestDb::new_empty().await;
    let mut client = db.connect().await;
    let broken = [Migration {
        version: 1,
        name: "0001_broken.sql",
        sql: "CREATE TABLE half (id int); SELECT no_such_function();",
    }];
    let err = migrate_with(&mut client, &broken)
        .await
        .expect_err("broken migration fails");
    assert!(err.to_string().contains("0001_broken.sql"), "{err}");
    let half: Option<String> = client
        .query_one("SELECT to_regclass('half')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        half, None,
        "the failed migration's statements were rolled back"
    );
    let count: i64 = client
        .query_one("SELECT count(*) FROM chatd_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[test]
fn embedded_versions_increase_and_are_the_file_numbers() {
    let mut previous = 0;
    for migration in EMBEDDED {
        let number: i32 = migration.name[..4].parse().expect("NNNN_ prefix");
        assert_eq!(migration.version, number, "{}", migration.name);
        assert!(migration.version > previous, "{}", migration.name);
        previous = migration.version;
    }
}

#[tokio::test]
async fn a_gap_filled_later_is_applied_after_the_higher_numbers() {
    let db = TestDb::new_empty().await;
    let mut client = db.connect().await;
    let one = Migration {
        version: 1,
        name: "0001_widgets.sql",
        sql: "CREATE TABLE widgets (id int)",
    };
    let three = Migration {
        version: 3,
        name: "0003_gizmos.sql",
        sql: "CREATE TABLE gizmos (id int)",
    };
    let two = Migration {
        version: 2,
        name: "0002_gadgets.sql",
        sql: "CREATE TABLE gadgets (id int)",
    };
    let first = migrate_with(&mut client, &[one, three])
        .await
        .expect("a set with a gap applies");
    assert_eq!(first.applied, ["0001_widgets.sql", "0003_gizmos.sql"]);
    let second = migrate_with(&mut client, &[one, two, three])
        .await
        .expect("the filled gap applies");
    assert_eq!(second.applied, ["0002_gadgets.sql"]);
    assert_eq!(
        recorded(&db).await,
        [
            (1, "0001_widgets.sql".to_owned()),
            (2, "0002_gadgets.sql".to_owned()),
            (3, "0003_gizmos.sql".to_owned()),
        ]
    );
}
