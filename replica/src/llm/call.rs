//! One model call with the turn loop's timeouts (ARCHITECTURE.md §8).

use std::time::Duration;

use futures::StreamExt;
use tokio::time::{Instant, timeout_at};

use super::{ErrorKind, EventStream, Prompt, Provider, ProviderError, StreamEvent, StreamTimeouts};

/// Starts a streaming call with timeouts: the request and the first event
/// must arrive within `timeouts.first_chunk` of this call, and each later
/// event within `timeouts.idle` of asking for it (so a slow consumer does
/// not count against the provider). Either expiry ends the stream with an
/// [`ErrorKind::Timeout`] error. The stream also ends after `Finish`, and
/// a provider stream that ends without one ends with a connection error.
pub async fn start_call(
    provider: &dyn Provider,
    prompt: &Prompt,
    timeouts: StreamTimeouts,
) -> Result<EventStream, ProviderError> {
    let deadline = Instant::now() + timeouts.first_chunk;
    let name = provider.name();
    let events = match timeout_at(deadline, provider.stream(prompt)).await {
        Ok(result) => result?,
        Err(_elapsed) => {
            return Err(timeout(
                name,
                format_args!("no response within {:?}", timeouts.first_chunk),
            ));
        }
    };
    let timed = Timed {
        provider: name.to_owned(),
        events,
        first_deadline: Some(deadline),
        timeouts,
        finished: false,
    };
    Ok(Box::pin(futures::stream::unfold(timed, Timed::next)))
}

/// A provider's stream under deadlines.
struct Timed {
    provider: String,
    events: EventStream,
    /// The deadline for the first event; `None` once it arrived.
    first_deadline: Option<Instant>,
    timeouts: StreamTimeouts,
    finished: bool,
}

impl Timed {
    async fn next(mut self) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
        if self.finished {
            return None;
        }
        let (deadline, failure) = match self.first_deadline.take() {
            Some(deadline) => (deadline, Expiry::FirstChunk(self.timeouts.first_chunk)),
            None => (
                Instant::now() + self.timeouts.idle,
                Expiry::Idle(self.timeouts.idle),
            ),
        };
        let item = match timeout_at(deadline, self.events.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => Err(ProviderError::new(
                &self.provider,
                ErrorKind::Connection,
                "the stream ended without a finish",
            )),
            Err(_elapsed) => Err(failure.error(&self.provider)),
        };
        self.finished = matches!(item, Err(_) | Ok(StreamEvent::Finish(_)));
        Some((item, self))
    }
}

/// Which timeout expired.
enum Expiry {
    FirstChunk(Duration),
    Idle(Duration),
}

impl Expiry {
    fn error(&self, provider: &str) -> ProviderError {
        match self {
            Self::FirstChunk(limit) => timeout(
                provider,
                format_args!("no first event within {limit:?} of the request"),
            ),
            Self::Idle(limit) => timeout(
                provider,
                format_args!("no event for {limit:?} (idle timeout)"),
            ),
        }
    }
}

fn timeout(provider: &str, what: std::fmt::Arguments<'_>) -> ProviderError {
    ProviderError::new(provider, ErrorKind::Timeout, format!("timed out: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::FinishReason;

    /// A provider whose response takes `response_delay`, then yields each
    /// event after its delay.
    struct Scripted {
        response_delay: Duration,
        events: Vec<(Duration, StreamEvent)>,
    }

    #[async_trait::async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }

        async fn stream(&self, _prompt: &Prompt) -> Result<EventStream, ProviderError> {
            tokio::time::sleep(self.response_delay).await;
            let events = self.events.clone();
            Ok(Box::pin(futures::stream::iter(events).then(
                |(delay, event)| async move {
                    tokio::time::sleep(delay).await;
                    Ok(event)
                },
            )))
        }
    }

    fn prompt() -> Prompt {
        Prompt {
            model: "m".into(),
            system: None,
            messages: Vec::new(),
            tools: Vec::new(),
            max_output_tokens: 10,
            options: serde_json::Value::Null,
            files: Default::default(),
        }
    }

    const TIMEOUTS: StreamTimeouts = StreamTimeouts {
        first_chunk: Duration::from_secs(60),
        idle: Duration::from_secs(10),
    };

    fn text(delay_secs: u64, text: &str) -> (Duration, StreamEvent) {
        (
            Duration::from_secs(delay_secs),
            StreamEvent::TextDelta(text.into()),
        )
    }

    fn finish(delay_secs: u64) -> (Duration, StreamEvent) {
        (
            Duration::from_secs(delay_secs),
            StreamEvent::Finish(FinishReason::Stop),
        )
    }

    async fn run(provider: &Scripted) -> Vec<Result<StreamEvent, ProviderError>> {
        match start_call(provider, &prompt(), TIMEOUTS).await {
            Ok(stream) => stream.collect().await,
            Err(error) => vec![Err(error)],
        }
    }

    fn timeout_message(items: &[Result<StreamEvent, ProviderError>]) -> String {
        match items.last() {
            Some(Err(error)) if error.kind == ErrorKind::Timeout => error.to_string(),
            other => panic!("expected a timeout last, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_within_the_limits_pass_through_and_finish_ends_the_stream() {
        let provider = Scripted {
            response_delay: Duration::from_secs(30),
            events: vec![
                text(29, "a"),
                text(9, "b"),
                finish(9),
                text(0, "after finish"),
            ],
        };
        let items = run(&provider).await;
        assert_eq!(
            items,
            [
                Ok(StreamEvent::TextDelta("a".into())),
                Ok(StreamEvent::TextDelta("b".into())),
                Ok(StreamEvent::Finish(FinishReason::Stop)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_response_headers_time_out() {
        let provider = Scripted {
            response_delay: Duration::from_secs(61),
            events: vec![finish(0)],
        };
        let started = Instant::now();
        let items = run(&provider).await;
        assert_eq!(
            timeout_message(&items),
            "scripted: timed out: no response within 60s"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn first_chunk_timeout_covers_request_and_first_event() {
        let provider = Scripted {
            response_delay: Duration::from_secs(40),
            events: vec![text(21, "late"), finish(0)],
        };
        let started = Instant::now();
        let items = run(&provider).await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            timeout_message(&items),
            "scripted: timed out: no first event within 60s of the request"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_gap_times_out_after_the_events_so_far() {
        let provider = Scripted {
            response_delay: Duration::ZERO,
            events: vec![text(1, "a"), text(11, "stalled"), finish(0)],
        };
        let items = run(&provider).await;
        assert_eq!(items[0], Ok(StreamEvent::TextDelta("a".into())));
        assert_eq!(items.len(), 2);
        assert_eq!(
            timeout_message(&items),
            "scripted: timed out: no event for 10s (idle timeout)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_does_not_count_as_idle() {
        let provider = Scripted {
            response_delay: Duration::ZERO,
            events: vec![text(0, "a"), text(5, "b"), finish(0)],
        };
        let mut stream = start_call(&provider, &prompt(), TIMEOUTS)
            .await
            .expect("call starts");
        assert_eq!(
            stream.next().await,
            Some(Ok(StreamEvent::TextDelta("a".into())))
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            stream.next().await,
            Some(Ok(StreamEvent::TextDelta("b".into())))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_without_finish_ends_with_a_connection_error() {
        let provider = Scripted {
            response_delay: Duration::ZERO,
            events: vec![text(0, "a")],
        };
        let items = run(&provider).await;
        assert_eq!(items.len(), 2);
        match &items[1] {
            Err(error) => assert_eq!(error.kind, ErrorKind::Connection),
            other => panic!("expected a connection error, got {other:?}"),
        }
    }
}
