//! An OTLP trace sink that counts what it receives: the receiver of the
//! tests (`tests/common/otlp.rs`) as a process, for measuring what tracing
//! costs (docs/ARCHITECTURE.md §11).
//!
//! ```sh
//! cargo run --release -p chatd-replica --example otlp_sink -- 4317 4318
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
//!     chatd-loadtest bench ...
//! ```
//!
//! Listens for gRPC on the first port and HTTP/protobuf on the second;
//! prints the spans received every ten seconds and at Ctrl-C.

#[path = "../tests/common/otlp.rs"]
mod otlp;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut ports = std::env::args()
        .skip(1)
        .map(|port| port.parse::<u16>().expect("a port number"));
    let grpc = ports.next().unwrap_or(4317);
    let http = ports.next().unwrap_or(4318);
    let receiver = otlp::Receiver::start_on(grpc, http, true).await;
    println!(
        "otlp sink: grpc on {}, http/protobuf on {}",
        receiver.grpc, receiver.http
    );
    let mut report = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = report.tick() => println!("spans received: {}", receiver.count()),
        }
    }
    println!("spans received: {}", receiver.count());
}
