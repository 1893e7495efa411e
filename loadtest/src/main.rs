//! chatd-loadtest: the scaletest harness (DESIGN §13). It drives virtual users
//! through the public API of a chatd cluster and reports turns per second,
//! latency percentiles, failures by stage and database cost.
//!
//! Filled in by the load-test issue; until then it only says so.

fn main() {
    eprintln!("chatd-loadtest: not built yet (see the load-test issue)");
    std::process::exit(2);
}
