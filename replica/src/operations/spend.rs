//! Spend limits as chat operations (ARCHITECTURE.md §17, invariant 15): a send
//! refused once the sender's spend reached their limit, and the reservation
//! a run makes before each model call. Neither costs a statement while no
//! limit applies to the user.

use chatd_shared::{
    db::{
        DbError,
        lifecycle::Fence,
        spend::{self, Reservation},
    },
    ids::UserId,
};
use chrono::{DateTime, Utc};

use super::ChatOps;

/// Why spending was refused: the body of `spend_limit_exceeded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendRefusal {
    /// Spent in the current period, in micro-dollars.
    pub spent_micros: i64,
    /// The user's limit per period.
    pub limit_micros: i64,
    /// When the period ends.
    pub resets_at: DateTime<Utc>,
}

impl SpendRefusal {
    /// The stable error code.
    pub const CODE: &'static str = "spend_limit_exceeded";

    /// A sentence for people.
    pub fn message(&self) -> String {
        format!(
            "the spend limit of {} micro-dollars for this period is reached ({} spent); it resets at {}",
            self.limit_micros,
            self.spent_micros,
            self.resets_at.to_rfc3339()
        )
    }
}

/// What [`ChatOps::reserve_spend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// No limit applies to the owner: nothing to reserve.
    Unlimited,
    /// The estimate is reserved: the model call may go ahead.
    Reserved,
    /// The estimate does not fit under the limit: the call must not happen.
    OverLimit(SpendRefusal),
    /// The fence no longer matches: ownership was lost.
    OwnershipLost,
}

impl ChatOps {
    /// The limit that applies to `user`: their override, else the
    /// deployment's default (`override_micros` when the caller read it
    /// already, as a turn does with its prompt).
    async fn spend_limit(
        &self,
        user: UserId,
        override_micros: Option<Option<i64>>,
    ) -> Result<Option<(i64, chatd_shared::status::SpendPeriod)>, DbError> {
        let deployment = self.settings.deployment().await?;
        let own = match override_micros {
            Some(known) => known,
            None => self.settings.user_limit(user).await?,
        };
        Ok(own
            .or(deployment.spend.default_limit_micros)
            .map(|limit| (limit, deployment.spend.period)))
    }

    /// The refusal a message from `user` gets because their spend reached
    /// their limit in the current period; `None` when they may send (or no
    /// limit applies, which costs no statement). Turns in flight are not
    /// counted here: their reservations are what keeps the limit.
    pub async fn spend_refusal(&self, user: UserId) -> Result<Option<SpendRefusal>, DbError> {
        let Some((limit, period)) = self.spend_limit(user, None).await? else {
            return Ok(None);
        };
        let spend = {
            let client = self.pool.get().await?;
            spend::spend(&client, user, period).await?
        };
        Ok((spend.spent_micros >= limit).then_some(SpendRefusal {
            spent_micros: spend.spent_micros,
            limit_micros: limit,
            resets_at: spend.resets_at,
        }))
    }

    /// Reserves `estimate_micros` of `owner`'s spend for `fence`'s next
    /// model call, if it fits under their limit (`override_micros`: their
    /// override as the run read it; else the deployment's default) with
    /// what was spent and reserved so far, in one statement (see
    /// [`spend::reserve`]). The step's commit replaces the reservation with
    /// the cost.
    pub async fn reserve_spend(
        &self,
        fence: &Fence,
        owner: UserId,
        override_micros: Option<i64>,
        estimate_micros: i64,
    ) -> Result<Reserved, DbError> {
        let Some((limit, period)) = self.spend_limit(owner, Some(override_micros)).await? else {
            return Ok(Reserved::Unlimited);
        };
        let client = self.pool.get().await?;
        let mut reservation =
            spend::reserve(&client, fence, period, estimate_micros, limit).await?;
        // The owner's first reservation of a period opens it; a period that
        // ended between opening and reserving is opened once more.
        for _ in 0..2 {
            if reservation != Reservation::PeriodNotOpen {
                break;
            }
            spend::open_period(&client, owner, period).await?;
            reservation = spend::reserve(&client, fence, period, estimate_micros, limit).await?;
        }
        Ok(match reservation {
            Reservation::Reserved(_) => Reserved::Reserved,
            Reservation::OverLimit(spend) => Reserved::OverLimit(SpendRefusal {
                spent_micros: spend.spent_micros,
                limit_micros: limit,
                resets_at: spend.resets_at,
            }),
            // Still not open after opening twice cannot happen (periods
            // last a day at least); stopping the run is the safe answer.
            Reservation::OwnershipLost | Reservation::PeriodNotOpen => Reserved::OwnershipLost,
        })
    }
}
