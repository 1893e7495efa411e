//! The summary as operators read it: a table on stdout, and the failures on
//! stderr.

use std::fmt::Write;

use crate::{
    database::{DatabaseCost, TopStatement},
    stats::Percentiles,
    summary::{BudgetCheck, Summary},
};

/// The summary as a table, ending with a newline.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    header(&mut out, summary);
    latencies(&mut out, summary);
    streams(&mut out, summary);
    cpu(&mut out, summary);
    ceiling(&mut out, summary);
    if let Some(database) = &summary.database {
        database_cost(&mut out, database);
    }
    if let Some(budgets) = &summary.budgets {
        out.push('\n');
        out.push_str(&render_budgets(budgets));
    }
    failures_line(&mut out, summary);
    out
}

fn header(out: &mut String, summary: &Summary) {
    let p = &summary.parameters;
    let t = &summary.turns;
    let _ = writeln!(
        out,
        "chatd-loadtest: {} chats × {} turns · {} target{} · {} · {} · concurrency {}",
        p.chats,
        p.turns,
        p.targets.len(),
        if p.targets.len() == 1 { "" } else { "s" },
        p.transport.as_str(),
        if p.barrier { "barrier" } else { "no barrier" },
        p.concurrency,
    );
    let _ = writeln!(
        out,
        "turns: {} of {} completed, {} failed, {} not run · {:.1} turns/s over {:.2} s",
        t.completed, t.planned, t.failed, t.not_run, t.per_second, t.phase_seconds
    );
    out.push('\n');
}

fn latencies(out: &mut String, summary: &Summary) {
    let l = &summary.latency_us;
    latency_table(
        out,
        &[
            ("create", &l.create),
            ("time to running", &l.time_to_running),
            ("time to first part", &l.time_to_first_part),
            ("turn", &l.turn),
            ("relay staleness", &l.relay_staleness),
        ],
    );
}

/// A table of latencies, one row per named figure, and a blank line.
pub fn latency_table(out: &mut String, rows: &[(&str, &Percentiles)]) {
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "latency", "count", "p50", "p90", "p99", "max"
    );
    for (name, figure) in rows {
        out.push_str(&figure_row(name, figure));
        out.push('\n');
    }
    out.push('\n');
}

/// One row of the latency table.
pub fn figure_row(name: &str, figure: &Percentiles) -> String {
    let cell = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), format_micros);
    format!(
        "{name:<20} {:>8} {:>10} {:>10} {:>10} {:>10}",
        figure.count,
        cell(figure.p50),
        cell(figure.p90),
        cell(figure.p99),
        cell(figure.max)
    )
}

/// A latency in microseconds, with a unit that keeps it short: `850 µs`,
/// `12.3 ms`, `4.20 s`.
pub fn format_micros(micros: u64) -> String {
    match micros {
        0..1_000 => format!("{micros} µs"),
        1_000..1_000_000 => format!("{:.1} ms", micros as f64 / 1e3),
        _ => format!("{:.2} s", micros as f64 / 1e6),
    }
}

fn streams(out: &mut String, summary: &Summary) {
    let s = &summary.streams;
    let sampled = summary.parameters.staleness_chats;
    let _ = write!(
        out,
        "streams: {} · {} · {}",
        count(s.reconnects, "reconnect"),
        count(s.requests_retried, "retried request"),
        count(s.repeats_dropped, "dropped repeat"),
    );
    if sampled > 0 {
        let _ = write!(
            out,
            " · {} also streamed from every other target; {} of their parts never reached the chat's own stream",
            count(sampled as u64, "chat"),
            s.parts_not_delivered
        );
    }
    out.push('\n');
}

/// `1 chat`, `2 chats`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn ceiling(out: &mut String, summary: &Summary) {
    let (Some(ceiling), Some(ratio)) = (&summary.ceiling, summary.ceiling_ratio()) else {
        return;
    };
    let postgres = ceiling
        .postgres_cpu_us_per_turn
        .map_or_else(String::new, |us| format!(", PostgreSQL {us:.0} µs/turn"));
    let _ = writeln!(
        out,
        "database-only ceiling: {:.0} turns/s ({:.2} statements a turn, {} sessions{postgres}); this run: {:.2} of it",
        ceiling.turns_per_sec, ceiling.statements_per_turn, ceiling.connections, ratio
    );
}

fn cpu(out: &mut String, summary: &Summary) {
    let _ = writeln!(
        out,
        "cpu over the measured window ({:.2} s):",
        summary.measured_seconds
    );
    for process in &summary.cpu {
        let per_turn = process
            .us_per_turn
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.0} µs/turn"));
        let _ = writeln!(
            out,
            "  {:<18} {:>8.2} s {:>6.2} cores {per_turn:>14}",
            process.name, process.seconds, process.cores
        );
    }
    if let Some(machine) = &summary.machine {
        let ours: f64 = summary.cpu.iter().map(|process| process.cores).sum();
        let _ = writeln!(
            out,
            "machine: {:.2} of {:.0} cores busy on average ({:.2} by the processes above, {:.2} by others)",
            machine.busy_cores,
            machine.cores,
            ours,
            (machine.busy_cores - ours).max(0.0)
        );
    }
    if let Some(bytes) = summary.harness_peak_rss_bytes {
        let _ = writeln!(
            out,
            "harness peak memory: {:.1} MiB",
            bytes as f64 / (1024.0 * 1024.0)
        );
    }
}

fn database_cost(out: &mut String, database: &DatabaseCost) {
    let _ = writeln!(
        out,
        "\ndatabase {} ({}): {:.2} transactions/turn",
        database.database, database.window, database.transactions_per_turn
    );
    let Some(statements) = &database.statements else {
        let reason = database
            .statements_unavailable
            .as_deref()
            .unwrap_or("unknown reason");
        let _ = writeln!(out, "  statements per turn not measured: {reason}");
        return;
    };
    let _ = writeln!(
        out,
        "  {:.2} statements/turn ({} in all) · {:.2} NOTIFY statements/turn ({})",
        statements.per_turn, statements.total, statements.notify_per_turn, statements.notify
    );
    top(out, "top statements by calls", &statements.top_by_calls);
    top(out, "top statements by total time", &statements.top_by_time);
}

fn top(out: &mut String, title: &str, statements: &[TopStatement]) {
    if statements.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  {title:<32} {:>9} {:>8} {:>10}",
        "calls", "/turn", "total ms"
    );
    for statement in statements {
        let query: String = statement.query.chars().take(80).collect();
        let _ = writeln!(
            out,
            "    {:>39} {:>8.2} {:>10.1}  {query}",
            statement.calls, statement.per_turn, statement.total_ms
        );
    }
}

/// The budgets table (bench).
pub fn render_budgets(budgets: &[BudgetCheck]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:>10} {:>12}  verdict",
        "budget (ARCHITECTURE.md §15)", "budget", "measured"
    );
    for check in budgets {
        let _ = write!(
            out,
            "{:<36} {:>10} {:>12}  {}",
            check.name,
            check.budget,
            check.measured,
            check.verdict.as_str()
        );
        if let Some(note) = &check.note {
            let _ = write!(out, " ({note})");
        }
        out.push('\n');
    }
    out
}

fn failures_line(out: &mut String, summary: &Summary) {
    if summary.failures.is_empty() {
        out.push_str("\nfailures: none\n");
        return;
    }
    out.push('\n');
    out.push_str(&render_failures(summary));
}

/// What failed: each stage, how often, and its first messages.
pub fn render_failures(summary: &Summary) -> String {
    let mut out = String::from("failures:\n");
    for (stage, failures) in &summary.failures {
        let _ = writeln!(out, "  {stage}: {} failed", failures.count);
        for example in &failures.examples {
            let _ = writeln!(out, "    {example}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::fixtures::full_summary;

    #[test]
    fn latencies_get_a_unit_that_keeps_them_short() {
        assert_eq!(format_micros(0), "0 µs");
        assert_eq!(format_micros(999), "999 µs");
        assert_eq!(format_micros(1_000), "1.0 ms");
        assert_eq!(format_micros(12_345), "12.3 ms");
        assert_eq!(format_micros(4_200_000), "4.20 s");
    }

    #[test]
    fn a_figure_row_has_every_percentile_or_dashes() {
        let row = figure_row(
            "turn",
            &Percentiles {
                count: 150,
                p50: Some(800),
                p90: Some(1_500),
                p99: Some(20_000),
                max: Some(2_000_000),
            },
        );
        assert_eq!(
            row,
            "turn                      150     800 µs     1.5 ms    20.0 ms     2.00 s"
        );
        let empty = figure_row("time to first part", &Percentiles::default());
        assert!(
            empty.ends_with("0          -          -          -          -"),
            "{empty}"
        );
    }

    #[test]
    fn the_table_shows_every_section() {
        let table = render(&full_summary());
        for expected in [
            "chatd-loadtest: 10 chats × 2 turns · 2 targets · ws · barrier · concurrency 10",
            "turns: 18 of 20 completed, 1 failed, 1 not run · 36.0 turns/s over 0.50 s",
            "relay staleness",
            "streams: 2 reconnects · 1 retried request · 0 dropped repeats · 1 chat also streamed from every other target; 0 of their parts",
            "chatd-loadtest         0.25 s   0.50 cores  13889 µs/turn",
            "machine: 1.50 of 2 cores busy on average (0.50 by the processes above, 1.00 by others)",
            "database chatd (turn phase): 2.20 transactions/turn",
            "3.90 statements/turn (70 in all) · 0.28 NOTIFY statements/turn (5)",
            "top statements by calls",
            "turns per second",
            "not met",
            "turn: 1 failed",
            "chat x: turn_failed: boom",
        ] {
            assert!(table.contains(expected), "missing {expected:?} in\n{table}");
        }
    }

    #[test]
    fn missing_statement_statistics_are_explained() {
        let mut summary = full_summary();
        let database = summary.database.as_mut().unwrap();
        database.statements = None;
        database.statements_unavailable = Some("pg_stat_statements is not installed".into());
        let table = render(&summary);
        assert!(
            table.contains("statements per turn not measured: pg_stat_statements is not installed")
        );
    }
}
