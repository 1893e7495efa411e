//! Reading a replica's `/metrics` the way a test or benchmark needs to.

/// The sum of every sample of metric `name` (any labels) in Prometheus
/// exposition `text`; 0 when there is none.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
    }
}
