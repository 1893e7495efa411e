//! Instruments that are on `/metrics` from the moment they are made, zero
//! until used (ARCHITECTURE.md §11), so a dashboard or an alert never queries a
//! series that does not exist yet.
//!
//! OpenTelemetry exports a counter only once something was added to it and
//! a histogram only once something was recorded. Counters made here get a
//! zero for each label set they are known to use (or for no labels when
//! their labels are open-ended, like a provider's name); histograms made
//! here are declared, and the replica's `/metrics` writes an empty one
//! (every bucket 0) for each declared histogram with nothing recorded yet.

use std::{
    collections::BTreeMap,
    sync::{Mutex, OnceLock},
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

use crate::sync::lock;

/// A histogram made through [`histogram`] or [`u64_histogram`]: what an
/// empty one looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredHistogram {
    /// The help text.
    pub description: &'static str,
    /// The upper bounds of its buckets (`+Inf` not included).
    pub boundaries: Vec<f64>,
}

/// Every histogram made in this process, by name. Process-wide (several
/// replicas share a test process): they all make the same instruments.
fn declared() -> &'static Mutex<BTreeMap<&'static str, DeclaredHistogram>> {
    static DECLARED: OnceLock<Mutex<BTreeMap<&'static str, DeclaredHistogram>>> = OnceLock::new();
    DECLARED.get_or_init(Default::default)
}

/// The histograms made so far, by name.
pub fn declared_histograms() -> BTreeMap<&'static str, DeclaredHistogram> {
    lock(declared()).clone()
}

/// A counter with a zero for each of `zeros` (label sets; [`unlabelled`]
/// for a counter without labels or with open-ended ones, like a provider's
/// name).
pub fn counter(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    zeros: Vec<Vec<KeyValue>>,
) -> Counter<u64> {
    let counter = meter
        .u64_counter(name)
        .with_description(description)
        .build();
    for labels in &zeros {
        counter.add(0, labels);
    }
    counter
}

/// The zero of a counter without labels.
pub fn unlabelled() -> Vec<Vec<KeyValue>> {
    vec![Vec::new()]
}

/// The zeros of a counter with one label, `name`, and these `values`.
pub fn one_label(name: &'static str, values: &[&'static str]) -> Vec<Vec<KeyValue>> {
    values
        .iter()
        .map(|value| vec![KeyValue::new(name, *value)])
        .collect()
}

/// A histogram of seconds (or of `unit`) with `boundaries`, declared so it
/// is on `/metrics` before its first record.
pub fn histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    boundaries: &[f64],
) -> Histogram<f64> {
    declare(name, description, boundaries);
    meter
        .f64_histogram(name)
        .with_description(description)
        .with_boundaries(boundaries.to_vec())
        .build()
}

/// [`histogram`] of whole numbers.
pub fn u64_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    boundaries: &[f64],
) -> Histogram<u64> {
    declare(name, description, boundaries);
    meter
        .u64_histogram(name)
        .with_description(description)
        .with_boundaries(boundaries.to_vec())
        .build()
}

fn declare(name: &'static str, description: &'static str, boundaries: &[f64]) {
    lock(declared()).insert(
        name,
        DeclaredHistogram {
            description,
            boundaries: boundaries.to_vec(),
        },
    );
}
