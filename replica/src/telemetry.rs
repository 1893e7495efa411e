//! Metrics: one OpenTelemetry meter provider per replica, exported as
//! Prometheus text on `/metrics` (DESIGN §11). Per replica (not global) so
//! several replicas in one test process keep their numbers apart.

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

/// A replica's meter provider and the registry `/metrics` reads.
#[derive(Clone)]
pub struct Telemetry {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
}

impl Telemetry {
    /// A provider exporting to a fresh Prometheus registry.
    pub fn new() -> Result<Self, String> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_target_info()
            .build()
            .map_err(|err| format!("metrics exporter: {err}"))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        Ok(Self { provider, registry })
    }

    /// The meter every component registers its instruments on.
    pub fn meter(&self) -> Meter {
        self.provider.meter("chatd")
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> Result<String, String> {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .map_err(|err| err.to_string())?;
        String::from_utf8(buffer).map_err(|err| err.to_string())
    }
}
