//! A test OTLP trace receiver: the collector's two transports, gRPC
//! (`TraceService/Export`, served by tonic) and HTTP/protobuf (`POST
//! /v1/traces`, served by axum), decoded with `opentelemetry-proto`. It keeps
//! every span it gets; tests read them with [`Receiver::spans`]. Also the
//! sink of the tracing-overhead measurement (`examples/otlp_sink.rs`).
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::Span,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

/// One received span with the attributes of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    /// The span as sent.
    pub span: Span,
    /// `service.name` of the process that sent it.
    pub service: Option<String>,
    /// The transport it came over (`grpc` or `http/protobuf`).
    pub transport: &'static str,
}

impl Received {
    /// The span's attribute `key` as text (numbers and booleans printed).
    pub fn attribute(&self, key: &str) -> Option<String> {
        attribute(&self.span.attributes, key)
    }

    /// The span's name.
    pub fn name(&self) -> &str {
        &self.span.name
    }
}

/// `key` among `attributes`, as text.
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    text(value)
}

fn text(value: &AnyValue) -> Option<String> {
    Some(match value.value.as_ref()? {
        Value::StringValue(text) => text.clone(),
        Value::IntValue(number) => number.to_string(),
        Value::DoubleValue(number) => number.to_string(),
        Value::BoolValue(flag) => flag.to_string(),
        _ => return None,
    })
}

/// What both transports share: the spans, the count.
#[derive(Clone, Default)]
struct Store {
    spans: Arc<Mutex<Vec<Received>>>,
    /// Keep only a count (the overhead measurement receives millions).
    count_only: bool,
    count: Arc<std::sync::atomic::AtomicU64>,
    /// Wakes whoever waits for more spans.
    arrived: Arc<tokio::sync::Notify>,
}

impl Store {
    fn add(&self, request: ExportTraceServiceRequest, transport: &'static str) {
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| attribute(&resource.attributes, "service.name"));
            for scope in resource_spans.scope_spans {
                self.count.fetch_add(
                    scope.spans.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                if self.count_only {
                    continue;
                }
                let mut spans = self.spans.lock().expect("the span store");
                spans.extend(scope.spans.into_iter().map(|span| Received {
                    span,
                    service: service.clone(),
                    transport,
                }));
            }
        }
        self.arrived.notify_waiters();
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(State(store): State<Store>, body: Bytes) -> (StatusCode, Vec<u8>) {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            store.add(request, "http/protobuf");
            (
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    /// Where the gRPC transport listens (`OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `grpc`).
    pub grpc: SocketAddr,
    /// Where the HTTP transport listens (`OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `http/protobuf`; the exporter appends `/v1/traces`).
    pub http: SocketAddr,
    store: Store,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    /// Starts both transports on loopback ports of their own (`grpc_port`
    /// and `http_port`, 0 for any); `count_only` keeps no spans.
    pub async fn start_on(grpc_port: u16, http_port: u16, count_only: bool) -> Self {
        let store = Store {
            count_only,
            ..Store::default()
        };
        let stop = CancellationToken::new();
        let incoming = tonic::transport::server::TcpIncoming::bind(SocketAddr::from((
            [127, 0, 0, 1],
            grpc_port,
        )))
        .expect("the gRPC receiver binds");
        let grpc = incoming.local_addr().expect("its address");
        let grpc_server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(store.clone()))
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
        tokio::spawn(grpc_server);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", http_port))
            .await
            .expect("the HTTP receiver binds");
        let http = listener.local_addr().expect("its address");
        let app = axum::Router::new()
            .route("/v1/traces", post(http_export))
            .with_state(store.clone());
        let http_stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(http_stop.cancelled_owned())
                .await
        });
        Self {
            grpc,
            http,
            store,
            stop,
        }
    }

    /// [`Self::start_on`] any free ports, keeping every span.
    pub async fn start() -> Self {
        Self::start_on(0, 0, false).await
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.store.spans.lock().expect("the span store").clone()
    }

    /// A wake-up for the next spans to arrive: enable it before looking at
    /// [`Self::spans`], then await it, and no arrival is missed.
    pub fn arrival(&self) -> tokio::sync::futures::Notified<'_> {
        self.store.arrived.notified()
    }

    /// How many spans were received so far.
    pub fn count(&self) -> u64 {
        self.store.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}
