//! A step's tool calls (ARCHITECTURE.md §8, §17). The step's assistant message is
//! stored with its calls recorded in the ledger before any of them runs;
//! the calls that run here run in parallel, and each result is stored (and
//! its ledger row finished) as soon as it and every call before it are
//! done, in call order. Calls the client runs and waits for subagents are
//! not run: the run ends with the chat waiting on them (no slot held,
//! invariant 16), and the run that resumes the turn answers them.
//!
//! A run that takes over a turn (after a crash, or when a wait ended) first
//! answers the last step's calls that have no result: an idempotent call
//! runs again, one that may have had an effect gets an error result saying
//! so ([`ledger::may_have_run`]), and a wait that ended gets its answer.

use std::{collections::HashMap, sync::Arc};

use chatd_shared::{
    db::{
        DbError,
        lifecycle::{Released, StepMessage, TurnEnd},
        tool_calls::{self, Suspended, ToolCall, WaitDeadline},
    },
    ids::ChatId,
    parts::Usage,
    status::MessageRole,
    tools::RunsOn,
};
use futures::{StreamExt, stream::FuturesOrdered};

use tracing::Instrument;

use super::{TurnRunner, prompt::Loaded, result_part};
use crate::{
    agents::WaitPlan,
    runtime::{RunContext, RunError, StopReason},
    tools::{AbortOnDrop, Call, ChatToolset, Outcome, Route, ledger},
};

/// What to do with one call of a step.
pub(super) enum Plan {
    /// Run it here.
    Run(Route),
    /// Its result is known already.
    Ready(Outcome),
    /// Wait for its result from outside the chat.
    Wait(Wait),
}

/// What a call waits for.
pub(super) enum Wait {
    /// The client's result, for this many seconds at most.
    Client {
        /// Seconds until the deadline.
        secs: f64,
    },
    /// These subagents, for this many seconds at most.
    Agents {
        /// The children.
        ids: Vec<ChatId>,
        /// Seconds until the deadline.
        secs: f64,
    },
}

/// A call and what to do with it.
pub(super) struct Planned {
    pub(super) call: Call,
    pub(super) plan: Plan,
}

/// How a step's calls ended.
pub(super) enum CallsEnd {
    /// Every call has its stored result: the model goes on.
    Answered,
    /// An interrupt: the calls without a result got error results, stored
    /// with the end of the turn.
    Released(Box<Released>),
    /// The run is over: the chat waits for the calls it could not answer
    /// (or is `pending` again, its subagents having finished meanwhile).
    Suspended,
}

impl TurnRunner {
    /// What to do with each call of a new step (recorded already).
    pub(super) async fn plan_step(&self, tools: &ChatToolset, calls: &[Call]) -> Vec<Planned> {
        let mut planned = Vec::with_capacity(calls.len());
        for call in calls {
            let plan = match tools.route(&call.name) {
                Route::WaitAgents => wait_plan(tools.agents().plan_wait(&call.args).await),
                Route::Client(tool) => Plan::Wait(Wait::Client {
                    secs: f64::from(tool.timeout_s()),
                }),
                route => Plan::Run(route),
            };
            planned.push(Planned {
                call: call.clone(),
                plan,
            });
        }
        planned
    }

    /// What to do with each call of the last step that has no result, when
    /// this run takes the turn over, from what the ledger says of it.
    pub(super) async fn plan_resume(
        &self,
        run: &RunContext,
        tools: &ChatToolset,
        calls: Vec<Call>,
    ) -> Result<Vec<Planned>, RunError> {
        let open: HashMap<String, ToolCall> = {
            let client = run.db().get().await.map_err(DbError::from)?;
            tool_calls::open(&client, run.fence().chat_id)
                .await?
                .into_iter()
                .map(|row| (row.call_id.clone(), row))
                .collect()
        };
        let mut planned = Vec::with_capacity(calls.len());
        for call in calls {
            let route = tools.route(&call.name);
            let plan = match open.get(&call.id) {
                Some(row) => match row.runs_on {
                    RunsOn::Client if row.expired => {
                        Plan::Ready(Outcome::error(ledger::CLIENT_DEADLINE))
                    }
                    RunsOn::Client => Plan::Wait(Wait::Client {
                        secs: match &route {
                            Route::Client(tool) => f64::from(tool.timeout_s()),
                            _ => f64::from(chatd_shared::tools::DEFAULT_CLIENT_TOOL_TIMEOUT_S),
                        },
                    }),
                    RunsOn::Agents if row.waits_on.is_empty() => {
                        // Recorded, but its run ended before it waited.
                        wait_plan(tools.agents().plan_wait(&call.args).await)
                    }
                    RunsOn::Agents => {
                        wait_plan(tools.agents().resume_wait(&row.waits_on, row.expired).await)
                    }
                    RunsOn::Replica if row.idempotent => Plan::Run(route),
                    RunsOn::Replica => {
                        Plan::Ready(Outcome::error(ledger::may_have_run(&call.name)))
                    }
                },
                // Not on record: treated like a recorded call of its tool.
                None => match &route {
                    Route::Client(_) | Route::WaitAgents => {
                        Plan::Ready(Outcome::error(ledger::may_have_run(&call.name)))
                    }
                    route if tools.record_of(&call, route).idempotent => Plan::Run(route.clone()),
                    _ => Plan::Ready(Outcome::error(ledger::may_have_run(&call.name))),
                },
            };
            planned.push(Planned { call, plan });
        }
        Ok(planned)
    }

    /// Answers `planned` (calls of step `step`): runs those that run here in
    /// parallel and stores each result in call order as soon as it is known,
    /// then ends the run waiting for the rest, if any. On interrupt the
    /// calls without a result get error results, stored with the end of the
    /// turn.
    pub(super) async fn answer(
        &self,
        run: &mut RunContext,
        tools: &Arc<ChatToolset>,
        step: i32,
        planned: &[Planned],
        loaded: &mut Loaded,
    ) -> Result<CallsEnd, RunError> {
        let control = run.control();
        // A span per call, a child of the step's (ARCHITECTURE.md §11).
        let spans: Vec<tracing::Span> = planned
            .iter()
            .map(|item| {
                tracing::info_span!(
                    "tool_call",
                    tool = %item.call.name,
                    call_id = %item.call.id,
                    outcome = tracing::field::Empty
                )
            })
            .collect();
        // Each call runs as a task of its own, so the calls go on while a
        // finished one's result is stored (a call may hold a transaction
        // the store would wait for: a spawn locks its parent's row).
        let mut pending: FuturesOrdered<_> = planned
            .iter()
            .zip(&spans)
            .map(|(item, span)| {
                let task = match &item.plan {
                    Plan::Run(route) => {
                        let (tools, call, route) =
                            (tools.clone(), item.call.clone(), route.clone());
                        Some(tokio::spawn(
                            async move { tools.run(&call, &route).await }.instrument(span.clone()),
                        ))
                    }
                    Plan::Ready(_) | Plan::Wait(_) => None,
                };
                async move {
                    let Some(task) = task else {
                        return match &item.plan {
                            Plan::Ready(outcome) => Some(outcome.clone()),
                            _ => None,
                        };
                    };
                    let _abort = AbortOnDrop(task.abort_handle());
                    Some(match task.await {
                        Ok(outcome) => outcome,
                        Err(join) if join.is_panic() => {
                            Outcome::error(format!("{} crashed", item.call.name))
                        }
                        Err(_) => Outcome::error(format!("{} was cancelled", item.call.name)),
                    })
                }
            })
            .collect();
        let mut done = 0;
        let mut waits = Vec::new();
        let mut interrupted = false;
        while done < planned.len() {
            let answered = tokio::select! {
                biased;
                _ = control.cancelled() => return Err(stopped(run)),
                _ = control.interrupted() => {
                    interrupted = true;
                    break;
                }
                Some(answered) = pending.next() => answered,
            };
            let item = &planned[done];
            done += 1;
            let Some(outcome) = answered else {
                spans[done - 1].record("outcome", "waiting");
                waits.push(item);
                continue;
            };
            let result = if outcome.is_error { "error" } else { "ok" };
            spans[done - 1].record("outcome", result);
            self.metrics.tool_call(&item.call.name, outcome.is_error);
            run.stream().part(step, result_part(&item.call, &outcome));
            let committed = run
                .persist_step(&[tool_row(step, &item.call, &outcome)])
                .await?;
            self.committed(run, step, &committed);
            loaded.append(&committed);
        }
        // Dropping the rest abandons them (a built-in tool's task is aborted).
        drop(pending);
        for span in &spans[done..] {
            span.record("outcome", "interrupted");
        }
        if interrupted {
            let unanswered = waits
                .into_iter()
                .chain(&planned[done..])
                .map(|item| &item.call);
            return self.interrupted(run, step, unanswered).await;
        }
        if waits.is_empty() {
            return Ok(CallsEnd::Answered);
        }
        let deadlines: Vec<WaitDeadline> = waits
            .iter()
            .map(|item| match &item.plan {
                Plan::Wait(Wait::Agents { ids, secs }) => WaitDeadline {
                    call_id: item.call.id.clone(),
                    secs: *secs,
                    waits_on: Some(ids.clone()),
                },
                Plan::Wait(Wait::Client { secs }) => WaitDeadline {
                    call_id: item.call.id.clone(),
                    secs: *secs,
                    waits_on: None,
                },
                Plan::Run(_) | Plan::Ready(_) => WaitDeadline {
                    call_id: item.call.id.clone(),
                    secs: 0.0,
                    waits_on: None,
                },
            })
            .collect();
        match run.suspend(&deadlines).await? {
            Suspended::Waiting { status, .. } => {
                self.metrics.suspended(status.as_str());
                Ok(CallsEnd::Suspended)
            }
            Suspended::Pending(_) => {
                self.metrics.suspended("pending");
                Ok(CallsEnd::Suspended)
            }
            Suspended::Interrupted => {
                let unanswered = waits.into_iter().map(|item| &item.call);
                self.interrupted(run, step, unanswered).await
            }
        }
    }

    /// Ends an interrupted turn: `calls` get error results, stored with the
    /// release.
    async fn interrupted(
        &self,
        run: &mut RunContext,
        step: i32,
        calls: impl Iterator<Item = &Call>,
    ) -> Result<CallsEnd, RunError> {
        let outcome = Outcome::error("interrupted before the tool finished");
        let mut rows = Vec::new();
        for call in calls {
            run.stream().part(step, result_part(call, &outcome));
            rows.push(tool_row(step, call, &outcome));
        }
        let (committed, released) = run.finish(&rows, TurnEnd::Done).await?;
        self.committed(run, step, &committed);
        Ok(CallsEnd::Released(Box::new(released)))
    }
}

fn wait_plan(plan: WaitPlan) -> Plan {
    match plan {
        WaitPlan::Ready(outcome) => Plan::Ready(outcome),
        WaitPlan::Wait { ids, timeout } => Plan::Wait(Wait::Agents {
            ids,
            secs: timeout.as_secs_f64(),
        }),
    }
}

fn stopped(run: &RunContext) -> RunError {
    RunError::Stopped(run.stop_reason().unwrap_or(StopReason::OwnershipLost))
}

/// The tool message of `call`'s result.
pub(super) fn tool_row(step: i32, call: &Call, outcome: &Outcome) -> StepMessage {
    StepMessage {
        role: MessageRole::Tool,
        content: vec![result_part(call, outcome)],
        model_config_id: None,
        step,
        usage: Usage::default(),
        cost_micros: None,
        runtime_ms: None,
    }
}
