//! Metrics: one OpenTelemetry meter provider per replica, exported as
//! Prometheus text on `/metrics` (ARCHITECTURE.md §11). Per replica (not global) so
//! several replicas in one test process keep their numbers apart.

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

/// Why metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The Prometheus exporter could not be built.
    #[error("building the metrics exporter")]
    Exporter(#[source] opentelemetry_sdk::error::OTelSdkError),
    /// The gathered metrics could not be encoded as Prometheus text.
    #[error("encoding metrics")]
    Encode(#[source] prometheus::Error),
    /// The encoder wrote something that is not UTF-8.
    #[error("encoding metrics")]
    NotUtf8(#[source] std::string::FromUtf8Error),
}

/// A replica's meter provider and the registry `/metrics` reads.
#[derive(Clone)]
pub struct Telemetry {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
}

impl Telemetry {
    /// A provider exporting to a fresh Prometheus registry.
    pub fn new() -> Result<Self, TelemetryError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_target_info()
            .build()
            .map_err(TelemetryError::Exporter)?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        Ok(Self { provider, registry })
    }

    /// The meter every component registers its instruments on.
    pub fn meter(&self) -> Meter {
        self.provider.meter("chatd")
    }

    /// Everything, in the Prometheus text format: every instrument, those
    /// not used yet at zero (`chatd_shared::metrics`).
    pub fn render(&self) -> Result<String, TelemetryError> {
        let mut families = self.registry.gather();
        let present: std::collections::HashSet<String> = families
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for (name, declared) in chatd_shared::metrics::declared_histograms() {
            if !present.contains(name) {
                families.push(empty_histogram(name, &declared));
            }
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buffer)
            .map_err(TelemetryError::Encode)?;
        String::from_utf8(buffer).map_err(TelemetryError::NotUtf8)
    }
}

/// A histogram nothing was recorded in: its buckets, all zero.
fn empty_histogram(
    name: &str,
    declared: &chatd_shared::metrics::DeclaredHistogram,
) -> prometheus::proto::MetricFamily {
    use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
    let buckets = declared
        .boundaries
        .iter()
        .map(|bound| {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(0);
            bucket
        })
        .collect();
    let mut histogram = Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(0);
    histogram.set_sample_sum(0.0);
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(declared.description.to_owned());
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(vec![metric]);
    family
}
