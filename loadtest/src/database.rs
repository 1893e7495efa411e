//! What a run cost PostgreSQL: statements (`pg_stat_statements`) and
//! committed transactions (`pg_stat_database`) of chatd's database, read
//! before and after the measured window and subtracted. Nothing is reset,
//! so an operator's statistics stay as they were.
//!
//! The load test's own queries carry a marker comment and are left out.
//! `pg_stat_statements` counts at once, but since PostgreSQL 15 each
//! backend adds its transactions to `pg_stat_database` at most once a
//! second, and a backend that went idle only after ten: transactions are
//! read only once the counts have [settled](DatabaseProbe::settle).

use std::{collections::HashMap, time::Duration};

use chatd_shared::{db::pool::parse_url, error_chain::Chain};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// Every query of the load test carries it, so it can leave them out.
const MARKER: &str = "/* chatd-loadtest */";
/// Statements listed in each top list.
const TOP: usize = 10;
/// Characters of a statement's text shown in the summary.
const QUERY_CHARS: usize = 200;
/// How long after the last transaction of interest every backend has
/// reported it to `pg_stat_database` (PostgreSQL's idle flush interval is
/// 10 s).
pub const STATS_SETTLE: Duration = Duration::from_secs(11);

/// Why the database could not be watched at all (`--pg-url`).
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The URL does not parse.
    #[error("--pg-url: {0}")]
    Url(String),
    /// Connecting or the first query failed.
    #[error("--pg-url: cannot read statistics from {target}: {reason}")]
    Unreachable {
        /// `user@host:port/dbname`.
        target: String,
        /// Why.
        reason: String,
    },
}

/// A connection to chatd's database that reads its statistics.
pub struct DatabaseProbe {
    client: Client,
    connection: JoinHandle<()>,
    /// The database's name.
    name: String,
    /// Why statement counts are not available, when they are not.
    statements_unavailable: Option<String>,
}

/// The statistics at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `pg_stat_database.xact_commit`.
    transactions: i64,
    /// Per statement (user, query id): calls, time and text.
    statements: HashMap<(u32, i64), StatementStats>,
}

#[derive(Debug, Clone)]
struct StatementStats {
    calls: i64,
    total_ms: f64,
    query: String,
}

/// What the measured window cost the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseCost {
    /// The database's name.
    pub database: String,
    /// What was measured: `turn phase`, or `whole run` without the barrier
    /// (creates and stream opens included).
    pub window: String,
    /// Transactions committed (`pg_stat_database.xact_commit`).
    pub transactions: u64,
    /// Transactions per completed turn.
    pub transactions_per_turn: f64,
    /// Statement counts; `null` when `pg_stat_statements` is unavailable.
    pub statements: Option<StatementCost>,
    /// Why `statements` is `null`.
    pub statements_unavailable: Option<String>,
}

/// Statement counts from `pg_stat_statements` (top-level statements).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementCost {
    /// Statements run in the window.
    pub total: u64,
    /// Statements per completed turn.
    pub per_turn: f64,
    /// Of those, statements calling `pg_notify`.
    pub notify: u64,
    /// NOTIFY statements per completed turn.
    pub notify_per_turn: f64,
    /// The most frequent statements.
    pub top_by_calls: Vec<TopStatement>,
    /// The statements that took the most time.
    pub top_by_time: Vec<TopStatement>,
}

/// One statement of a top list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopStatement {
    /// Calls in the window.
    pub calls: u64,
    /// Calls per completed turn.
    pub per_turn: f64,
    /// Planning and execution time in the window, milliseconds.
    pub total_ms: f64,
    /// The normalised text, whitespace collapsed, cut at 200 characters.
    pub query: String,
}

impl DatabaseProbe {
    /// Connects and checks what can be read.
    pub async fn connect(url: &str) -> Result<Self, DatabaseError> {
        let mut config = parse_url(url).map_err(|error| DatabaseError::Url(error.to_string()))?;
        config.application_name("chatd-loadtest");
        let target = chatd_shared::db::Target(&config).to_string();
        let unreachable = |reason: String| DatabaseError::Unreachable {
            target: target.clone(),
            reason,
        };
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|error| unreachable(Chain(&error).to_string()))?;
        let connection = tokio::spawn(async move {
            // A broken connection shows up as the next query's error.
            let _ = connection.await;
        });
        let name: String = client
            .query_one(&format!("{MARKER} SELECT current_database()"), &[])
            .await
            .map_err(|error| unreachable(Chain(&error).to_string()))?
            .get(0);
        let mut probe = Self {
            client,
            connection,
            name,
            statements_unavailable: None,
        };
        probe.statements_unavailable = probe.check_statements().await;
        Ok(probe)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why statement counts are unavailable (`None` when they are available).
    pub fn statements_unavailable(&self) -> Option<&str> {
        self.statements_unavailable.as_deref()
    }

    async fn check_statements(&self) -> Option<String> {
        let installed = self
            .client
            .query_opt(
                &format!(
                    "{MARKER} SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
                ),
                &[],
            )
            .await;
        match installed {
            Err(error) => return Some(Chain(&error).to_string()),
            Ok(None) => {
                return Some(format!(
                    "pg_stat_statements is not installed in database {}: run CREATE EXTENSION pg_stat_statements there (the server also needs shared_preload_libraries = 'pg_stat_statements')",
                    self.name
                ));
            }
            Ok(Some(_)) => {}
        }
        // Installed but not preloaded: reading it fails.
        match self.read_statements().await {
            Ok(_) => None,
            Err(error) => Some(format!("pg_stat_statements cannot be read: {error}")),
        }
    }

    /// Waits until every backend has reported its transactions so far to
    /// `pg_stat_database` ([`STATS_SETTLE`]).
    pub async fn settle(&self) {
        tokio::time::sleep(STATS_SETTLE).await;
    }

    /// The statistics at the start of a window: once the counts of what
    /// came before have settled, both read now.
    pub async fn snapshot_before(&self) -> Result<Snapshot, String> {
        self.settle().await;
        let statements = self.statements_now().await?;
        let transactions = self.transactions_now().await?;
        Ok(Snapshot {
            transactions,
            statements,
        })
    }

    /// The statistics at the end of a window: statements now, transactions
    /// once they have settled (which adds the few transactions of idle
    /// replicas while waiting).
    pub async fn snapshot_after(&self) -> Result<Snapshot, String> {
        let statements = self.statements_now().await?;
        self.settle().await;
        let transactions = self.transactions_now().await?;
        Ok(Snapshot {
            transactions,
            statements,
        })
    }

    async fn statements_now(&self) -> Result<HashMap<(u32, i64), StatementStats>, String> {
        if self.statements_unavailable.is_some() {
            return Ok(HashMap::new());
        }
        self.read_statements().await
    }

    async fn transactions_now(&self) -> Result<i64, String> {
        let transactions = self
            .client
            .query_one(
                &format!(
                    "{MARKER} SELECT coalesce(xact_commit, 0)::bigint FROM pg_stat_database WHERE datname = current_database()"
                ),
                &[],
            )
            .await
            .map_err(|error| Chain(&error).to_string())?
            .get(0);
        Ok(transactions)
    }

    async fn read_statements(&self) -> Result<HashMap<(u32, i64), StatementStats>, String> {
        let rows = self
            .client
            .query(
                &format!(
                    "{MARKER} SELECT s.userid, s.queryid, s.calls, s.total_plan_time + s.total_exec_time, s.query
                     FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                     WHERE d.datname = current_database() AND s.toplevel AND s.queryid IS NOT NULL
                       AND s.query NOT LIKE '%chatd-loadtest%'"
                ),
                &[],
            )
            .await
            .map_err(|error| Chain(&error).to_string())?;
        Ok(rows
            .iter()
            .map(|row| {
                let key = (row.get::<_, u32>(0), row.get::<_, i64>(1));
                let stats = StatementStats {
                    calls: row.get(2),
                    total_ms: row.get(3),
                    query: row.get(4),
                };
                (key, stats)
            })
            .collect())
    }

    /// What happened between `before` and `after`, per completed turn.
    pub fn cost(
        &self,
        before: &Snapshot,
        after: &Snapshot,
        turns: u64,
        window: &str,
    ) -> DatabaseCost {
        let per_turn = |count: u64| {
            if turns == 0 {
                0.0
            } else {
                count as f64 / turns as f64
            }
        };
        let transactions = u64::try_from(after.transactions - before.transactions).unwrap_or(0);
        let statements = self
            .statements_unavailable
            .is_none()
            .then(|| statement_cost(before, after, &per_turn));
        DatabaseCost {
            database: self.name.clone(),
            window: window.to_owned(),
            transactions,
            transactions_per_turn: per_turn(transactions),
            statements,
            statements_unavailable: self.statements_unavailable.clone(),
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        drop(self.client);
        let _ = self.connection.await;
    }
}

fn statement_cost(
    before: &Snapshot,
    after: &Snapshot,
    per_turn: &dyn Fn(u64) -> f64,
) -> StatementCost {
    let mut used: Vec<TopStatement> = after
        .statements
        .iter()
        .filter_map(|(key, now)| {
            let (calls, total_ms) = match before.statements.get(key) {
                Some(then) => (now.calls - then.calls, now.total_ms - then.total_ms),
                None => (now.calls, now.total_ms),
            };
            let calls = u64::try_from(calls).ok().filter(|calls| *calls > 0)?;
            Some(TopStatement {
                calls,
                per_turn: per_turn(calls),
                total_ms: total_ms.max(0.0),
                query: one_line(&now.query),
            })
        })
        .collect();
    let total = used.iter().map(|s| s.calls).sum();
    let notify = used
        .iter()
        .filter(|s| s.query.contains("pg_notify"))
        .map(|s| s.calls)
        .sum();
    used.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    let top_by_time = used.iter().take(TOP).cloned().collect();
    used.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then(b.total_ms.total_cmp(&a.total_ms))
    });
    used.truncate(TOP);
    StatementCost {
        total,
        per_turn: per_turn(total),
        notify,
        notify_per_turn: per_turn(notify),
        top_by_calls: used,
        top_by_time,
    }
}

/// A statement's text on one line, cut at [`QUERY_CHARS`] characters.
fn one_line(query: &str) -> String {
    let mut line = String::with_capacity(query.len().min(QUERY_CHARS + 3));
    for (count, word) in query.split_whitespace().enumerate() {
        if count > 0 {
            line.push(' ');
        }
        line.push_str(word);
    }
    if line.chars().count() > QUERY_CHARS {
        line = line.chars().take(QUERY_CHARS).collect();
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(transactions: i64, statements: &[(i64, i64, f64, &str)]) -> Snapshot {
        Snapshot {
            transactions,
            statements: statements
                .iter()
                .map(|(id, calls, total_ms, query)| {
                    let stats = StatementStats {
                        calls: *calls,
                        total_ms: *total_ms,
                        query: (*query).to_owned(),
                    };
                    ((10, *id), stats)
                })
                .collect(),
        }
    }

    #[test]
    fn costs_are_the_difference_per_turn() {
        let before = snapshot(
            100,
            &[(1, 10, 5.0, "SELECT 1"), (2, 4, 1.0, "UPDATE chats")],
        );
        let after = snapshot(
            160,
            &[
                (1, 10, 5.0, "SELECT 1"),
                (2, 44, 9.0, "UPDATE chats"),
                (3, 5, 20.0, "SELECT pg_notify(c, p) FROM unnest($1, $2)"),
            ],
        );
        let per_turn = |count: u64| count as f64 / 20.0;
        let cost = statement_cost(&before, &after, &per_turn);
        assert_eq!(cost.total, 45);
        assert_eq!(cost.per_turn, 2.25);
        assert_eq!(cost.notify, 5);
        assert_eq!(cost.notify_per_turn, 0.25);
        // Statements with no calls in the window are left out.
        assert_eq!(cost.top_by_calls.len(), 2);
        assert_eq!(cost.top_by_calls[0].query, "UPDATE chats");
        assert_eq!(cost.top_by_calls[0].total_ms, 8.0);
        assert!(cost.top_by_time[0].query.contains("pg_notify"));
    }

    #[test]
    fn statement_text_is_one_line_and_bounded() {
        assert_eq!(one_line("SELECT a,\n\t  b  FROM t"), "SELECT a, b FROM t");
        let long = "x ".repeat(300);
        let line = one_line(&long);
        assert_eq!(line.chars().count(), QUERY_CHARS + 1);
        assert!(line.ends_with('…'));
    }
}
