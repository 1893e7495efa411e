//! The checks against the database (ARCHITECTURE.md §18; invariants 8, 9): while the
//! run goes on, no chat stays `running` under a replica whose lease has
//! expired for longer than recovery takes; at the end, every chat is idle,
//! every turn was answered exactly once with no step stored twice, every
//! acknowledged send is stored once, and each client received exactly the
//! messages the database holds, in id order.

use std::{collections::HashMap, time::Duration};

use chatd_shared::{
    db::connect_dedicated,
    error_chain::Chain,
    ids::{ChatId, MessageId},
};
use serde_json::Value;
use tokio::time::Instant;
use tokio_postgres::Client as PgClient;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::checker::{ChatRecord, Violations};

/// How often the lease probe looks.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long the end-of-run check waits for every chat to be idle.
const QUIET_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to chatd's database for the checks.
pub async fn connect(url: &str) -> anyhow::Result<PgClient> {
    let (client, _) = connect_dedicated(url)
        .await
        .map_err(|error| anyhow::anyhow!("connecting to {url}: {}", Chain(&error)))?;
    Ok(client)
}

/// Every second until `stop`: chats `running` under a replica whose lease
/// expired more than `grace` ago (or whose row is gone) are violations,
/// each chat once. Errors (PostgreSQL restarting) skip a round.
pub async fn probe_leases(
    url: String,
    grace: Duration,
    violations: &Violations,
    stop: CancellationToken,
) {
    let mut reported = std::collections::HashSet::new();
    let mut client = None;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if client.as_ref().is_none_or(PgClient::is_closed) {
            client = connect(&url).await.ok();
        }
        let Some(db) = &client else { continue };
        let Ok(rows) = tokio::time::timeout(PROBE_EVERY, stale_runs(db, grace)).await else {
            continue;
        };
        for (chat_id, worker, expired_for) in rows.unwrap_or_default() {
            if reported.insert(chat_id) {
                violations.add(
                    chat_id,
                    format!(
                        "running under replica {worker} whose lease {}",
                        match expired_for {
                            Some(seconds) => format!("expired {seconds:.1} s ago"),
                            None => "row is gone".to_owned(),
                        }
                    ),
                );
            }
        }
    }
}

/// Chats running under a lease expired over `grace` ago: id, worker, and
/// seconds since the expiry (`None`: no replica row).
async fn stale_runs(
    db: &PgClient,
    grace: Duration,
) -> Result<Vec<(ChatId, Uuid, Option<f64>)>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT c.id, c.worker_id,
                    extract(epoch FROM now() - r.lease_expires_at)::float8
             FROM chats c LEFT JOIN replicas r ON r.id = c.worker_id
             WHERE c.status = 'running'
               AND (r.id IS NULL OR r.lease_expires_at < now() - make_interval(secs => $1))",
            &[&grace.as_secs_f64()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                ChatId(row.get(0)),
                row.get::<_, Option<Uuid>>(1).unwrap_or_default(),
                row.get(2),
            )
        })
        .collect())
}

/// Waits until none of `chats` is `pending` or `running`; those that still
/// are after a minute are violations.
pub async fn wait_quiet(db: &PgClient, chats: &[ChatId], violations: &Violations) {
    let ids: Vec<Uuid> = chats.iter().map(|id| id.0).collect();
    let deadline = Instant::now() + QUIET_TIMEOUT;
    loop {
        let busy = db
            .query(
                "SELECT id, status::text FROM chats
                 WHERE id = ANY($1) AND status IN ('pending', 'running')",
                &[&ids],
            )
            .await;
        let busy = match busy {
            Ok(rows) => rows,
            Err(_) if Instant::now() < deadline => Vec::new(),
            Err(error) => {
                eprintln!("chaos: reading chat statuses: {}", Chain(&error));
                return;
            }
        };
        if busy.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for row in busy {
                let status: String = row.get(1);
                violations.add(
                    ChatId(row.get(0)),
                    format!("still {status} {QUIET_TIMEOUT:?} after the load ended"),
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A stored message, as the checks need it.
#[derive(Debug, Clone)]
struct Stored {
    id: MessageId,
    role: String,
    generation: Option<i64>,
    step: Option<i32>,
    tool_calls: Vec<String>,
}

/// Every visible message of `chats`, by chat, in id order.
async fn stored_messages(
    db: &PgClient,
    chats: &[ChatId],
) -> Result<HashMap<ChatId, Vec<Stored>>, tokio_postgres::Error> {
    let ids: Vec<Uuid> = chats.iter().map(|id| id.0).collect();
    let rows = db
        .query(
            "SELECT chat_id, id, role::text, generation, step, content FROM chat_messages
             WHERE chat_id = ANY($1) AND NOT deleted AND visibility <> 'model'
             ORDER BY chat_id, id",
            &[&ids],
        )
        .await?;
    let mut messages: HashMap<ChatId, Vec<Stored>> = HashMap::new();
    for row in rows {
        let content: Value = row.get(5);
        let tool_calls = content
            .as_array()
            .into_iter()
            .flatten()
            .filter(|part| part["type"] == "tool_call")
            .filter_map(|part| part["id"].as_str().map(str::to_owned))
            .collect();
        messages
            .entry(ChatId(row.get(0)))
            .or_default()
            .push(Stored {
                id: MessageId(row.get(1)),
                role: row.get(2),
                generation: row.get(3),
                step: row.get(4),
                tool_calls,
            });
    }
    Ok(messages)
}

/// The end-of-run checks of every chat a client followed.
pub async fn audit(
    db: &PgClient,
    records: &HashMap<ChatId, ChatRecord>,
    violations: &Violations,
) -> anyhow::Result<()> {
    let chats: Vec<ChatId> = records.keys().copied().collect();
    let stored = stored_messages(db, &chats)
        .await
        .map_err(|error| anyhow::anyhow!("reading the messages: {}", Chain(&error)))?;
    for (chat_id, record) in records {
        let messages = stored.get(chat_id).map(Vec::as_slice).unwrap_or_default();
        for problem in turn_problems(messages) {
            violations.add(*chat_id, problem);
        }
        if record.failed {
            // A send whose answer never came may or may not be stored.
            continue;
        }
        let users = messages.iter().filter(|m| m.role == "user").count() as u64;
        if users != record.sends_acknowledged {
            violations.add(
                *chat_id,
                format!(
                    "{} sends were acknowledged and {users} user messages are stored",
                    record.sends_acknowledged
                ),
            );
        }
        let ids: Vec<MessageId> = messages.iter().map(|m| m.id).collect();
        if let Some(problem) = delivery_problem(&record.messages, &ids) {
            violations.add(*chat_id, problem);
        }
    }
    Ok(())
}

/// Each user message answered by exactly one final assistant message (one
/// without tool calls), no step stored twice within a turn.
fn turn_problems(messages: &[Stored]) -> Vec<String> {
    let mut problems = Vec::new();
    let turns = messages.split(|m| m.role == "user").skip(1);
    let users = messages.iter().filter(|m| m.role == "user");
    for (user, turn) in users.zip(turns) {
        let replies: Vec<&Stored> = turn.iter().filter(|m| m.role == "assistant").collect();
        let finals = replies.iter().filter(|m| m.tool_calls.is_empty()).count();
        if finals != 1 {
            problems.push(format!(
                "user message {} was answered {finals} times",
                user.id.0
            ));
        }
        let mut steps = std::collections::HashSet::new();
        let mut calls = std::collections::HashSet::new();
        for reply in replies {
            if !steps.insert((reply.generation, reply.step)) {
                problems.push(format!(
                    "step {:?} of generation {:?} is stored twice (message {})",
                    reply.step, reply.generation, reply.id.0
                ));
            }
            for call in &reply.tool_calls {
                if !calls.insert(call.clone()) {
                    problems.push(format!(
                        "tool call {call} is stored twice in the turn of message {} (message {})",
                        user.id.0, reply.id.0
                    ));
                }
            }
        }
    }
    problems
}

/// What the client received against what is stored: the same ids, in the
/// same order.
fn delivery_problem(received: &[MessageId], stored: &[MessageId]) -> Option<String> {
    if received == stored {
        return None;
    }
    let common = received
        .iter()
        .zip(stored)
        .take_while(|(a, b)| a == b)
        .count();
    let show = |ids: &[MessageId]| {
        ids.iter()
            .skip(common)
            .take(5)
            .map(|id| id.0.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "the client received {} messages and {} are stored; after the first {common} alike, received [{}], stored [{}]",
        received.len(),
        stored.len(),
        show(received),
        show(stored)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: i64, role: &str, generation: i64, step: i32, calls: &[&str]) -> Stored {
        Stored {
            id: MessageId(id),
            role: role.into(),
            generation: (role != "user").then_some(generation),
            step: (role != "user").then_some(step),
            tool_calls: calls.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn every_turn_is_answered_once_with_no_step_twice() {
        let good = [
            stored(1, "user", 0, 0, &[]),
            stored(2, "assistant", 1, 0, &["call_1"]),
            stored(3, "tool", 1, 0, &[]),
            stored(4, "assistant", 2, 0, &[]),
            stored(5, "user", 0, 0, &[]),
            stored(6, "assistant", 3, 0, &[]),
        ];
        assert_eq!(turn_problems(&good), Vec::<String>::new());
        let bad = [
            stored(1, "user", 0, 0, &[]),
            stored(2, "assistant", 1, 0, &[]),
            stored(3, "assistant", 1, 0, &[]),
            stored(4, "user", 0, 0, &[]),
        ];
        let problems = turn_problems(&bad);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("user message 1 was answered 2 times"));
        assert!(problems[1].contains("stored twice (message 3)"));
        assert!(problems[2].contains("user message 4 was answered 0 times"));
    }

    #[test]
    fn a_client_must_receive_exactly_the_stored_messages() {
        let ids = |ids: &[i64]| ids.iter().map(|id| MessageId(*id)).collect::<Vec<_>>();
        assert_eq!(delivery_problem(&ids(&[1, 2, 3]), &ids(&[1, 2, 3])), None);
        let missing = delivery_problem(&ids(&[1, 3]), &ids(&[1, 2, 3])).unwrap();
        assert!(missing.contains("received [3], stored [2, 3]"), "{missing}");
    }
}
