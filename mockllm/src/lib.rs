//! chatd-mockllm: a fake LLM that speaks the OpenAI Chat Completions and
//! Anthropic Messages wire formats, so tests, `chatd dev` and load tests run
//! chatd end to end without a real provider (DESIGN §13).
