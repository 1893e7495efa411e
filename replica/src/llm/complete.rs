//! Non-streaming model calls (titles, compaction summaries): one request,
//! one JSON answer, read whole. What the answer means is each wire
//! format's business; sending, status checks and reading are shared here.

use futures::StreamExt;
use reqwest::header::ACCEPT;
use serde_json::Value;

use chatd_shared::parts::Usage;

use super::{
    EventStream, ProviderError, StreamEvent,
    error::{self, Phase},
};

/// Largest answer read: a title or a summary is far smaller.
const BODY_LIMIT: usize = 1024 * 1024;

/// The whole answer of a non-streaming call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// Its text (text parts joined; reasoning and tool calls left out).
    pub text: String,
    /// Token usage, as the provider reported it.
    pub usage: Usage,
}

/// Sends `request` and reads its JSON answer: an error status becomes a
/// classified error, a body that is not JSON an invalid response.
pub(crate) async fn send_json(
    provider: &str,
    request: reqwest::RequestBuilder,
) -> Result<Value, ProviderError> {
    let mut response = request
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|error| error::transport(provider, error, Phase::Request))?;
    if !response.status().is_success() {
        return Err(error::from_response(provider, response).await);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| error::transport(provider, error, Phase::Body))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > BODY_LIMIT {
            return Err(error::invalid_response(
                provider,
                "the answer is larger than 1 MiB",
                &body,
            ));
        }
    }
    serde_json::from_slice(&body).map_err(|parse| {
        error::invalid_response(
            provider,
            format_args!("the answer is not the JSON we expect ({parse})"),
            &body,
        )
    })
}

/// A streamed answer read whole: what a provider without a non-streaming
/// call of its own answers.
pub(crate) async fn collect(mut events: EventStream) -> Result<Completion, ProviderError> {
    let mut completion = Completion::default();
    while let Some(event) = events.next().await {
        match event? {
            StreamEvent::TextDelta(text) => completion.text.push_str(&text),
            StreamEvent::Usage(usage) => completion.usage.merge(&usage),
            StreamEvent::Finish(_) => break,
            _ => {}
        }
    }
    Ok(completion)
}
