//! The budgets of ARCHITECTURE.md §15 that a bench measures, checked against a
//! run's summary.

use crate::{
    report::format_micros,
    summary::{BudgetCheck, Summary, Verdict},
};

/// Turns per second the standard scenario must reach.
const TURNS_PER_SECOND: f64 = 1000.0;
/// Database statements per turn at most.
const STATEMENTS_PER_TURN: f64 = 6.0;
/// NOTIFY statements per turn at most, on average.
const NOTIFY_PER_TURN: f64 = 1.0;
/// Latency the cross-replica path may add to a part, p99, microseconds.
const RELAY_ADDED_P99_US: u64 = 2_000;
/// The scenario the throughput budget is stated for.
const STANDARD_CHATS: usize = 5000;
/// The scenario the throughput budget is stated for.
const STANDARD_TURNS: u32 = 10;

/// Each budget, measured or not.
pub fn check(summary: &Summary) -> Vec<BudgetCheck> {
    vec![
        throughput(summary),
        statements(summary),
        notify(summary),
        relay(summary),
    ]
}

fn throughput(summary: &Summary) -> BudgetCheck {
    let p = &summary.parameters;
    let standard = p.chats == STANDARD_CHATS && p.turns == STANDARD_TURNS;
    let note = (!standard).then(|| {
        format!(
            "stated for {STANDARD_CHATS} chats × {STANDARD_TURNS} turns; this run had {} × {}",
            p.chats, p.turns
        )
    });
    if summary.turns.completed == 0 {
        return unmeasured("turns per second", "≥ 1000", "no turn completed".to_owned());
    }
    let measured = summary.turns.per_second;
    BudgetCheck {
        name: "turns per second".to_owned(),
        budget: "≥ 1000".to_owned(),
        measured: format!("{measured:.0}"),
        verdict: verdict(measured >= TURNS_PER_SECOND),
        note,
    }
}

fn statements(summary: &Summary) -> BudgetCheck {
    per_turn(
        summary,
        "DB statements per turn",
        "≤ 6",
        STATEMENTS_PER_TURN,
        |cost| cost.per_turn,
    )
}

fn notify(summary: &Summary) -> BudgetCheck {
    per_turn(
        summary,
        "NOTIFY statements per turn",
        "≤ 1",
        NOTIFY_PER_TURN,
        |cost| cost.notify_per_turn,
    )
}

fn per_turn(
    summary: &Summary,
    name: &str,
    budget: &str,
    limit: f64,
    value: fn(&crate::database::StatementCost) -> f64,
) -> BudgetCheck {
    let Some(database) = &summary.database else {
        return unmeasured(name, budget, "the database was not read".to_owned());
    };
    let Some(statements) = &database.statements else {
        let reason = database
            .statements_unavailable
            .clone()
            .unwrap_or_else(|| "pg_stat_statements is unavailable".to_owned());
        return unmeasured(name, budget, reason);
    };
    if summary.turns.completed == 0 {
        return unmeasured(name, budget, "no turn completed".to_owned());
    }
    let measured = value(statements);
    BudgetCheck {
        name: name.to_owned(),
        budget: budget.to_owned(),
        measured: format!("{measured:.2}"),
        verdict: verdict(measured <= limit),
        note: None,
    }
}

fn relay(summary: &Summary) -> BudgetCheck {
    let name = "cross-replica part latency, p99 added";
    let budget = "≤ 2 ms";
    let staleness = &summary.latency_us.relay_staleness;
    let missed = summary.streams.parts_not_delivered;
    let Some(p99) = staleness.p99 else {
        return unmeasured(
            name,
            budget,
            "no part of a sampled chat reached its stream (see --staleness-sample)".to_owned(),
        );
    };
    let measured = format_micros(p99);
    if missed > 0 {
        return BudgetCheck {
            name: name.to_owned(),
            budget: budget.to_owned(),
            measured,
            verdict: Verdict::NotMet,
            note: Some(format!(
                "{missed} parts streamed on another replica never reached the chat's stream: the percentiles cover only parts that did. Parts of a step that committed before the chat's replica followed its run are superseded by the step's message; a zero-delay model finishes whole replies that fast. For the relay's latency stream at a model's pace: --message '@mock {{\"tokens\": 40, \"token_delay_ms\": 20}}'"
            )),
        };
    }
    BudgetCheck {
        name: name.to_owned(),
        budget: budget.to_owned(),
        measured,
        verdict: verdict(p99 <= RELAY_ADDED_P99_US),
        note: None,
    }
}

fn verdict(met: bool) -> Verdict {
    if met { Verdict::Met } else { Verdict::NotMet }
}

fn unmeasured(name: &str, budget: &str, reason: String) -> BudgetCheck {
    BudgetCheck {
        name: name.to_owned(),
        budget: budget.to_owned(),
        measured: "-".to_owned(),
        verdict: Verdict::NotMeasured,
        note: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::fixtures::full_summary;

    fn verdicts(summary: &Summary) -> Vec<(String, Verdict)> {
        check(summary)
            .into_iter()
            .map(|check| (check.name, check.verdict))
            .collect()
    }

    #[test]
    fn each_budget_is_judged_on_its_figure() {
        let mut summary = full_summary();
        summary.turns.per_second = 1500.0;
        summary.latency_us.relay_staleness.p99 = Some(1_500);
        let checks = check(&summary);
        assert_eq!(
            verdicts(&summary),
            [
                ("turns per second".to_owned(), Verdict::Met),
                ("DB statements per turn".to_owned(), Verdict::Met),
                ("NOTIFY statements per turn".to_owned(), Verdict::Met),
                (
                    "cross-replica part latency, p99 added".to_owned(),
                    Verdict::Met
                ),
            ]
        );
        assert_eq!(checks[0].measured, "1500");
        assert!(
            checks[0]
                .note
                .as_deref()
                .unwrap()
                .contains("this run had 10 × 2")
        );
        assert_eq!(checks[1].measured, "3.90");
        assert_eq!(checks[3].measured, "1.5 ms");

        summary.turns.per_second = 999.0;
        summary.latency_us.relay_staleness.p99 = Some(2_001);
        let database = summary.database.as_mut().unwrap();
        database.statements.as_mut().unwrap().per_turn = 6.5;
        let all: Vec<Verdict> = verdicts(&summary).into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            all,
            [
                Verdict::NotMet,
                Verdict::NotMet,
                Verdict::Met,
                Verdict::NotMet
            ]
        );
    }

    #[test]
    fn parts_that_never_crossed_fail_the_relay_budget() {
        let mut summary = full_summary();
        summary.latency_us.relay_staleness.p99 = Some(0);
        summary.streams.parts_not_delivered = 120;
        let relay = &check(&summary)[3];
        assert_eq!(relay.verdict, Verdict::NotMet);
        assert!(relay.note.as_deref().unwrap().starts_with("120 parts"));
    }

    #[test]
    fn what_was_not_measured_says_why() {
        let mut summary = full_summary();
        let database = summary.database.as_mut().unwrap();
        database.statements = None;
        database.statements_unavailable = Some("not installed".into());
        summary.latency_us.relay_staleness = Default::default();
        let checks = check(&summary);
        assert_eq!(checks[1].verdict, Verdict::NotMeasured);
        assert_eq!(checks[1].note.as_deref(), Some("not installed"));
        assert_eq!(checks[1].measured, "-");
        assert_eq!(checks[3].verdict, Verdict::NotMeasured);
        summary.database = None;
        assert_eq!(check(&summary)[2].verdict, Verdict::NotMeasured);
    }
}
