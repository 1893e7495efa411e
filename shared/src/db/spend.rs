//! Spend limits (ARCHITECTURE.md §17, invariant 15): the deployment's default limit
//! and period, per-user overrides, and the reservation a run makes before
//! each model call.
//!
//! A user's spend in a period and what their turns in flight reserved live
//! in one `user_spend` row. A reservation locks that row, sweeps
//! reservations whose runs are gone, and adds its estimate only if spent +
//! reserved + estimate stays within the limit, in one statement: concurrent
//! reservations of one user (on any replica) queue on the row, so each
//! sees the others'. The step's commit replaces the reservation with the
//! step's cost ([`super::accounting`]). A user's rows exist only once a
//! limit applied to them; their first reservation in a period opens the
//! period from the usage rollup ([`open_period`]).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::{DbResult, GenericClient, lifecycle::Fence};
use crate::{ids::UserId, status::SpendPeriod};

/// The deployment's spend settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendSettings {
    /// Every user's limit per period unless overridden; `None`: no limit.
    pub default_limit_micros: Option<i64>,
    /// The period limits count over.
    pub period: SpendPeriod,
}

/// The deployment's spend settings.
pub async fn settings(db: &impl GenericClient) -> DbResult<SpendSettings> {
    let stmt = db
        .prepare_cached("SELECT spend_limit_micros, spend_period FROM deployment_settings")
        .await?;
    let row = db.query_one(&stmt, &[]).await?;
    Ok(SpendSettings {
        default_limit_micros: row.try_get(0)?,
        period: row.try_get(1)?,
    })
}

/// Replaces the deployment's spend settings.
pub async fn set_settings(db: &impl GenericClient, settings: &SpendSettings) -> DbResult<()> {
    let stmt = db
        .prepare_cached(
            "UPDATE deployment_settings SET spend_limit_micros = $1, spend_period = $2,
                 updated_at = now()",
        )
        .await?;
    db.execute(&stmt, &[&settings.default_limit_micros, &settings.period])
        .await?;
    Ok(())
}

/// `user`'s limit override, if any.
pub async fn user_limit(db: &impl GenericClient, user: UserId) -> DbResult<Option<i64>> {
    let stmt = db
        .prepare_cached("SELECT spend_limit_micros FROM user_settings WHERE user_id = $1")
        .await?;
    Ok(db
        .query_opt(&stmt, &[&user])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?
        .flatten())
}

/// Sets (or with `None` removes) `user`'s limit override; `false` when the
/// user does not exist.
pub async fn set_user_limit(
    db: &impl GenericClient,
    user: UserId,
    limit_micros: Option<i64>,
) -> DbResult<bool> {
    let stmt = db
        .prepare_cached(
            "INSERT INTO user_settings (user_id, spend_limit_micros)
             SELECT id, $2 FROM users WHERE id = $1
             ON CONFLICT (user_id) DO UPDATE SET spend_limit_micros = EXCLUDED.spend_limit_micros,
                 updated_at = now()",
        )
        .await?;
    Ok(db.execute(&stmt, &[&user, &limit_micros]).await? == 1)
}

/// A user's spend in the current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// Spent in the period, in micro-dollars.
    pub spent_micros: i64,
    /// Reserved by model calls in flight.
    pub reserved_micros: i64,
    /// When the period ends (and the next begins).
    pub resets_at: DateTime<Utc>,
}

/// The start of the current `$N` period, by the database clock.
fn period_start(param: &str) -> String {
    format!("date_trunc({param}::text, now(), 'UTC')")
}

/// What was spent since the period starting at `start` per the usage
/// rollup (whose days start at midnight UTC, as periods do).
const ROLLUP_SPENT: &str = "(SELECT coalesce(sum(cost_micros), 0)::bigint FROM usage_daily
     WHERE user_id = $1 AND day >= (p.start AT TIME ZONE 'UTC')::date)";

static SPEND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT coalesce(s.spent_micros, {ROLLUP_SPENT}) AS spent,
                coalesce(s.reserved_micros, 0) AS reserved,
                p.start + ('1 ' || $2)::interval AS resets_at
         FROM (SELECT {start} AS start) p
         LEFT JOIN user_spend s ON s.user_id = $1 AND s.period_start = p.start",
        start = period_start("$2"),
    )
});

/// `user`'s spend in the current `period`: from their `user_spend` row
/// when a limit applied to them this period, else from the usage rollup.
pub async fn spend(db: &impl GenericClient, user: UserId, period: SpendPeriod) -> DbResult<Spend> {
    let stmt = db.prepare_cached(&SPEND).await?;
    let row = db.query_one(&stmt, &[&user, &period]).await?;
    Ok(Spend {
        spent_micros: row.try_get("spent")?,
        reserved_micros: row.try_get("reserved")?,
        resets_at: row.try_get("resets_at")?,
    })
}

static OPEN_PERIOD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO user_spend (user_id, period_start, spent_micros)
         SELECT $1, p.start, {ROLLUP_SPENT} FROM (SELECT {start} AS start) p
         ON CONFLICT DO NOTHING",
        start = period_start("$2"),
    )
});

/// Makes sure `user` has a `user_spend` row for the current `period`,
/// starting from what the usage rollup says they spent in it so far.
pub async fn open_period(
    db: &impl GenericClient,
    user: UserId,
    period: SpendPeriod,
) -> DbResult<()> {
    let stmt = db.prepare_cached(&OPEN_PERIOD).await?;
    db.execute(&stmt, &[&user, &period]).await?;
    Ok(())
}

/// What [`reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved: the run may make its model call.
    Reserved(Spend),
    /// Spent + reserved + the estimate is over the limit: nothing reserved.
    OverLimit(Spend),
    /// The owner has no `user_spend` row for this period yet:
    /// [`open_period`] and try again.
    PeriodNotOpen,
    /// The fence no longer matches: ownership was lost.
    OwnershipLost,
}

static RESERVE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH period AS (
             SELECT {start} AS start
         ), run AS (
             SELECT owner_id FROM chats
             WHERE id = $1 AND worker_id = $2 AND generation = $3 AND status = 'running'
         ), locked AS (
             SELECT s.user_id, s.spent_micros, s.reserved_micros
             FROM user_spend s, run, period
             WHERE s.user_id = run.owner_id AND s.period_start = period.start
             FOR UPDATE OF s
         ), swept AS (
             DELETE FROM spend_reservations r USING locked
             WHERE r.user_id = locked.user_id
               AND (r.chat_id = $1 OR NOT EXISTS (
                       SELECT 1 FROM chats c
                       WHERE c.id = r.chat_id AND c.status = 'running' AND c.generation = r.generation))
             RETURNING r.period_start, r.amount_micros
         ), decision AS (
             SELECT l.user_id, l.spent_micros, f.reserved,
                    l.spent_micros + f.reserved + $5 <= $6 AS ok
             FROM locked l, LATERAL (
                 SELECT l.reserved_micros - coalesce(sum(w.amount_micros), 0)::bigint AS reserved
                 FROM swept w, period WHERE w.period_start = period.start
             ) f
         ), updated AS (
             UPDATE user_spend s SET reserved_micros = d.reserved + CASE WHEN d.ok THEN $5 ELSE 0 END
             FROM decision d, period
             WHERE s.user_id = d.user_id AND s.period_start = period.start
         ), inserted AS (
             INSERT INTO spend_reservations (chat_id, user_id, generation, period_start, amount_micros)
             SELECT $1, d.user_id, $3, period.start, $5 FROM decision d, period WHERE d.ok
         )
         SELECT d.ok, d.spent_micros AS spent,
                d.reserved + CASE WHEN d.ok THEN $5 ELSE 0 END AS reserved,
                period.start + ('1 ' || $4)::interval AS resets_at
         FROM run CROSS JOIN period LEFT JOIN decision d ON true",
        start = period_start("$4"),
    )
});

/// Reserves `estimate_micros` of `fence`'s owner's spend in the current
/// `period` for the run's next model call, if spent + reserved + estimate
/// stays within `limit_micros` (one statement, race-free across replicas).
/// It replaces any reservation the chat still has, and sweeps the owner's
/// reservations whose runs are gone (the chat no longer runs under their
/// generation, or was deleted).
pub async fn reserve(
    db: &impl GenericClient,
    fence: &Fence,
    period: SpendPeriod,
    estimate_micros: i64,
    limit_micros: i64,
) -> DbResult<Reservation> {
    let stmt = db.prepare_cached(&RESERVE).await?;
    let Some(row) = db
        .query_opt(
            &stmt,
            &[
                &fence.chat_id,
                &fence.worker_id,
                &fence.generation,
                &period,
                &estimate_micros,
                &limit_micros,
            ],
        )
        .await?
    else {
        return Ok(Reservation::OwnershipLost);
    };
    let Some(ok) = row.try_get::<_, Option<bool>>("ok")? else {
        return Ok(Reservation::PeriodNotOpen);
    };
    let spend = Spend {
        spent_micros: row.try_get("spent")?,
        reserved_micros: row.try_get("reserved")?,
        resets_at: row.try_get("resets_at")?,
    };
    Ok(if ok {
        Reservation::Reserved(spend)
    } else {
        Reservation::OverLimit(spend)
    })
}
