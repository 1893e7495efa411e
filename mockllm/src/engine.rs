//! The behaviour engine: decides the [`Plan`] for a [`Conversation`].
//!
//! It knows nothing about HTTP or wire formats, so the server and chatd's
//! in-process `mock` provider answer identically.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::api::Api;
use crate::behaviour::{Behaviour, InvalidBehaviour};
use crate::conversation::{Conversation, Fnv1a, Purpose};
use crate::directive::{ErrorSpec, Script, Step};
use crate::plan::{ErrorKind, Failure, Malformed, Plan, Reply, ReplyEvent, ToolCall, Usage};
use crate::words;

/// How many (conversation, step) attempt counters are kept; the oldest is
/// forgotten first. Far more than a test suite has in flight at once.
const TRACKED_ATTEMPTS: usize = 10_000;

/// Length of the random part of response and tool-call ids.
const ID_LENGTH: usize = 24;

/// Decides every reply. Cheap to share behind an `Arc`: planning takes no
/// lock except a short one for steps whose failures are counted.
#[derive(Debug)]
pub struct Engine {
    behaviour: Behaviour,
    /// Attempts per (conversation fingerprint, step), for `times` limits.
    attempts: Mutex<Attempts>,
    /// Requests planned without a directive; seeds the random failure draw so
    /// that a retry of the same request gets a fresh draw.
    unscripted: AtomicU64,
}

impl Engine {
    /// An engine answering with `behaviour`, which must be valid.
    pub fn new(behaviour: Behaviour) -> Result<Self, InvalidBehaviour> {
        behaviour.validate()?;
        Ok(Self {
            behaviour,
            attempts: Mutex::new(Attempts::default()),
            unscripted: AtomicU64::new(0),
        })
    }

    /// The defaults this engine answers with.
    pub fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }

    /// Decides the answer to one model call. `api` only shapes generated
    /// tool-call ids. Each call counts as an attempt of a directive step
    /// that can fail (and draws a random failure when rates are set), so
    /// call it exactly once per model call.
    pub fn plan(&self, conversation: &Conversation, api: Api) -> Plan {
        let fingerprint = conversation.fingerprint();
        let mut rng = StdRng::seed_from_u64(mix(self.behaviour.seed, fingerprint));
        match conversation.purpose() {
            Purpose::Title => return self.plan_title(conversation, &mut rng),
            Purpose::Summary => return Plan::Reply(self.random_reply(conversation, &mut rng)),
            Purpose::Reply => {}
        }
        match conversation.last_user_text().and_then(Script::find) {
            Some(Err(error)) => Plan::Fail(Failure::new(400, error.to_string())),
            Some(Ok(script)) => {
                let index = conversation.step_index();
                match script.step(index) {
                    Some(step) => {
                        self.plan_step(step, (fingerprint, index), conversation, api, &mut rng)
                    }
                    None => Plan::Reply(self.random_reply(conversation, &mut rng)),
                }
            }
            None => self.plan_unscripted(conversation, api, &mut rng),
        }
    }

    fn plan_step(
        &self,
        step: &Step,
        attempt_key: (u64, usize),
        conversation: &Conversation,
        api: Api,
        rng: &mut StdRng,
    ) -> Plan {
        let mut cut_after = None;
        if step.can_fail() {
            let attempt = self.next_attempt(attempt_key);
            match StepFailure::for_attempt(step, attempt) {
                StepFailure::Error(spec) => return Plan::Fail(failure_from_spec(spec)),
                StepFailure::Malformed(kind) => return Plan::Malformed(kind),
                StepFailure::Cut(after) => cut_after = Some(after),
                StepFailure::None => {}
            }
        }
        let mut draft = Draft::new(rng);
        if let Some(thinking) = &step.thinking {
            draft.thinking(thinking);
        }
        match (&step.text, step.tokens) {
            _ if step.describe => draft.text(words::pieces(&describe(conversation))),
            (Some(text), _) => draft.text(words::pieces(text)),
            (None, Some(count)) => draft.random_text(rng, count),
            (None, None) if step.tool_calls.is_empty() => {
                draft.random_text(rng, self.behaviour.tokens);
            }
            (None, None) => {}
        }
        for call in &step.tool_calls {
            let id = match &call.id {
                Some(id) => id.clone(),
                None => tool_call_id(api, rng),
            };
            let args = match crate::refs::resolve(&call.args, conversation) {
                Ok(args) => args,
                Err(error) => return Plan::Fail(Failure::new(400, error)),
            };
            draft.tool_call(ToolCall {
                id,
                name: call.name.clone(),
                args,
            });
        }
        let mut reply = draft.finish(conversation, self.pacing(step));
        reply.cut_after = cut_after;
        if let Some(forced) = step.input_tokens {
            reply.usage.input_tokens = forced;
            reply.usage.cache_read_tokens = reply.usage.cache_read_tokens.min(forced);
        }
        Plan::Reply(reply)
    }

    /// A title for the conversation: the directive's `title` (after its
    /// `title_delay_ms`), its `title_error`, or four random words.
    fn plan_title(&self, conversation: &Conversation, rng: &mut StdRng) -> Plan {
        let script = conversation
            .last_user_text()
            .and_then(Script::find)
            .and_then(Result::ok);
        let step = script.as_ref().and_then(|script| script.step(0));
        if let Some(status) = step.and_then(|step| step.title_error) {
            return Plan::Fail(failure(status, None, None));
        }
        let mut draft = Draft::new(rng);
        match step.and_then(|step| step.title.as_deref()) {
            Some(title) => draft.text(words::pieces(title)),
            None => draft.random_text(rng, 4),
        }
        let delay = step
            .and_then(|step| step.title_delay_ms)
            .map_or(Duration::ZERO, Duration::from_millis);
        Plan::Reply(draft.finish(conversation, (delay, Duration::ZERO)))
    }

    fn plan_unscripted(&self, conversation: &Conversation, api: Api, rng: &mut StdRng) -> Plan {
        let behaviour = &self.behaviour;
        let calls_tool = behaviour.tool_call_probability > 0.0
            && !conversation.tools.is_empty()
            && !conversation.answers_tool_result()
            && rng.random_bool(behaviour.tool_call_probability);
        let tool = if calls_tool {
            conversation.tools.choose(rng)
        } else {
            None
        };
        let mut reply = match tool {
            Some(name) => {
                let mut draft = Draft::new(rng);
                draft.tool_call(ToolCall {
                    id: tool_call_id(api, rng),
                    name: name.clone(),
                    args: Value::Object(serde_json::Map::new()),
                });
                draft.finish(conversation, (behaviour.ttft, behaviour.token_delay))
            }
            None => self.random_reply(conversation, rng),
        };

        let failure_rate = behaviour.error_rate_429 + behaviour.error_rate_500 + behaviour.cut_rate;
        if failure_rate <= 0.0 {
            return Plan::Reply(reply);
        }
        let request = self.unscripted.fetch_add(1, Ordering::Relaxed);
        let mut dice = StdRng::seed_from_u64(mix(behaviour.seed, request));
        let roll: f64 = dice.random();
        if roll < behaviour.error_rate_429 {
            return Plan::Fail(failure(429, None, None));
        }
        if roll < behaviour.error_rate_429 + behaviour.error_rate_500 {
            return Plan::Fail(failure(500, None, None));
        }
        if roll < failure_rate {
            reply.cut_after = Some(dice.random_range(0..reply.events.len().max(1)));
        }
        Plan::Reply(reply)
    }

    /// A plain reply of `Behaviour::tokens` random words.
    fn random_reply(&self, conversation: &Conversation, rng: &mut StdRng) -> Reply {
        let mut draft = Draft::new(rng);
        draft.random_text(rng, self.behaviour.tokens);
        draft.finish(
            conversation,
            (self.behaviour.ttft, self.behaviour.token_delay),
        )
    }

    fn pacing(&self, step: &Step) -> (Duration, Duration) {
        (
            step.ttft_ms
                .map_or(self.behaviour.ttft, Duration::from_millis),
            step.token_delay_ms
                .map_or(self.behaviour.token_delay, Duration::from_millis),
        )
    }

    /// The number of earlier attempts at this (conversation fingerprint, step).
    fn next_attempt(&self, key: (u64, usize)) -> u32 {
        self.attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next(key)
    }
}

/// What a step does on a given attempt. Failure kinds take turns in a fixed
/// order: first the error's `times` attempts, then the malformed ones, then
/// the cut ones; a kind without a limit fails every remaining attempt.
#[derive(Debug, PartialEq)]
enum StepFailure<'a> {
    Error(&'a ErrorSpec),
    Malformed(Malformed),
    Cut(usize),
    None,
}

impl<'a> StepFailure<'a> {
    fn for_attempt(step: &'a Step, attempt: u32) -> Self {
        let mut remaining = attempt;
        let mut fails = |times: Option<u32>| match times {
            None => true,
            Some(times) if remaining < times => true,
            Some(times) => {
                remaining -= times;
                false
            }
        };
        if let Some(error) = &step.error
            && fails(error.times)
        {
            return Self::Error(error);
        }
        if let Some(kind) = step.malformed
            && fails(step.malformed_times)
        {
            return Self::Malformed(kind);
        }
        if let Some(after) = step.cut_after
            && fails(step.cut_times)
        {
            return Self::Cut(after);
        }
        Self::None
    }
}

fn failure_from_spec(spec: &ErrorSpec) -> Failure {
    failure(spec.status, spec.retry_after, spec.message.clone())
}

/// A failure with the provider's usual defaults: a 429 always says when to
/// retry (1 s unless told), and every status has a plausible message.
fn failure(status: u16, retry_after: Option<u64>, message: Option<String>) -> Failure {
    let kind = ErrorKind::from_status(status);
    Failure {
        status,
        kind,
        message: message.unwrap_or_else(|| default_message(kind).to_owned()),
        retry_after: retry_after.or((kind == ErrorKind::RateLimit).then_some(1)),
    }
}

fn default_message(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "mock: invalid request",
        ErrorKind::Authentication => "mock: invalid API key",
        ErrorKind::PermissionDenied => "mock: permission denied",
        ErrorKind::NotFound => "mock: not found",
        ErrorKind::RequestTooLarge => "mock: request too large",
        ErrorKind::RateLimit => "mock: rate limit exceeded, retry later",
        ErrorKind::Server => "mock: internal server error",
        ErrorKind::Overloaded => "mock: overloaded",
    }
}

fn tool_call_id(api: Api, rng: &mut impl Rng) -> String {
    format!(
        "{}{}",
        api.tool_call_id_prefix(),
        words::random_id(rng, ID_LENGTH)
    )
}

/// A reply being assembled, with its token accounting.
struct Draft {
    id: String,
    events: Vec<ReplyEvent>,
    output_tokens: u64,
    reasoning_tokens: u64,
}

impl Draft {
    fn new(rng: &mut impl Rng) -> Self {
        Self {
            id: words::random_id(rng, ID_LENGTH),
            events: Vec::new(),
            output_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    fn thinking(&mut self, thinking: &str) {
        for piece in words::pieces(thinking) {
            self.events.push(ReplyEvent::Thinking(piece.to_owned()));
            self.output_tokens += 1;
            self.reasoning_tokens += 1;
        }
        self.events.push(ReplyEvent::Signature(signature(thinking)));
    }

    fn text<S: Into<String>>(&mut self, pieces: impl IntoIterator<Item = S>) {
        for piece in pieces {
            self.events.push(ReplyEvent::Text(piece.into()));
            self.output_tokens += 1;
        }
    }

    fn random_text(&mut self, rng: &mut impl Rng, count: usize) {
        self.text(words::random_pieces(rng, count));
    }

    fn tool_call(&mut self, call: ToolCall) {
        self.output_tokens += call.fragments().len() as u64;
        self.events.push(ReplyEvent::ToolCall(call));
    }

    fn finish(
        self,
        conversation: &Conversation,
        (ttft, token_delay): (Duration, Duration),
    ) -> Reply {
        Reply {
            id: self.id,
            ttft,
            token_delay,
            events: self.events,
            cut_after: None,
            usage: Usage {
                input_tokens: conversation.input_tokens(),
                output_tokens: self.output_tokens,
                reasoning_tokens: self.reasoning_tokens,
                cache_read_tokens: conversation.cached_tokens(),
            },
        }
    }
}

/// What `describe` replies: the request as the model received it.
fn describe(conversation: &Conversation) -> String {
    serde_json::json!({
        "system": conversation.system,
        "messages": conversation.messages.len(),
        "summary": conversation.has_summary(),
        "tools": conversation.tools.len(),
    })
    .to_string()
}

/// A stable stand-in for a provider's reasoning signature: the same thinking
/// always gets the same signature.
fn signature(thinking: &str) -> String {
    let mut hash = Fnv1a::new();
    hash.write_str(thinking);
    format!("mocksig_{:016x}", hash.finish())
}

/// Combines two values into one well-spread seed (splitmix64 finaliser).
fn mix(seed: u64, value: u64) -> u64 {
    let mut z = seed
        .wrapping_add(value.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bounded attempt counters; when full, the oldest counter is dropped (its
/// step would then fail again from the start, which only a test with more
/// than [`TRACKED_ATTEMPTS`] live scripted conversations could notice).
#[derive(Debug, Default)]
struct Attempts {
    counts: HashMap<(u64, usize), u32>,
    order: VecDeque<(u64, usize)>,
}

impl Attempts {
    fn next(&mut self, key: (u64, usize)) -> u32 {
        if let Some(count) = self.counts.get_mut(&key) {
            let attempt = *count;
            *count = count.saturating_add(1);
            return attempt;
        }
        if self.order.len() >= TRACKED_ATTEMPTS
            && let Some(oldest) = self.order.pop_front()
        {
            self.counts.remove(&oldest);
        }
        self.order.push_back(key);
        self.counts.insert(key, 1);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Message, Role};
    use crate::plan::FinishReason;
    use serde_json::json;

    fn engine() -> Engine {
        Engine::new(Behaviour::default()).expect("valid behaviour")
    }

    fn ask(text: &str) -> Conversation {
        Conversation {
            messages: vec![Message::user(text)],
            ..Conversation::default()
        }
    }

    fn reply(plan: Plan) -> Reply {
        match plan {
            Plan::Reply(reply) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn unscripted_reply_has_the_configured_length() {
        let reply = reply(engine().plan(&ask("hello"), Api::OpenAi));
        assert_eq!(reply.text().split(' ').count(), 20);
        assert_eq!(reply.usage.output_tokens, 20);
        assert_eq!(reply.finish_reason(), FinishReason::Stop);
    }

    #[test]
    fn same_seed_and_conversation_give_the_same_plan() {
        let conversation = ask("hello");
        let a = engine().plan(&conversation, Api::OpenAi);
        let b = engine().plan(&conversation, Api::OpenAi);
        assert_eq!(a, b);
        let other_seed = Engine::new(Behaviour {
            seed: 1,
            ..Behaviour::default()
        })
        .expect("valid");
        assert_ne!(a, other_seed.plan(&conversation, Api::OpenAi));
    }

    #[test]
    fn scripted_text_thinking_and_tool_calls_in_order() {
        let plan = engine().plan(
            &ask(r#"@mock {"thinking": "hmm ok", "text": "Hi there", "tool_calls": [{"name": "now"}, {"name": "echo", "args": {"a": 1}}]}"#),
            Api::Anthropic,
        );
        let reply = reply(plan);
        assert_eq!(reply.thinking(), "hmm ok");
        assert!(reply.signature().is_some());
        assert_eq!(reply.text(), "Hi there");
        let calls: Vec<_> = reply.tool_calls().collect();
        assert_eq!(calls.len(), 2);
        assert!(calls[0].id.starts_with("toolu_"));
        assert_ne!(calls[0].id, calls[1].id);
        assert_eq!(calls[1].args, json!({"a": 1}));
        assert_eq!(reply.finish_reason(), FinishReason::ToolCalls);
        assert_eq!(reply.usage.reasoning_tokens, 2);
        assert!(matches!(reply.events[0], ReplyEvent::Thinking(_)));
    }

    #[test]
    fn tool_calls_alone_have_no_text() {
        let reply = reply(engine().plan(
            &ask(r#"@mock {"tool_calls": [{"name": "now"}]}"#),
            Api::OpenAi,
        ));
        assert_eq!(reply.text(), "");
        assert!(reply.tool_calls().all(|call| call.id.starts_with("call_")));
    }

    #[test]
    fn step_is_chosen_by_assistant_messages_after_the_user_text() {
        let engine = engine();
        let directive = r#"@mock {"steps": [{"tool_calls": [{"name": "now", "id": "call_1"}]}, {"text": "it is noon"}]}"#;
        let mut conversation = ask(directive);
        let first = reply(engine.plan(&conversation, Api::OpenAi));
        assert_eq!(first.finish_reason(), FinishReason::ToolCalls);

        conversation.messages.push(Message {
            role: Role::Assistant,
            text: String::new(),
            tool_calls: first.tool_calls().cloned().collect(),
            tool_results: Vec::new(),
        });
        conversation
            .messages
            .push(Message::tool_result("call_1", "12:00"));
        assert_eq!(
            reply(engine.plan(&conversation, Api::OpenAi)).text(),
            "it is noon"
        );

        conversation.messages.push(Message::assistant("it is noon"));
        conversation
            .messages
            .push(Message::tool_result("call_1", "late"));
        let past_end = reply(engine.plan(&conversation, Api::OpenAi));
        assert_eq!(past_end.finish_reason(), FinishReason::Stop);
        assert_eq!(past_end.text().split(' ').count(), 20);
    }

    #[test]
    fn times_limits_failures_per_conversation_and_step() {
        let engine = engine();
        let conversation = ask(r#"@mock {"error": {"status": 429, "times": 2}, "text": "ok"}"#);
        for _ in 0..2 {
            match engine.plan(&conversation, Api::OpenAi) {
                Plan::Fail(failure) => {
                    assert_eq!(failure.status, 429);
                    assert_eq!(failure.retry_after, Some(1));
                }
                other => panic!("expected a 429, got {other:?}"),
            }
        }
        assert_eq!(reply(engine.plan(&conversation, Api::OpenAi)).text(), "ok");
        assert_eq!(reply(engine.plan(&conversation, Api::OpenAi)).text(), "ok");
    }

    #[test]
    fn failure_kinds_take_turns_in_order() {
        let step: Step = serde_json::from_value(json!({
            "error": {"status": 500, "times": 1},
            "malformed": "json", "malformed_times": 1,
            "cut_after": 2, "cut_times": 1
        }))
        .expect("valid step");
        assert!(matches!(
            StepFailure::for_attempt(&step, 0),
            StepFailure::Error(_)
        ));
        assert_eq!(
            StepFailure::for_attempt(&step, 1),
            StepFailure::Malformed(Malformed::Json)
        );
        assert_eq!(StepFailure::for_attempt(&step, 2), StepFailure::Cut(2));
        assert_eq!(StepFailure::for_attempt(&step, 3), StepFailure::None);
    }

    #[test]
    fn failure_without_times_fails_every_attempt() {
        let engine = engine();
        let conversation = ask(r#"@mock {"error": {"status": 529}}"#);
        for _ in 0..3 {
            assert!(matches!(
                engine.plan(&conversation, Api::Anthropic),
                Plan::Fail(Failure {
                    status: 529,
                    kind: ErrorKind::Overloaded,
                    ..
                })
            ));
        }
    }

    #[test]
    fn invalid_directive_is_a_400() {
        match engine().plan(&ask("@mock {\"txet\": 1}"), Api::OpenAi) {
            Plan::Fail(failure) => {
                assert_eq!(failure.status, 400);
                assert!(failure.message.contains("txet"), "{}", failure.message);
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn random_tool_call_only_when_offered_and_not_answering_a_result() {
        let engine = Engine::new(Behaviour {
            tool_call_probability: 1.0,
            ..Behaviour::default()
        })
        .expect("valid");
        let mut conversation = ask("what time is it");
        assert_eq!(
            reply(engine.plan(&conversation, Api::OpenAi)).finish_reason(),
            FinishReason::Stop
        );

        conversation.tools = vec!["now".into()];
        let call = reply(engine.plan(&conversation, Api::OpenAi));
        assert_eq!(
            call.tool_calls()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["now"]
        );

        conversation
            .messages
            .push(Message::tool_result("call_x", "noon"));
        assert_eq!(
            reply(engine.plan(&conversation, Api::OpenAi)).finish_reason(),
            FinishReason::Stop
        );
    }

    #[test]
    fn random_failures_follow_the_rates_and_retries_get_fresh_draws() {
        let engine = Engine::new(Behaviour {
            error_rate_429: 0.5,
            ..Behaviour::default()
        })
        .expect("valid");
        let conversation = ask("hello");
        let failures = (0..200)
            .filter(|_| matches!(engine.plan(&conversation, Api::OpenAi), Plan::Fail(_)))
            .count();
        assert!((50..150).contains(&failures), "{failures} of 200 failed");
    }

    #[test]
    fn forced_input_tokens_replace_the_word_count() {
        let reply = reply(engine().plan(
            &ask(r#"@mock {"text": "ok", "input_tokens": 90000}"#),
            Api::OpenAi,
        ));
        assert_eq!(reply.usage.input_tokens, 90_000);
        assert_eq!(reply.usage.output_tokens, 1);
    }

    #[test]
    fn describe_replies_with_what_the_request_held() {
        let conversation = Conversation {
            system: "Be kind.\n\n<conversation_summary>earlier</conversation_summary>".into(),
            messages: vec![
                Message::user("hi"),
                Message::assistant("hello"),
                Message::user(r#"@mock {"describe": true}"#),
            ],
            tools: vec!["now".into()],
        };
        let text = reply(engine().plan(&conversation, Api::Anthropic)).text();
        let described: Value = serde_json::from_str(&text).expect("a JSON description");
        assert_eq!(
            described,
            json!({"system": conversation.system, "messages": 3, "summary": true, "tools": 1})
        );
    }

    #[test]
    fn title_requests_get_the_scripted_title_or_random_words() {
        let titled = |text: &str| Conversation {
            system: "Write a title for this conversation.".into(),
            messages: vec![Message::user(text)],
            tools: Vec::new(),
        };
        let scripted = reply(engine().plan(
            &titled(
                r#"@mock {"text": "reply", "title": "Fixing the login bug", "title_delay_ms": 5}"#,
            ),
            Api::OpenAi,
        ));
        assert_eq!(scripted.text(), "Fixing the login bug");
        assert_eq!(scripted.ttft, Duration::from_millis(5));
        let random = reply(engine().plan(&titled("hello there"), Api::OpenAi));
        assert_eq!(random.text().split(' ').count(), 4);
        match engine().plan(&titled(r#"@mock {"title_error": 503}"#), Api::OpenAi) {
            Plan::Fail(failure) => assert_eq!(failure.status, 503),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn summary_requests_ignore_the_directives_they_summarize() {
        let conversation = Conversation {
            system: "Summarize the conversation below.".into(),
            messages: vec![Message::user(r#"User: @mock {"error": {"status": 500}}"#)],
            tools: Vec::new(),
        };
        let summary = reply(engine().plan(&conversation, Api::OpenAi));
        assert_eq!(summary.text().split(' ').count(), 20);
    }

    #[test]
    fn attempt_counters_are_bounded() {
        let mut attempts = Attempts::default();
        for key in 0..(TRACKED_ATTEMPTS as u64 + 10) {
            attempts.next((key, 0));
        }
        assert_eq!(attempts.counts.len(), TRACKED_ATTEMPTS);
        assert_eq!(attempts.next((0, 0)), 0, "the oldest counter was forgotten");
        assert_eq!(attempts.next((TRACKED_ATTEMPTS as u64 + 9, 0)), 1);
    }
}
