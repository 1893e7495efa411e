//! The dashboard and the alerts of `deploy/observability/` (ARCHITECTURE.md §11),
//! proven with the real tools: `promtool` checks the rules and runs their
//! unit tests (each alert fires and resolves on synthetic series), and a
//! real Prometheus scrapes a small cluster under load and evaluates every
//! dashboard query and every alert expression. Prometheus and promtool come
//! from Debian's `prometheus` package (`.ci/setup` installs it); these tests
//! fail, never skip, without them.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Stdio,
};

use chatd_shared::{
    api::CreateChat,
    client::{Client, Transport},
    pg_server::free_port,
    status::ChatStatus,
    testing::eventually,
};
use common::{
    WAIT,
    app::{TestApp, open_stream, say},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn observability_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The alerts of `alerts.yml`: (name, expression).
fn alerts() -> Vec<(String, String)> {
    let rules = yaml(&observability_dir().join("alerts.yml"));
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .map(|rule| {
            let name = rule["alert"].as_str().expect("an alert").to_owned();
            let expr = rule["expr"].as_str().expect("an expression").to_owned();
            (name, expr)
        })
        .collect()
}

/// Every query of the dashboard: (panel title, expression), with Grafana's
/// `$__rate_interval` made concrete (Prometheus does not know it).
fn panel_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(&read(&observability_dir().join("dashboard.json")))
        .expect("dashboard.json is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("a title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str().expect("an expression");
            queries.push((title.to_owned(), expr.replace("$__rate_interval", "30s")));
        }
    }
    queries
}

/// The `chatd_*` metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.match_indices("chatd_")
        .map(|(at, _)| {
            expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Runs `promtool` with `args` in the observability folder; its output.
fn promtool(args: &[&str]) -> String {
    let output = std::process::Command::new("promtool")
        .args(args)
        .current_dir(observability_dir())
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run promtool ({err}): install Debian's prometheus package (.ci/setup)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_each_alert_fires_and_resolves_in_its_unit_test() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test that sees it fire and one that sees it gone.
    let tests = yaml(&observability_dir().join("alerts.test.yml"));
    for (alert, _) in alerts() {
        let cases: Vec<&Value> = tests["tests"]
            .as_array()
            .expect("tests")
            .iter()
            .flat_map(|test| test["alert_rule_test"].as_array().expect("alert tests"))
            .filter(|case| case["alertname"] == alert.as_str())
            .collect();
        let fires = cases
            .iter()
            .any(|case| case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let resolves = cases
            .iter()
            .any(|case| case["exp_alerts"].as_array().is_some_and(Vec::is_empty));
        assert!(
            fires && resolves,
            "{alert}: fires {fires}, resolves {resolves}"
        );
    }
}

#[test]
fn every_alert_has_a_runbook_entry_and_the_kubernetes_rule_carries_the_same_alerts() {
    let runbook = read(&observability_dir().join("runbook.md"));
    for (alert, _) in alerts() {
        assert!(
            runbook.contains(&format!("\n## {alert}\n")),
            "runbook.md has no section for {alert}"
        );
        let anchor = format!("runbook.md#{}", alert.to_lowercase());
        let rules = read(&observability_dir().join("alerts.yml"));
        assert!(
            rules.contains(&anchor),
            "{alert} does not point at {anchor}"
        );
    }
    let rules = yaml(&observability_dir().join("alerts.yml"));
    let operator = yaml(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/k8s/components/monitoring/prometheusrule.yaml"),
    );
    assert_eq!(
        operator["spec"]["groups"], rules["groups"],
        "the PrometheusRule's groups are alerts.yml's"
    );
}

/// A Prometheus server scraping `targets` every second and evaluating
/// `alerts.yml`; killed when dropped.
struct Prometheus {
    _child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
    _data: TempDir,
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    async fn start(targets: &[String]) -> Self {
        let data = TempDir(
            std::env::temp_dir().join(format!("chatd-prometheus-{}", uuid::Uuid::new_v4())),
        );
        std::fs::create_dir_all(&data.0).expect("a scratch directory");
        let config = data.0.join("prometheus.yml");
        let rules = observability_dir().join("alerts.yml");
        std::fs::write(
            &config,
            serde_json::to_string(&json!({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [rules],
                "scrape_configs": [{
                    "job_name": "chatd",
                    "static_configs": [{"targets": targets}],
                }],
            }))
            .expect("the configuration"),
        )
        .expect("write prometheus.yml");
        let port = free_port().expect("a port");
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.0.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run prometheus ({err}): install Debian's prometheus package (.ci/setup)"
                )
            });
        let prometheus = Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _data: data,
        };
        eventually("Prometheus to be ready", WAIT, || async {
            let response = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
        prometheus
    }

    /// `GET /api/v1/{path}`'s `data`; a failed answer panics with its error.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), query)
            .expect("a URL");
        let body: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("Prometheus answers")
            .json()
            .await
            .expect("JSON");
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The instant result of `expr`.
    async fn query(&self, expr: &str) -> Vec<Value> {
        self.api("query", &[("query", expr)]).await["result"]
            .as_array()
            .expect("a vector")
            .clone()
    }
}

/// Turns on `client` until `stop`: a chat, then a message at a time.
async fn load(client: Client, stop: CancellationToken) {
    let text = || Some(say(json!({"text": "busy"})));
    let chat = client
        .create_chat(
            &CreateChat {
                text: text(),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("create")
        .body;
    while !stop.is_cancelled() {
        eventually("the turn to end", WAIT, || async {
            let status = client.get_chat(chat.id).await.expect("chat").status;
            matches!(status, ChatStatus::Waiting | ChatStatus::Error).then_some(())
        })
        .await;
        client
            .send_message(
                chat.id,
                &chatd_shared::api::SendMessage {
                    text: text(),
                    ..Default::default()
                },
                None,
            )
            .await
            .expect("send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_a_loaded_cluster_answers_every_panel_and_alert() {
    let app = TestApp::start(2, |_| {}).await;
    let stop = CancellationToken::new();
    let mut loaders = Vec::new();
    for index in 0..4 {
        loaders.push(tokio::spawn(load(app.admin(index % 2), stop.clone())));
    }
    // A client of replica 1 watching a chat that may run on replica 0: the
    // relay's series move too.
    let watched = app
        .admin(0)
        .create_chat(&CreateChat::default(), None)
        .await
        .expect("create")
        .body;
    let _stream = open_stream(&app.admin(1), watched.id, Transport::Sse).await;
    let targets: Vec<String> = (0..2)
        .map(|index| app.url(index).trim_start_matches("http://").to_owned())
        .collect();
    let prometheus = Prometheus::start(&targets).await;

    eventually("both replicas scraped", WAIT, || async {
        let targets = prometheus.api("targets", &[]).await;
        let active = targets["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (active.len() == 2 && active.iter().all(|t| t["health"] == "up")).then_some(())
    })
    .await;
    // Enough samples under load for rates over the panels' window.
    eventually("turns counted over time", WAIT, || async {
        let rate = prometheus
            .query("sum(rate(chatd_turns_total[30s])) > 0 and sum(count_over_time(chatd_turns_total[30s])) > 10")
            .await;
        (!rate.is_empty()).then_some(())
    })
    .await;

    let names: BTreeSet<String> = prometheus
        .api("label/__name__/values", &[])
        .await
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect();
    let exists = |metric: &str| {
        names.contains(metric)
            || ["_bucket", "_count", "_sum"]
                .iter()
                .any(|suffix| names.contains(&format!("{metric}{suffix}")))
    };
    let mut checked = 0;
    for (title, expr) in panel_queries() {
        for metric in metric_names(&expr) {
            assert!(
                exists(&metric),
                "panel {title:?} reads {metric}, which no replica exports"
            );
        }
        prometheus.query(&expr).await;
        checked += 1;
    }
    for (alert, expr) in alerts() {
        for metric in metric_names(&expr) {
            assert!(
                exists(&metric),
                "alert {alert} reads {metric}, which no replica exports"
            );
        }
        prometheus.query(&expr).await;
        checked += 1;
    }
    assert!(checked > 40, "{checked} queries");
    // Prometheus evaluates the rules itself too: every one without error.
    eventually("every alert rule evaluated without error", WAIT, || async {
        let groups = prometheus.api("rules", &[]).await["groups"].clone();
        let rules: Vec<Value> = groups
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        for rule in &rules {
            assert_ne!(rule["health"], "err", "{rule}");
        }
        let evaluated =
            rules.len() == alerts().len() && rules.iter().all(|rule| rule["health"] == "ok");
        evaluated.then_some(())
    })
    .await;
    // Under healthy load, nothing fires.
    let firing = prometheus.query("ALERTS{alertstate=\"firing\"}").await;
    assert!(firing.is_empty(), "{firing:#?}");

    stop.cancel();
    for loader in loaders {
        loader.await.expect("a loader");
    }
    app.shutdown().await;
}
