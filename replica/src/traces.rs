//! Traces (ARCHITECTURE.md §11): OpenTelemetry spans over OTLP when the standard
//! `OTEL_*` variables name an endpoint, and nothing at all otherwise (no
//! exporter, no OpenTelemetry layer: a span is only what the log lines
//! need).
//!
//! The spans are `tracing` spans (named in [`span`]); the
//! `tracing-opentelemetry` layer turns them into OpenTelemetry spans. A
//! request's `traceparent` header becomes the parent of its HTTP span; the
//! chat transition that request makes stores that span's context with the
//! chat ([`current_traceparent`]), and the run that picks the chat up, on
//! whichever replica, links its span to it ([`link`]).

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The names of chatd's spans, so tests and dashboards agree on them.
pub mod span {
    /// One HTTP request (fields: `http.request.method`, `http.route`,
    /// `http.response.status_code`, `replica_id`).
    pub const HTTP_REQUEST: &str = "http_request";
    /// One run of a chat on its worker (`chat_id`, `generation`,
    /// `replica_id`), linked to the request that made the chat pending.
    pub const RUN: &str = "run";
    /// One step of a turn (`step`, `model`, `outcome`).
    pub const STEP: &str = "step";
    /// One model call attempt (`provider`, `model`, `attempt`,
    /// `input_tokens`, `output_tokens`, `outcome`).
    pub const PROVIDER_CALL: &str = "provider_call";
    /// One tool call (`tool`, `outcome`).
    pub const TOOL_CALL: &str = "tool_call";
    /// One relay connection to a peer replica (`peer`, `url`).
    pub const RELAY_PEER_SESSION: &str = "relay_peer_session";
    /// Every task of one replica (`replica_id`): its log lines carry the
    /// id; never exported (it lives as long as the replica).
    pub const REPLICA: &str = "replica";
}

/// The OTLP transport (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
/// `OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc`.
    Grpc,
    /// `http/protobuf` (the OpenTelemetry default).
    HttpProtobuf,
}

/// Where and how spans are exported, from the standard variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The variable that named the endpoint (for messages).
    pub endpoint_variable: &'static str,
    /// The transport.
    pub protocol: Protocol,
}

impl OtlpSettings {
    /// Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless `OTEL_SDK_DISABLED=true`
    /// or `OTEL_TRACES_EXPORTER=none`. `lookup` reads a variable. A protocol
    /// other than `grpc` or `http/protobuf` is an error naming its variable.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => bail!(
                "OTEL_TRACES_EXPORTER={other} is not supported (chatd exports traces with otlp, or none)"
            ),
        }
        let endpoint_variable = if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        } else if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        } else {
            return Ok(None);
        };
        let (variable, value) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value),
            None => (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                set("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()),
            ),
        };
        let protocol = match value.trim() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpProtobuf,
            other => bail!("{variable}={other} is not supported; use grpc or http/protobuf"),
        };
        Ok(Some(Self {
            endpoint_variable,
            protocol,
        }))
    }

    /// [`Self::from_vars`] over the process environment.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }
}

/// The tracer provider exporting over OTLP as `settings` say (endpoint,
/// headers, timeout and batching from the standard variables). Call it
/// inside the Tokio runtime: the gRPC client lives on it. Shut it down at
/// exit so the last spans are sent.
pub fn provider(settings: &OtlpSettings) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol as Wire, SpanExporter, WithExportConfig};
    let exporter = match settings.protocol {
        Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_protocol(Wire::Grpc)
            .build(),
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(Wire::HttpBinary)
            .build(),
    }
    .with_context(|| format!("the OTLP exporter ({})", settings.endpoint_variable))?;
    let mut resource = Resource::builder();
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    if !named {
        resource = resource.with_service_name("chatd");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The `tracing` layer that turns chatd's spans into `provider`'s
/// OpenTelemetry spans: only spans and events of chatd's own crates, at
/// `info` and above, and never [`span::REPLICA`] (it lives as long as the
/// replica and would collect every log line as an event). Libraries' spans
/// stay out: the exporter's own HTTP/2 client would otherwise trace its
/// exports, whose spans it would export, without end.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::{
        Layer as _,
        filter::{self, FilterExt, Targets},
    };
    let ours = Targets::new()
        .with_target("chatd_replica", tracing::Level::INFO)
        .with_target("chatd_relay", tracing::Level::INFO)
        .with_target("chatd_shared", tracing::Level::INFO);
    let not_the_replica =
        filter::filter_fn(|metadata| !(metadata.is_span() && metadata.name() == span::REPLICA));
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("chatd"))
        .with_filter(ours.and(not_the_replica))
}

/// The W3C `traceparent` of the current span, when traces are exported
/// (`None` otherwise, at the cost of one lookup): what a transition to
/// `pending` stores so the run links to the request.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Links `span` to the span a stored `traceparent` names (no-op when it is
/// absent, malformed, or traces are off).
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Makes `span` a child of the trace a request's `traceparent` (and
/// `tracestate`) header names, if there is one.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    if context.span().span_context().is_valid() {
        // Fails only when the span is disabled or already entered; it is
        // neither here, and a lost parent is no reason to fail a request.
        let _ = span.set_parent(context);
    }
}

/// Request headers as an OpenTelemetry carrier.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<OtlpSettings>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpSettings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn export_is_off_without_an_endpoint() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap(),
            None
        );
    }

    #[test]
    fn the_protocol_follows_the_standard_variables() {
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(on.protocol, Protocol::HttpProtobuf);
        let grpc = settings(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert_eq!(grpc.endpoint_variable, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    }

    #[test]
    fn a_disabled_sdk_or_exporter_none_turns_export_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap(),
            None
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
    }

    #[test]
    fn an_unsupported_protocol_is_an_error_naming_its_variable() {
        let err = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"),
            "{err}"
        );
    }

    #[test]
    fn without_an_exporter_there_is_no_traceparent_to_store() {
        let span = tracing::info_span!("run");
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
        link(&span, Some("garbage"));
    }
}
