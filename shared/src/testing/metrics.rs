//! Reading a replica's `/metrics` the way a test or benchmark needs to.

/// The sum of every sample of metric `name` (any labels) in Prometheus
/// exposition `text`; 0 when there is none.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    metric_sum_where(text, name, &[])
}

/// The sum of the samples of metric `name` whose labels include every one
/// of `labels` (each written `key="value"`); 0 when there is none.
pub fn metric_sum_where(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name)
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// True when `text` has at least one sample of metric `name`.
pub fn metric_present(text: &str, name: &str) -> bool {
    samples(text, name).next().is_some()
}

/// The sample lines of metric `name`.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    text.lines().filter(move |line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_one_name_are_summed() {
        let text =
            "# HELP x_total X\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_total_bucket 9\nx 1\n";
        assert_eq!(metric_sum(text, "x_total"), 5.5);
        assert_eq!(metric_sum(text, "x"), 1.0);
        assert_eq!(metric_sum(text, "y"), 0.0);
        assert_eq!(metric_sum_where(text, "x_total", &["a=\"2\""]), 3.5);
        assert!(metric_present(text, "x") && !metric_present(text, "y"));
    }
}
