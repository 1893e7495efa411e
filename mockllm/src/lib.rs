//! chatd-mockllm: a fake LLM that speaks the OpenAI Chat Completions and
//! Anthropic Messages wire formats, so tests, `chatd dev` and load tests run
//! chatd end to end without a real provider (ARCHITECTURE.md §13).
//!
//! # Layout
//!
//! - [`Engine`] decides every answer as a provider-neutral [`Plan`] from a
//!   [`Conversation`]; chatd's in-process `mock` provider calls it directly.
//! - The server ([`MockLlm`]) parses each wire format into a [`Conversation`]
//!   and renders the plan back; the renderers decide nothing.
//!
//! # Endpoints
//!
//! | route | |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI, streaming (`"stream": true`, with `stream_options.include_usage`) or not |
//! | `POST /v1/messages` | Anthropic, streaming (`"stream": true`) or not |
//! | `GET /healthz` | 200 |
//!
//! With [`Behaviour::require_api_key`], OpenAI requests need
//! `Authorization: Bearer KEY` and Anthropic ones `x-api-key: KEY`; otherwise
//! they get a 401 in that provider's error shape. Unparseable bodies get a
//! 400 in the provider's error shape.
//!
//! # Directives
//!
//! A test demands exact behaviour by writing `@mock` followed by whitespace
//! and one JSON object into the text of the **last user message that has
//! text** (an Anthropic user message holding only `tool_result` blocks does
//! not count). Only that one JSON value is read; text after it is ignored.
//! A directive that does not parse or match the schema is answered with a 400
//! naming the problem, so a typo fails loudly.
//!
//! ```text
//! {"steps": [Step, …], "repeat_last": false}    or a single Step (= {"steps": [Step]})
//!
//! Step = {
//!   "text": "exact reply text",     streamed in pieces split before each word
//!                                   (whitespace kept: the pieces concatenate to the text)
//!   "tokens": N,                    or N random words (without "text"; default: the server's
//!                                   tokens, or none when the step makes tool calls)
//!   "thinking": "reasoning",        before the text (OpenAI delta.reasoning_content;
//!                                   Anthropic thinking block + signature_delta)
//!   "tool_calls": [{"name": "…", "args": {…}, "id": "…"}],
//!                                   parallel calls after the text; args default {};
//!                                   ids default to deterministic call_… / toolu_…;
//!                                   a string arg "$ref:CALL_ID/POINTER" becomes the value
//!                                   at that JSON Pointer in call CALL_ID's result (so a
//!                                   script passes on what a tool returned; unknown: 400)
//!   "error": {"status": 400..=599, "retry_after": secs, "message": "…", "times": N},
//!                                   HTTP error; a 429 sends Retry-After (1 unless given)
//!   "cut_after": N, "cut_times": N, drop the connection after N events, without a finish
//!   "malformed": "content_type" | "json" | "sse", "malformed_times": N,
//!   "ttft_ms": T, "token_delay_ms": D   pacing for this step
//!   "input_tokens": N,              report N input tokens instead of the request's words
//!                                   (a chat that looks close to its context limit)
//!   "describe": true,               reply with what the request held (instead of text):
//!                                   {"system": "…", "messages": N, "summary": bool, "tools": N}
//!   "title": "…", "title_delay_ms": T, "title_error": 400..=599
//!                                   how title requests about this conversation are answered
//! }
//! ```
//!
//! `describe` counts messages as the wire format carries them (OpenAI: one
//! per tool result; Anthropic: consecutive messages of a role merged) and
//! says `summary: true` when the system prompt holds a compaction summary
//! (the tag [`SUMMARY_TAG`]).
//!
//! **Step selection.** The call being answered is step *i*, the number of
//! assistant messages after the last user message with text: 0 for the
//! first call of a turn, 1 after one tool round trip, and so on. Past the
//! end of `steps`, the last step answers again when `repeat_last` is true;
//! otherwise the answer is a plain random-words reply, so a scripted tool
//! loop always ends.
//!
//! **Failures and `times`.** Without `times` every attempt at the step
//! fails. With it, the first `times` attempts fail and later ones succeed.
//! When a step has several failures they take turns in the order error,
//! malformed, cut: `{"error": {"status": 429, "times": 1}, "cut_after": 2,
//! "cut_times": 1, "text": "ok"}` answers a 429, then a cut stream, then
//! "ok". Attempts are counted in memory per (conversation, step), where the
//! conversation is a fingerprint of the system prompt and every message, so
//! a retry of the same request counts as the next attempt. Two requests with
//! identical conversations share the counter. The last 10,000 counters are
//! kept.
//!
//! **Events** (what `cut_after` counts and `token_delay_ms` separates): each
//! text or thinking piece, the signature, and each whole tool call. A cut
//! after N events sends the response's preamble (OpenAI role chunk,
//! Anthropic `message_start` and `ping`) and the first N events, then drops
//! the connection: no finish reason, no usage, no `[DONE]`/`message_stop`.
//! A cut non-streaming reply sends half of its JSON, then drops the
//! connection.
//!
//! **Malformed** responses have status 200: `content_type` is an HTML page
//! as `text/html`; `json` is a stream whose second chunk is not JSON
//! (followed by the normal terminator), or a truncated JSON body;
//! `sse` is `text/event-stream` (or `application/json` when not streaming)
//! whose body is binary garbage with no SSE field.
//!
//! Examples:
//!
//! ```text
//! @mock {"text": "Hello there"}
//! @mock {"thinking": "Let me think.", "text": "42"}
//! @mock {"steps": [{"tool_calls": [{"name": "get_time", "args": {"tz": "UTC"}}]},
//!                  {"text": "It is noon."}]}
//! @mock {"error": {"status": 429, "retry_after": 0, "times": 2}, "text": "finally"}
//! @mock {"text": "one two three four", "cut_after": 2, "cut_times": 1}
//! @mock {"malformed": "sse"}
//! ```
//!
//! # Title and summary requests
//!
//! A request whose system prompt starts with [`TITLE_REQUEST`] asks for a
//! title: the answer is the `title` of the directive in its last user
//! message (after `title_delay_ms`), a `title_error` failure, or four random
//! words. One whose system prompt starts with [`SUMMARY_REQUEST`] asks for
//! a compaction summary: the answer is a plain random reply, whatever
//! directives the conversation it summarizes quotes. Both are answered
//! streamed or not, as asked.
//!
//! # Without a directive
//!
//! The reply is [`Behaviour::tokens`] random words. With probability
//! [`Behaviour::tool_call_probability`] it is instead one call, with `{}`
//! arguments, to a random offered tool, unless the last message is a tool
//! result. The failure rates ([`Behaviour::error_rate_429`],
//! [`Behaviour::error_rate_500`], [`Behaviour::cut_rate`]) apply only here.
//!
//! # Determinism
//!
//! A reply (text, ids, tool choice) is drawn from a generator seeded with
//! [`Behaviour::seed`] and the conversation's fingerprint: the same seed and
//! request give a byte-for-byte identical body, in any process built from
//! the same crate versions (OpenAI's `created` is a fixed timestamp). Random failures are drawn from the seed
//! and a count of unscripted requests instead, so a retry of a failed
//! request gets a fresh draw.
//!
//! # Usage
//!
//! One word is one token. Input tokens are the words of the system prompt
//! and all messages; cache-read tokens are those before the last message
//! (OpenAI reports them in `prompt_tokens_details.cached_tokens`, within
//! `prompt_tokens`; Anthropic in `cache_read_input_tokens`, outside
//! `input_tokens`). Output tokens count text and thinking pieces and
//! tool-argument fragments; reasoning tokens count thinking pieces.

mod anthropic;
mod api;
mod behaviour;
mod conversation;
mod directive;
mod engine;
mod openai;
mod plan;
mod recording;
mod refs;
mod server;
mod streaming;
mod wire;
mod words;

pub use api::Api;
pub use behaviour::{Behaviour, InvalidBehaviour};
pub use conversation::{
    Conversation, Message, Purpose, Role, SUMMARY_REQUEST, SUMMARY_TAG, TITLE_REQUEST, ToolResult,
};
pub use directive::{DIRECTIVE_MARKER, DirectiveError, ErrorSpec, Script, Step, ToolCallSpec};
pub use engine::Engine;
pub use plan::{
    ErrorKind, Failure, FinishReason, Malformed, Plan, Reply, ReplyEvent, ToolCall, Usage,
};
pub use recording::{DEFAULT_RECORD_LIMIT, RecordedRequest};
pub use server::{MockLlm, ServerConfig, ServerError};
