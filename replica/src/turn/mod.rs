//! The turn loop (ARCHITECTURE.md §8): what a replica does with a chat it owns.
//!
//! A turn streams a model step into the hub, runs the step's tool calls in
//! parallel, persists the step in one fenced statement, and goes on while
//! the model asks for tools. Retryable provider errors are retried with
//! backoff; an interrupt saves the partial step (with error results for the
//! tool calls that have none) and releases; a stop writes nothing.

mod calls;
mod compaction;
mod cost;
mod draft;
mod metrics;
mod prompt;
mod retry;
mod spend;

use std::{sync::Arc, time::Duration};

use chatd_shared::{
    api,
    db::{
        agents::AgentLimits,
        batched::Batched,
        lifecycle::{Released, StepMessage, TurnEnd},
        messages,
        model_configs::ModelConfig,
        prompt_context,
    },
    parts::Part,
    status::MessageRole,
    stream::StreamEvent,
};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{Instrument, field::Empty};

use self::{
    calls::CallsEnd,
    compaction::Compaction,
    cost::cost_micros,
    prompt::{Loaded, SystemPrompts},
};
pub use self::{cost::estimate_micros, draft::Draft, metrics::TurnMetrics, retry::RetryPolicy};
use crate::{
    agents::AgentContext,
    files::{FileStore, PgFileStore, StoreError, attach_to_prompt},
    llm::{self, Prompt, ProviderError, StreamTimeouts},
    models::{ModelCatalog, ResolvedModel},
    runtime::{ChatRunner, RunContext, RunError},
    streams::RunStream,
    titles::Titles,
    tools::{
        Call, ChatToolset, Outcome, ToolRegistry, ledger,
        mcp::{McpConfig, McpTools},
    },
};

/// How turns run.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Model calls per turn at most; past it the turn ends in `error`.
    pub max_steps: u32,
    /// First-chunk and idle timeouts of every model call.
    pub timeouts: StreamTimeouts,
    /// Retries of failed model calls.
    pub retry: RetryPolicy,
    /// A compaction's summary call that has not answered by then failed
    /// (it is tried twice at most).
    pub summary_timeout: Duration,
    /// How many subagents a chat and a user may have.
    pub agents: AgentLimits,
    /// Time limits of MCP tool calls.
    pub mcp: McpConfig,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            max_steps: 25,
            timeouts: StreamTimeouts::default(),
            retry: RetryPolicy::default(),
            summary_timeout: Duration::from_secs(60),
            agents: AgentLimits::default(),
            mcp: McpConfig::default(),
        }
    }
}

/// The [`ChatRunner`] of a real replica.
pub struct TurnRunner {
    catalog: Arc<ModelCatalog>,
    tools: ToolRegistry,
    mcp: Option<Arc<McpTools>>,
    config: TurnConfig,
    metrics: TurnMetrics,
    /// Where attachments are read from (`None`: PostgreSQL, on the run's pool).
    files: Option<Arc<dyn FileStore>>,
    /// Where a chat's first turn hands its message for a title; none: no
    /// titles are made.
    titles: Option<Titles>,
    /// Where a turn reads its prompt: the runs a claim starts together read
    /// theirs in one statement.
    prompts: Arc<Batched<prompt_context::Loads>>,
}

impl TurnRunner {
    /// A runner calling models from `catalog` with `tools`, reading
    /// prompts through `prompts`.
    pub fn new(
        catalog: Arc<ModelCatalog>,
        tools: ToolRegistry,
        config: TurnConfig,
        metrics: TurnMetrics,
        prompts: Arc<Batched<prompt_context::Loads>>,
    ) -> Self {
        Self {
            catalog,
            tools,
            mcp: None,
            config,
            metrics,
            files: None,
            titles: None,
            prompts,
        }
    }

    /// The same runner, having `titles` make each chat's title.
    pub fn with_titles(mut self, titles: Titles) -> Self {
        self.titles = Some(titles);
        self
    }

    /// Reads attachments from `store` (the one the API stores uploads in).
    pub fn with_file_store(mut self, store: Arc<dyn FileStore>) -> Self {
        self.files = Some(store);
        self
    }

    /// Loads the attachments the prompt refers to and does not hold yet.
    async fn attach_files(&self, run: &RunContext, prompt: &mut Prompt) -> Result<(), RunError> {
        let store = match &self.files {
            Some(store) => store.clone(),
            None => PgFileStore::new(run.db().clone()) as Arc<dyn FileStore>,
        };
        attach_to_prompt(store.as_ref(), prompt)
            .await
            .map_err(|err| match err {
                StoreError::Db(db) => RunError::from(db),
            })
    }

    /// Offers chats the tools of the MCP servers they opt into.
    pub fn with_mcp(mut self, mcp: Arc<McpTools>) -> Self {
        self.mcp = Some(mcp);
        self
    }
}

/// How a turn ended.
enum TurnFlow {
    /// Released, and a queued message continues on this run.
    Continue(Box<messages::Message>),
    /// Released (idle or error), or stopped: the run is over.
    Done,
}

/// How a model call ended.
enum CallEnd {
    /// The model finished its response.
    Finished(Draft),
    /// An interrupt arrived: save what there is.
    Interrupted(Draft),
    /// A fatal error, or retries ran out.
    Failed(ProviderError),
    /// The run must stop and write nothing.
    Stopped,
}

#[async_trait::async_trait]
impl ChatRunner for TurnRunner {
    async fn run(&self, mut run: RunContext) {
        let mut step: i32 = 0;
        // The prompt is loaded once per run and then kept in step with what
        // this run persists: nobody else can add to a chat we own.
        let mut loaded: Option<Loaded> = None;
        loop {
            let started = Instant::now();
            let flow = self.turn(&mut run, &mut step, &mut loaded).await;
            match flow {
                Ok(TurnFlow::Continue(next)) => {
                    if let Some(loaded) = loaded.as_mut() {
                        loaded.append(std::slice::from_ref(&next));
                    }
                    run.stream().event(StreamEvent::Message {
                        chat_id: next.chat_id,
                        message: api::Message::from(next.as_ref()),
                    });
                    self.metrics
                        .turn("released", started.elapsed().as_secs_f64());
                }
                Ok(TurnFlow::Done) => {
                    self.metrics
                        .turn("released", started.elapsed().as_secs_f64());
                    return;
                }
                Err(err) => {
                    match &err {
                        RunError::OwnershipLost | RunError::Stopped(_) => {
                            tracing::info!(chat_id = %run.fence().chat_id, reason = %err, "run stopped")
                        }
                        RunError::Db(db) => tracing::warn!(
                            chat_id = %run.fence().chat_id,
                            error = %chatd_shared::error_chain::Chain(db),
                            "run failed on the database; the lease will hand it back"
                        ),
                    }
                    self.metrics
                        .turn("stopped", started.elapsed().as_secs_f64());
                    return;
                }
            }
        }
    }
}

impl CallEnd {
    /// The `outcome` of the step's span.
    fn as_str(&self) -> &'static str {
        match self {
            Self::Finished(_) => "finished",
            Self::Interrupted(_) => "interrupted",
            Self::Failed(_) => "failed",
            Self::Stopped => "stopped",
        }
    }
}

impl TurnRunner {
    /// One turn: steps until the model stops asking for tools, then release.
    async fn turn(
        &self,
        run: &mut RunContext,
        step: &mut i32,
        loaded: &mut Option<Loaded>,
    ) -> Result<TurnFlow, RunError> {
        let mut resume = Vec::new();
        if loaded.is_none() {
            let model = match self.catalog.resolve(run.chat().model_config_id).await {
                Ok(model) => model,
                Err(err) => return self.fail(run, "model_unavailable", err.to_string()).await,
            };
            let context = self
                .prompts
                .run((run.fence().chat_id, run.chat().owner_id))
                .await?;
            run.set_owner_webhooks(context.owner_webhooks);
            let deployment = run.ops().settings().deployment().await?;
            let system = SystemPrompts::new(
                &deployment.system_prompt,
                &context.user_prompt,
                run.chat().system_prompt.as_deref(),
            );
            let tools = Arc::new(self.toolset(run).await);
            let mut new = Loaded::build(model, tools, system, &context.history);
            new.state.spend_override = context.user_spend_limit;
            new.state.title_from = self.title_source(run, &context.history);
            let history = context.history;
            // A run that takes a turn over: the last step's calls without a result.
            resume = ledger::unresolved(&history);
            // The message that started the turn (and any before it this
            // replica has not fanned out yet) reaches local subscribers
            // before anything this run writes.
            if run.stream().has_subscribers() {
                run.stream().preceding(&history);
            }
            *loaded = Some(new);
        }
        let Some(loaded) = loaded.as_mut() else {
            unreachable!("loaded above");
        };
        let model = loaded.model.clone();
        let tools = loaded.tools.clone();
        if !resume.is_empty() {
            let planned = self.plan_resume(run, &tools, resume).await?;
            match self.answer(run, &tools, *step, &planned, loaded).await? {
                CallsEnd::Answered => *step += 1,
                CallsEnd::Released(released) => {
                    *step += 1;
                    return Ok(flow(*released));
                }
                CallsEnd::Suspended => return Ok(TurnFlow::Done),
            }
        }
        for _ in 0..self.config.max_steps {
            let step_started = Instant::now();
            if let Some(end) = self.prepare_call(run, loaded).await? {
                return self.release(run, end).await;
            }
            if let (Some(titles), Some(first)) = (&self.titles, loaded.state.title_from.take()) {
                // Only once the turn may call its model: a turn the spend
                // limit refused makes no title either.
                titles.generate(run.fence().chat_id, loaded.model.clone(), &first);
            }
            self.attach_files(run, &mut loaded.prompt).await?;
            let call_started = Instant::now();
            let step_span = tracing::info_span!(
                "step",
                step = *step,
                model = %model.config.model,
                tool_calls = Empty,
                outcome = Empty,
            );
            let end = self
                .call_model(run, &model, &loaded.prompt, *step)
                .instrument(step_span.clone())
                .await;
            step_span.record("outcome", end.as_str());
            let runtime_ms = call_started.elapsed().as_millis() as i64;
            let (draft, interrupted) = match end {
                CallEnd::Stopped => {
                    return Err(RunError::Stopped(
                        run.stop_reason()
                            .unwrap_or(crate::runtime::StopReason::OwnershipLost),
                    ));
                }
                CallEnd::Failed(err) => {
                    let code = if err.is_retryable() {
                        "provider_unavailable"
                    } else {
                        "provider_error"
                    };
                    return self.fail(run, code, err.to_string()).await;
                }
                CallEnd::Interrupted(draft) => (draft, true),
                CallEnd::Finished(draft) => (draft, false),
            };
            let calls = draft.calls();
            step_span.record("tool_calls", calls.len());
            if interrupted && !draft.has_output() {
                // Interrupted before the model said anything: nothing to save.
                return self.release(run, TurnEnd::Done).await;
            }
            if interrupted || calls.is_empty() {
                // The usual end of a turn: the last step and the release in
                // one statement. Calls of an interrupted model call never ran.
                let outcomes = vec![Outcome::error("interrupted before the tool ran"); calls.len()];
                let rows = step_rows(&model.config, *step, &draft, &calls, &outcomes, runtime_ms);
                let (committed, released) = run
                    .finish(&rows, TurnEnd::Done)
                    .instrument(step_span.clone())
                    .await?;
                self.committed(run, *step, &committed);
                loaded.append(&committed);
                self.metrics.step(step_started.elapsed().as_secs_f64());
                *step += 1;
                return Ok(flow(released));
            }
            // A step with calls: its message and the calls on record first,
            // then each result as it comes.
            let assistant = assistant_row(&model.config, *step, &draft, runtime_ms);
            let records: Vec<_> = calls
                .iter()
                .map(|call| tools.record_of(call, &tools.route(&call.name)))
                .collect();
            let message = run
                .record_calls(&assistant, &records)
                .instrument(step_span.clone())
                .await?;
            let message = std::slice::from_ref(&message);
            self.committed(run, *step, message);
            loaded.append(message);
            let planned = self.plan_step(&tools, &calls).await;
            let end = self
                .answer(run, &tools, *step, &planned, loaded)
                .instrument(step_span)
                .await?;
            self.metrics.step(step_started.elapsed().as_secs_f64());
            *step += 1;
            match end {
                CallsEnd::Answered => {}
                CallsEnd::Released(released) => return Ok(flow(*released)),
                CallsEnd::Suspended => return Ok(TurnFlow::Done),
            }
        }
        let limit = self.config.max_steps;
        self.fail(run, "step_limit", format!("the model asked for tools {limit} times in a row; stopped at the step limit of {limit}"))
            .await
    }

    /// What must happen before a model call: a compaction when the last
    /// call read past the threshold, then the spend reservation of the
    /// call. `Some` end of the turn when the call must not be made.
    async fn prepare_call(
        &self,
        run: &mut RunContext,
        loaded: &mut Loaded,
    ) -> Result<Option<TurnEnd>, RunError> {
        match self.compact_if_due(run, loaded).await? {
            Compaction::Continue => {}
            Compaction::Interrupted => return Ok(Some(TurnEnd::Done)),
            Compaction::Refused(end) => return Ok(Some(end)),
        }
        let input = spend::input_tokens(loaded);
        self.reserve(run, loaded, input).await
    }

    /// On a chat's first turn (it has no title and no reply yet), the first
    /// message, for the title generator (which works beside the turn).
    fn title_source(&self, run: &RunContext, history: &[messages::Message]) -> Option<Vec<Part>> {
        if self.titles.is_none()
            || !run.chat().title.is_empty()
            || history.iter().any(|m| m.role == MessageRole::Assistant)
        {
            return None;
        }
        history
            .iter()
            .find(|m| m.role == MessageRole::User)
            .map(|first| first.content.clone())
    }

    /// Ends the turn; `Continue` when a queued message is next.
    async fn release(&self, run: &mut RunContext, end: TurnEnd) -> Result<TurnFlow, RunError> {
        Ok(flow(run.release(end).await?))
    }

    /// The tools of `run`'s chat.
    async fn toolset(&self, run: &RunContext) -> ChatToolset {
        let chat = run.chat();
        let agents = AgentContext::new(
            run.ops().clone(),
            *run.fence(),
            Arc::new(chat.clone()),
            self.config.agents,
        );
        ChatToolset::new(
            self.tools.clone(),
            agents,
            self.mcp.clone(),
            &chat.mcp_servers,
            chat.client_tools.clone(),
        )
        .await
    }

    /// Ends the turn in `error` with `last_error` set.
    async fn fail(
        &self,
        run: &mut RunContext,
        code: &str,
        message: String,
    ) -> Result<TurnFlow, RunError> {
        // Subscribers learn it from the `error` status (with `last_error`),
        // on this replica and every other alike.
        tracing::info!(chat_id = %run.fence().chat_id, code, %message, "turn failed");
        self.release(run, TurnEnd::Failed(message)).await
    }

    /// One model call with retries, streamed into the hub.
    async fn call_model(
        &self,
        run: &mut RunContext,
        model: &ResolvedModel,
        prompt: &Prompt,
        step: i32,
    ) -> CallEnd {
        let control = run.control();
        let provider = model.provider.as_ref();
        let mut attempt: u32 = 1;
        loop {
            let mut draft = Draft::default();
            let sent = Instant::now();
            let call_span = tracing::info_span!(
                "provider_call",
                provider = provider.name(),
                model = %model.config.model,
                attempt,
                input_tokens = Empty,
                output_tokens = Empty,
                outcome = Empty,
            );
            let outcome = {
                let attempt = ModelAttempt {
                    provider,
                    prompt,
                    timeouts: self.config.timeouts,
                    step,
                    sent,
                };
                let call = attempt
                    .stream(run.stream(), &mut draft, &self.metrics)
                    .instrument(call_span.clone());
                tokio::select! {
                    biased;
                    _ = control.cancelled() => return CallEnd::Stopped,
                    _ = control.interrupted() => None,
                    outcome = call => Some(outcome),
                }
            };
            let usage = draft.usage();
            call_span.record("input_tokens", usage.input_tokens);
            call_span.record("output_tokens", usage.output_tokens);
            let Some(outcome) = outcome else {
                call_span.record("outcome", "interrupted");
                self.metrics
                    .provider_request(provider.name(), "interrupted");
                return CallEnd::Interrupted(draft);
            };
            let err = match outcome {
                Ok(()) => {
                    call_span.record("outcome", "ok");
                    self.metrics.provider_request(provider.name(), "ok");
                    return CallEnd::Finished(draft);
                }
                Err(err) => err,
            };
            call_span.record("outcome", err.kind.as_str());
            self.metrics
                .provider_request(provider.name(), err.kind.as_str());
            let delay = match err
                .is_retryable()
                .then(|| self.config.retry.delay(attempt, err.retry_after))
                .flatten()
            {
                Some(delay) => delay,
                None => return CallEnd::Failed(err),
            };
            attempt += 1;
            self.metrics.retry(provider.name(), err.kind.as_str());
            self.announce_retry(run, step, attempt, delay, &err).await;
            tokio::select! {
                biased;
                _ = control.cancelled() => return CallEnd::Stopped,
                _ = control.interrupted() => return CallEnd::Interrupted(Draft::default()),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn announce_retry(
        &self,
        run: &mut RunContext,
        step: i32,
        attempt: u32,
        delay: Duration,
        err: &ProviderError,
    ) {
        let delay_ms = delay.as_millis() as u64;
        // Short and bounded: it travels in a notification.
        let error: String = err.to_string().chars().take(300).collect();
        tracing::info!(chat_id = %run.fence().chat_id, attempt, delay_ms, %error, "retrying model call");
        run.stream().retry(step, attempt, delay_ms, &error);
        // A lost fence shows at the step's own write, which stops the run.
        if let Err(err) = run
            .ops()
            .retrying(run.fence(), attempt, delay_ms, error)
            .await
        {
            tracing::warn!(chat_id = %run.fence().chat_id, error = %chatd_shared::error_chain::Chain(&err), "could not record the retry");
        }
    }

    /// Hands committed messages to the hub: they supersede the step's parts.
    fn committed(&self, run: &mut RunContext, step: i32, committed: &[messages::Message]) {
        let views: Vec<api::Message> = committed.iter().map(api::Message::from).collect();
        run.stream().committed(step, &views);
    }
}

/// The messages of a step: the assistant message, then one tool message per call.
fn step_rows(
    model: &ModelConfig,
    step: i32,
    draft: &Draft,
    calls: &[Call],
    outcomes: &[Outcome],
    runtime_ms: i64,
) -> Vec<StepMessage> {
    let mut rows = vec![assistant_row(model, step, draft, runtime_ms)];
    rows.extend(
        calls
            .iter()
            .zip(outcomes)
            .map(|(call, outcome)| calls::tool_row(step, call, outcome)),
    );
    rows
}

/// The assistant message of a step.
fn assistant_row(model: &ModelConfig, step: i32, draft: &Draft, runtime_ms: i64) -> StepMessage {
    let usage = draft.usage();
    StepMessage {
        role: MessageRole::Assistant,
        content: draft.parts(),
        model_config_id: Some(model.id),
        step,
        usage,
        cost_micros: cost_micros(model, &usage),
        runtime_ms: Some(runtime_ms),
    }
}

/// How a run goes on after a release.
fn flow(released: Released) -> TurnFlow {
    match released.next {
        Some(next) => TurnFlow::Continue(Box::new(next)),
        None => TurnFlow::Done,
    }
}

/// One attempt of a step's model call.
struct ModelAttempt<'a> {
    provider: &'a dyn llm::Provider,
    prompt: &'a Prompt,
    timeouts: StreamTimeouts,
    /// The step it is for.
    step: i32,
    /// When it was sent (time to first token counts from here).
    sent: Instant,
}

impl ModelAttempt<'_> {
    /// Streams the call into `draft` and the hub. Returns once the model
    /// finished, or with the call's error.
    async fn stream(
        &self,
        stream: &mut RunStream,
        draft: &mut Draft,
        metrics: &TurnMetrics,
    ) -> Result<(), ProviderError> {
        let mut events = llm::start_call(self.provider, self.prompt, self.timeouts).await?;
        let mut first = true;
        while let Some(event) = events.next().await {
            let event = event?;
            if first {
                first = false;
                metrics.first_token(self.sent.elapsed().as_secs_f64());
            }
            for part in draft.apply(event) {
                stream.part(self.step, part);
            }
            if draft.is_finished() {
                return Ok(());
            }
        }
        Err(ProviderError {
            provider: self.provider.name().to_owned(),
            kind: llm::ErrorKind::Connection,
            status: None,
            message: "the response ended before the model finished".to_owned(),
            retry_after: None,
        })
    }
}

fn result_part(call: &Call, outcome: &Outcome) -> Part {
    Part::ToolResult {
        tool_call_id: call.id.clone(),
        name: call.name.clone(),
        result: outcome.result.clone(),
        is_error: outcome.is_error,
    }
}
