//! The Kubernetes deployment (ARCHITECTURE.md §12) as far as this machine can check
//! it without a cluster: every overlay renders and validates against the
//! Kubernetes schemas; the rendered objects say what a deployment needs;
//! and three `chatd` processes started exactly as the production
//! Deployment's pod template says (see `deploy/pod.rs` for how a pod is
//! emulated) become ready, relay a chat through their advertised pod
//! addresses, and drain within the grace period on SIGTERM.
//!
//! Needs `kubectl` (kustomize is built in) and the PyPI package
//! `kubernetes-validate` at [`KUBERNETES_VALIDATE`]; `.ci/run` checks and
//! installs them.

#[path = "deploy/dockerfile.rs"]
mod dockerfile;
#[path = "deploy/image.rs"]
mod image;
#[path = "deploy/manifests.rs"]
mod manifests;
#[path = "deploy/pod.rs"]
mod pod;

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
    process::Command,
    time::Duration,
};

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_shared::{
    api::CreateChat,
    client::{Client, Transport},
    duration::parse as parse_duration,
    ids::{ChatId, Generation, ReplicaId},
    parts::Part,
    status::{ChatStatus, MessageRole},
    stream::{Cursor, StreamEvent},
    testing::{TestDb, eventually, wait_for},
};
use futures::StreamExt;
use manifests::{Rendered, names_under, selects, string_map};
use pod::{Cluster, Container, Pod};
use serde_json::{Value, json};

/// The pinned schema validator (PyPI), as `.ci/run` installs it.
const KUBERNETES_VALIDATE: &str = "1.37.0";

/// Kubernetes versions the manifests must be valid for: the oldest we
/// support (the preStop `sleep` action is on by default from 1.30) and the
/// newest the pinned validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Kinds from the Prometheus Operator's CRDs: no schema in Kubernetes';
/// [`check_monitoring`] checks what they refer to instead.
const OPERATOR_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];

/// `chatd` as this build made it.
const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// Starting includes migrating an empty database.
const START: Duration = Duration::from_secs(120);

/// Each overlay, and the production overlay with each component it leaves
/// out (as an operator would add it): `(what, YAML)`.
fn renderings() -> Vec<(String, String)> {
    let mut renderings: Vec<(String, String)> = names_under("overlays")
        .into_iter()
        .map(|overlay| {
            let yaml = manifests::kustomize(&manifests::k8s_dir().join("overlays").join(&overlay));
            (overlay, yaml)
        })
        .collect();
    let production = std::fs::read_to_string(
        manifests::k8s_dir().join("overlays/production/kustomization.yaml"),
    )
    .unwrap();
    let included = &manifests::parse_yaml(&production)[0]["components"];
    for component in names_under("components") {
        let used = included
            .as_array()
            .into_iter()
            .flatten()
            .any(|path| path.as_str().unwrap().ends_with(&format!("/{component}")));
        if !used {
            let yaml = manifests::kustomize_with("production", &[&component]);
            renderings.push((format!("production + {component}"), yaml));
        }
    }
    renderings
}

/// The validator, run as a module so that no script directory need be on PATH.
fn kubernetes_validate() -> Command {
    let mut command = Command::new("python3");
    command.args(["-m", "kubernetes_validate"]);
    command
}

#[test]
fn every_overlay_renders_and_validates_against_the_kubernetes_schemas() {
    let version = kubernetes_validate()
        .arg("--version")
        .output()
        .unwrap_or_else(|err| {
            panic!("running kubernetes-validate ({err}): pip install kubernetes-validate=={KUBERNETES_VALIDATE}")
        });
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        KUBERNETES_VALIDATE,
        "pip install kubernetes-validate=={KUBERNETES_VALIDATE}"
    );
    for (what, yaml) in renderings() {
        let rendered = Rendered::from_yaml(&yaml);
        let file = std::env::temp_dir().join(format!(
            "chatd-rendered-{}-{}.yaml",
            std::process::id(),
            what.replace(' ', "")
        ));
        std::fs::write(&file, &yaml).unwrap();
        let mut validate = kubernetes_validate();
        validate.arg("--strict");
        for version in KUBERNETES_VERSIONS {
            validate.args(["--kubernetes-version", version]);
        }
        let output = validate.arg(&file).output().unwrap();
        std::fs::remove_file(&file).unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        let mut passed = 0;
        for line in said.lines() {
            if line.starts_with("INFO") && line.contains(" passed for resource ") {
                passed += 1;
            } else if line.starts_with("WARN")
                && OPERATOR_KINDS.iter().any(|kind| {
                    line.contains(&format!(
                        "kind {kind} with api version monitoring.coreos.com/v1"
                    ))
                })
            {
                continue;
            } else {
                panic!("{what}: {line}\n{said}");
            }
        }
        assert!(output.status.success(), "{what}: {said}");
        let checked = rendered
            .objects
            .iter()
            .filter(|object| !OPERATOR_KINDS.contains(&object["kind"].as_str().unwrap()))
            .count();
        assert_eq!(
            passed,
            checked * KUBERNETES_VERSIONS.len(),
            "{what}: every object validated against every version\n{said}"
        );
    }
}

#[test]
fn every_overlay_runs_chatd_as_design_section_12_asks() {
    for overlay in names_under("overlays") {
        let rendered = Rendered::overlay(&overlay);
        check_replicas(&overlay, &rendered);
        check_relay_reachable_only_from_chatd_pods(&overlay, &rendered);
        check_labels(&overlay, &rendered);
    }
}

#[test]
fn the_production_overlay_references_its_secrets_and_monitors_the_replicas() {
    let rendered = Rendered::overlay("production");
    assert!(
        rendered.all("Secret").is_empty(),
        "production renders no Secret: {:?}",
        rendered.names()
    );
    let (_, container) = rendered.chatd_pod();
    for name in [
        "CHATD_DATABASE_URL",
        "CHATD_RELAY_SECRET",
        "CHATD_PROVIDER_API_KEY",
    ] {
        let variable = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|variable| variable["name"] == name)
            .unwrap_or_else(|| panic!("production sets {name}"));
        assert!(
            variable["value"].is_null() && variable["valueFrom"]["secretKeyRef"].is_object(),
            "{name} comes from a Secret: {variable}"
        );
        for config in rendered.all("ConfigMap") {
            assert!(config["data"].get(name).is_none(), "{name} in a ConfigMap");
        }
    }
    // Nothing in the rendering looks like a credential: no URL with a password.
    let yaml = serde_json::to_string(&rendered.objects).unwrap();
    let userinfo = yaml.split("://").skip(1).find_map(|rest| {
        let authority = rest.split(['/', '"', '\\']).next().unwrap_or_default();
        let (user, _) = authority.split_once('@')?;
        user.contains(':').then_some(authority)
    });
    assert!(userinfo.is_none(), "a URL with a password: {userinfo:?}");
    assert_ne!(
        container["image"], "chatd",
        "the overlay names the image to pull"
    );
    check_monitoring(&rendered);
}

#[test]
fn the_image_built_from_this_binary_is_what_the_manifests_and_the_pod_emulation_expect() {
    let buildah = image::Buildah::new();
    let binary = std::path::Path::new(CHATD);
    buildah.make_base(binary);
    let config = buildah.build("chatd", binary, "localhost/chatd:test");

    // What the real build made is what the pods of the running test are
    // started from (user, entrypoint, command, environment).
    let stage = dockerfile::stage("chatd");
    assert_eq!(config["User"], json!(stage.user));
    assert_eq!(config["Entrypoint"], json!(stage.entrypoint));
    assert_eq!(config["Cmd"], json!(stage.cmd));
    assert!(
        stage
            .env
            .contains(&("CHATD_LOG_FORMAT".into(), "json".into()))
    );
    for (name, value) in &stage.env {
        assert!(
            config["Env"]
                .as_array()
                .unwrap()
                .contains(&json!(format!("{name}={value}"))),
            "{name}={value} in {}",
            config["Env"]
        );
    }
    let rendered = Rendered::overlay("production");
    let (pod_spec, container) = rendered.chatd_pod();
    let uid = pod_spec["securityContext"]["runAsUser"].as_u64().unwrap();
    assert_ne!(uid, 0, "non-root");
    assert_eq!(
        config["User"],
        format!("{uid}:{uid}"),
        "numeric, so runAsNonRoot can check it"
    );
    assert_eq!(config["Entrypoint"], container["command"]);
    assert_eq!(
        dockerfile::stages().pop().unwrap().name,
        "chatd",
        "`docker build .` builds the chatd image"
    );

    // The binary runs in the image.
    let running = buildah.run(&["from", "--quiet", "localhost/chatd:test"]);
    let version = buildah.run(&[
        "run",
        "--isolation",
        "chroot",
        &running,
        "--",
        pod::IMAGE_CHATD,
        "--version",
    ]);
    assert!(version.starts_with("chatd "), "{version}");
}

/// The chatd Deployment: replicas, rollout, probes, shutdown, placement,
/// resources, privileges, migrations.
fn check_replicas(overlay: &str, rendered: &Rendered) {
    let deployment = rendered.get("Deployment", "chatd");
    let spec = &deployment["spec"];
    let (pod_spec, container) = rendered.chatd_pod();
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(selects(&spec["selector"]["matchLabels"], pod_labels));
    assert!(
        spec["replicas"].as_u64().unwrap() >= 3,
        "{overlay}: three or more replicas"
    );
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);

    // Probes: readiness and startup on /readyz, liveness on /healthz, on the
    // API port (the running test calls each).
    let pod = sample_pod(rendered);
    let api_port = port_of(&pod, "CHATD_HTTP_ADDR");
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{overlay}: {probe}");
        assert_eq!(
            pod.url(&get["port"], path),
            format!("http://{}:{api_port}{path}", pod.ip),
            "{overlay}: {probe} on the API port"
        );
    }

    // Shutdown: the pause, then the drain, then 5 s, within the grace period.
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop pause");
    assert!(pause >= 1, "{overlay}: endpoints get time to update");
    let drain = parse_duration(&pod.var("CHATD_DRAIN_TIMEOUT").unwrap_or("10s".into())).unwrap();
    let grace = pod_spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace >= pause + drain.as_secs() + 5,
        "{overlay}: grace {grace} s < preStop {pause} s + drain {drain:?} + 5 s"
    );

    // Placement: spread across nodes.
    let spread = pod_spec["topologySpreadConstraints"]
        .as_array()
        .expect("topology spread")
        .iter()
        .find(|constraint| constraint["topologyKey"] == "kubernetes.io/hostname")
        .expect("spread across nodes");
    assert!(selects(&spread["labelSelector"]["matchLabels"], pod_labels));

    let resources = &container["resources"];
    for field in ["requests/cpu", "requests/memory", "limits/memory"] {
        let (kind, resource) = field.split_once('/').unwrap();
        assert!(
            resources[kind][resource].is_string(),
            "{overlay}: resources.{kind}.{resource}"
        );
    }

    // Privileges.
    let pod_security = &pod_spec["securityContext"];
    let security = &container["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true, "{overlay}");
    assert!(pod_security["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(security["readOnlyRootFilesystem"], true, "{overlay}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{overlay}");
    assert_eq!(
        security["capabilities"]["drop"],
        json!(["ALL"]),
        "{overlay}"
    );
    assert_eq!(pod_spec["automountServiceAccountToken"], false, "{overlay}");
    assert_eq!(pod_spec["enableServiceLinks"], false, "{overlay}");

    // Migrations: on start, under the advisory lock (deploy/README.md).
    assert_eq!(
        pod.command[1..],
        ["serve"],
        "{overlay}: replicas migrate on start"
    );

    let budget = rendered.get("PodDisruptionBudget", "chatd");
    assert!(selects(
        &budget["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
}

/// The relay port: in the container, absent from every Service, open only
/// to chatd pods; the API port open.
fn check_relay_reachable_only_from_chatd_pods(overlay: &str, rendered: &Rendered) {
    let pod = sample_pod(rendered);
    let (_, container) = rendered.chatd_pod();
    let pod_labels = &rendered.get("Deployment", "chatd")["spec"]["template"]["metadata"]["labels"];
    let relay_port = port_of(&pod, "CHATD_RELAY_ADDR");
    let api_port = port_of(&pod, "CHATD_HTTP_ADDR");
    let port_number = |port: &Value| match port {
        Value::String(name) => pod.ports.get(name).copied(),
        other => other.as_u64().map(|n| n as u16),
    };
    assert!(pod.ports.values().any(|&port| port == relay_port));
    assert_eq!(
        pod.var("CHATD_RELAY_ADVERTISE_URL").unwrap(),
        format!("ws://{}:{relay_port}", pod.ip),
        "{overlay}: peers dial the pod's own address"
    );
    assert_eq!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|variable| variable["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP")
            .map(|variable| variable["name"].clone()),
        Some(json!("POD_IP"))
    );
    for service in rendered.all("Service") {
        if !selects(&service["spec"]["selector"], pod_labels) {
            continue;
        }
        for port in service["spec"]["ports"].as_array().unwrap() {
            assert_ne!(
                port_number(&port["targetPort"]),
                Some(relay_port),
                "{overlay}: Service {} exposes the relay",
                service["metadata"]["name"]
            );
        }
    }
    let policies: Vec<&Value> = rendered
        .all("NetworkPolicy")
        .into_iter()
        .filter(|policy| selects(&policy["spec"]["podSelector"]["matchLabels"], pod_labels))
        .collect();
    assert_eq!(
        policies.len(),
        1,
        "{overlay}: one NetworkPolicy for chatd pods"
    );
    let policy = &policies[0]["spec"];
    assert!(
        policy["policyTypes"]
            .as_array()
            .unwrap()
            .contains(&json!("Ingress"))
    );
    let admits = |rule: &Value, port: u16| match rule["ports"].as_array() {
        None => true,
        Some(ports) => ports
            .iter()
            .any(|p| p["port"].is_null() || port_number(&p["port"]) == Some(port)),
    };
    let rules = policy["ingress"].as_array().unwrap();
    assert!(rules.iter().any(|rule| admits(rule, api_port)));
    for rule in rules.iter().filter(|rule| admits(rule, relay_port)) {
        let from = rule["from"].as_array().expect("relay sources are listed");
        assert!(!from.is_empty());
        for source in from {
            assert!(
                source
                    .as_object()
                    .unwrap()
                    .keys()
                    .all(|key| key == "podSelector")
                    && selects(&source["podSelector"]["matchLabels"], pod_labels),
                "{overlay}: the relay admits {source}"
            );
        }
    }
}

/// `app.kubernetes.io/*` labels on every object.
fn check_labels(overlay: &str, rendered: &Rendered) {
    for object in &rendered.objects {
        let labels = &object["metadata"]["labels"];
        if object["kind"] == "Namespace" {
            continue;
        }
        for label in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
        ] {
            assert!(
                labels[label].is_string(),
                "{overlay}: {}/{} lacks {label}",
                object["kind"],
                object["metadata"]["name"]
            );
        }
    }
}

/// The ServiceMonitor scrapes the chatd Service's API port; the alert
/// rules are well formed (their metrics are checked against a running
/// replica in the running test).
fn check_monitoring(rendered: &Rendered) {
    let service = rendered.get("Service", "chatd");
    let monitor = rendered.get("ServiceMonitor", "chatd");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["path"], "/metrics");
        assert!(
            service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|port| port["name"] == endpoint["port"]),
            "the ServiceMonitor scrapes a port of the Service"
        );
    }
    assert!(!alert_metrics(rendered).is_empty());
    for group in rendered.get("PrometheusRule", "chatd")["spec"]["groups"]
        .as_array()
        .unwrap()
    {
        for rule in group["rules"].as_array().unwrap() {
            assert!(rule["alert"].is_string() && rule["expr"].is_string());
            assert!(rule["labels"]["severity"].is_string(), "{rule}");
        }
    }
}

/// The `chatd_*` metric names the alert rules query.
fn alert_metrics(rendered: &Rendered) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for rule in rendered.all("PrometheusRule") {
        for group in rule["spec"]["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                let expr = rule["expr"].as_str().unwrap();
                for (at, _) in expr.match_indices("chatd_") {
                    let name: String = expr[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
    }
    names
}

/// The chatd container of `rendered` as a pod at a made-up address would
/// run it, with the example secrets.
fn sample_pod(rendered: &Rendered) -> Pod {
    let cluster = Cluster {
        rendered,
        secrets: example_secrets(rendered),
        config_overrides: HashMap::new(),
    };
    let (pod_spec, container) = rendered.chatd_pod();
    cluster.pod(
        pod_spec,
        container,
        &dockerfile::stage("chatd"),
        IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7)),
    )
}

/// The port of a `CHATD_*_ADDR` variable.
fn port_of(pod: &Pod, variable: &str) -> u16 {
    pod.var(variable)
        .unwrap_or_else(|| panic!("{variable} is set"))
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The Secrets a rendering uses: generated ones (dev), else the
/// production overlay's examples (`example-secrets.yaml`).
fn example_secrets(rendered: &Rendered) -> HashMap<String, HashMap<String, String>> {
    let generated = rendered.all("Secret");
    let secrets: Vec<Value> = if generated.is_empty() {
        let path = manifests::k8s_dir().join("overlays/production/example-secrets.yaml");
        manifests::parse_yaml(&std::fs::read_to_string(path).unwrap())
    } else {
        generated.into_iter().cloned().collect()
    };
    secrets
        .iter()
        .map(|secret| {
            let mut values: HashMap<String, String> =
                string_map(secret, "stringData").into_iter().collect();
            if !secret["data"].is_null() {
                values.extend(decode_data(secret));
            }
            (
                secret["metadata"]["name"].as_str().unwrap().to_owned(),
                values,
            )
        })
        .collect()
}

/// A generated Secret's `data` (base64).
fn decode_data(secret: &Value) -> Vec<(String, String)> {
    use base64::Engine;
    string_map(secret, "data")
        .into_iter()
        .map(|(key, encoded)| {
            // Long values come as YAML block text, wrapped.
            let encoded: String = encoded.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64");
            (key, String::from_utf8(bytes).expect("a UTF-8 secret"))
        })
        .collect()
}

/// The production pods on this machine: the example secrets with the test
/// database's URL, the mock model (requiring the example API key) at the
/// provider's URL, and each pod at 127.0.0.2, .3, ….
struct ProductionPods {
    pods: Vec<Pod>,
    /// The grace period and preStop pause of the pod template.
    grace: Duration,
    pause: Duration,
    /// The chatd container of the pod template (its probes).
    container: Value,
    metrics: BTreeSet<String>,
    _model: MockLlm,
}

impl ProductionPods {
    async fn new(db: &TestDb) -> Self {
        let rendered = Rendered::overlay("production");
        let mut secrets = example_secrets(&rendered);
        let api_key = secrets["chatd-provider"]["api-key"].clone();
        let model = MockLlm::start(Behaviour {
            require_api_key: Some(api_key),
            ..Behaviour::default()
        })
        .await
        .expect("mock model");
        secrets
            .get_mut("chatd-database")
            .unwrap()
            .insert("url".into(), db.url().to_owned());
        let cluster = Cluster {
            rendered: &rendered,
            secrets,
            config_overrides: HashMap::from([(
                "CHATD_PROVIDER_BASE_URL".to_owned(),
                model.openai_base_url(),
            )]),
        };
        let deployment = rendered.get("Deployment", "chatd");
        let replicas = deployment["spec"]["replicas"].as_u64().unwrap() as u8;
        let (pod_spec, container) = rendered.chatd_pod();
        let image = dockerfile::stage("chatd");
        let pods = (0..replicas)
            .map(|index| {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + index));
                cluster.pod(pod_spec, container, &image, ip)
            })
            .collect();
        let seconds = |value: &Value| Duration::from_secs(value.as_u64().unwrap());
        Self {
            pods,
            grace: seconds(&pod_spec["terminationGracePeriodSeconds"]),
            pause: seconds(&container["lifecycle"]["preStop"]["sleep"]["seconds"]),
            container: container.clone(),
            metrics: alert_metrics(&rendered),
            _model: model,
        }
    }
}

/// GET `url`: its status, or `None` when nothing answers.
async fn status_of(url: &str) -> Option<u16> {
    reqwest::get(url)
        .await
        .ok()
        .map(|response| response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_as_the_production_manifests_say_relay_a_chat_and_drain_on_sigterm() {
    let db = TestDb::new_empty().await;
    let cluster = ProductionPods::new(&db).await;
    let pods = &cluster.pods;
    assert!(pods.len() >= 3);
    let probe = |pod: &Pod, name: &str| {
        let get = &cluster.container[name]["httpGet"];
        pod.url(&get["port"], get["path"].as_str().unwrap())
    };

    // All start together on an empty database: one migrates, the others
    // wait for its lock; each becomes ready.
    let mut containers: Vec<Container> = pods
        .iter()
        .map(|pod| Container::start(pod.command(CHATD, None)))
        .collect();
    for (index, pod) in pods.iter().enumerate() {
        let ready = probe(pod, "readinessProbe");
        eventually(&format!("pod {index} ready at {ready}"), START, || {
            let ready = ready.clone();
            async move { (status_of(&ready).await == Some(200)).then_some(()) }
        })
        .await;
        for name in ["startupProbe", "livenessProbe"] {
            assert_eq!(
                status_of(&probe(pod, name)).await,
                Some(200),
                "{name} of pod {index}; its log:\n{}",
                containers[index].logged()
            );
        }
    }

    // Each advertises its pod address for the relay.
    let client = db.pool().get().await.unwrap();
    let rows = client
        .query("SELECT id, relay_url FROM replicas", &[])
        .await
        .unwrap();
    let advertised: HashMap<String, ReplicaId> = rows
        .iter()
        .map(|row| (row.get::<_, String>(1), row.get::<_, ReplicaId>(0)))
        .collect();
    let replica_of: Vec<ReplicaId> = pods
        .iter()
        .map(|pod| {
            let url = pod.var("CHATD_RELAY_ADVERTISE_URL").unwrap();
            assert_eq!(url, format!("ws://{}:7081", pod.ip));
            *advertised
                .get(&url)
                .unwrap_or_else(|| panic!("no replica advertises {url}: {advertised:?}"))
        })
        .collect();

    // The first token, as an operator gets it: `kubectl exec` of chatd in a pod.
    let token = pods[0]
        .command(
            CHATD,
            Some(&["token", "create", "--username", "operator", "--admin"]),
        )
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap();
    let token = token.lines().last().unwrap().to_owned();
    let api = |index: usize| Client::new(&pods[index].url(&json!("http"), ""), &token).unwrap();

    // A reply that outlasts the drain timeout, created on pod 0.
    let drain = parse_duration(&pods[0].var("CHATD_DRAIN_TIMEOUT").unwrap()).unwrap();
    let delay = Duration::from_millis(100);
    let tokens = (drain + Duration::from_secs(3)).as_millis() / delay.as_millis();
    let chat = api(0)
        .create_chat(
            &CreateChat {
                text: Some(format!(
                    "@mock {}",
                    json!({"tokens": tokens, "token_delay_ms": delay.as_millis()})
                )),
                ..CreateChat::default()
            },
            None,
        )
        .await
        .expect("create a chat")
        .body
        .id;
    let (worker, generation) = running_on(&db, chat, &replica_of).await;

    // Streamed from a pod that neither made it nor runs it: its parts come
    // over the relay from the worker's advertised address.
    let follower = (0..pods.len()).find(|&i| i != 0 && i != worker).unwrap();
    let mut stream = api(follower)
        .stream_chat(chat, Cursor::default(), Transport::WebSocket)
        .await
        .expect("stream");
    let mut events = Vec::new();
    read(&mut stream, &mut events, "relayed parts", |events| {
        events
            .iter()
            .filter(|event| matches!(event, StreamEvent::Part { generation: g, part: Part::TextDelta { .. }, .. } if *g == generation))
            .count()
            >= 5
    })
    .await;

    // SIGTERM, as the kubelet sends it after the preStop pause: unready at
    // once, the turn gets the drain timeout, then it is handed back; the
    // process exits within what is left of the grace period.
    containers[worker].terminate();
    let ready = probe(&pods[worker], "readinessProbe");
    eventually("the draining pod to turn unready", cluster.grace, || {
        let ready = ready.clone();
        async move { (status_of(&ready).await != Some(200)).then_some(()) }
    })
    .await;
    let within = cluster.grace - cluster.pause;
    let status = containers[worker]
        .exited_within(within)
        .await
        .unwrap_or_else(|| {
            panic!(
                "pod {worker} still running {within:?} after SIGTERM; its log:\n{}",
                containers[worker].logged()
            )
        });
    assert!(
        status.success(),
        "pod {worker} exited with {status}; its log:\n{}",
        containers[worker].logged()
    );

    // The chat finishes on another replica, and the follower sees it.
    let (new_worker, new_generation) = running_on(&db, chat, &replica_of).await;
    assert_ne!(new_worker, worker, "the chat moved");
    assert!(new_generation > generation);
    read(&mut stream, &mut events, "the reply", |events| {
        events.iter().any(|event| {
            matches!(event, StreamEvent::Message { message, .. }
                if message.role == MessageRole::Assistant && message.generation == Some(new_generation))
        })
    })
    .await;
    let row = client
        .query_one("SELECT status::text FROM chats WHERE id = $1", &[&chat])
        .await
        .unwrap();
    assert_ne!(row.get::<_, String>(0), ChatStatus::Error.to_string());
    let gone = client
        .query_opt(
            "SELECT 1 FROM replicas WHERE id = $1",
            &[&replica_of[worker]],
        )
        .await
        .unwrap();
    assert!(gone.is_none(), "a drained replica removes its row");

    // JSON log lines, one object each, as a log collector reads them.
    let logged = containers[worker].log.lock().unwrap().clone();
    assert!(!logged.is_empty());
    for line in &logged {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(
            parsed.is_ok_and(|v| v.is_object()),
            "not a JSON log line: {line}"
        );
    }

    // The alert rules query metrics the replicas export.
    let metrics =
        reqwest::get(probe(&pods[follower], "livenessProbe").replace("/healthz", "/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    for name in &cluster.metrics {
        assert!(
            metrics.lines().any(|line| line.starts_with(name.as_str())),
            "the alert rules query {name}, which /metrics lacks"
        );
    }

    for (index, container) in containers.iter_mut().enumerate() {
        if index == worker {
            continue;
        }
        container.terminate();
        let status = container.exited_within(cluster.grace - cluster.pause).await;
        assert!(status.is_some_and(|s| s.success()), "pod {index} stopped");
    }
}

/// Waits until `chat` runs; returns the pod running it and the generation.
async fn running_on(db: &TestDb, chat: ChatId, replica_of: &[ReplicaId]) -> (usize, Generation) {
    eventually(&format!("chat {chat} to run"), START, || async move {
        let client = db.pool().get().await.unwrap();
        let row = client
            .query_one(
                "SELECT status::text, worker_id, generation FROM chats WHERE id = $1",
                &[&chat],
            )
            .await
            .unwrap();
        if row.get::<_, String>(0) != ChatStatus::Running.to_string() {
            return None;
        }
        let worker: ReplicaId = row.get(1);
        let index = replica_of.iter().position(|id| *id == worker)?;
        Some((index, Generation(row.get(2))))
    })
    .await
}

/// Reads `stream` into `events` until `done` holds (deadline: [`START`]).
async fn read<S>(
    stream: &mut S,
    events: &mut Vec<StreamEvent>,
    what: &str,
    done: impl Fn(&[StreamEvent]) -> bool,
) where
    S: futures::Stream<Item = Result<StreamEvent, chatd_shared::client::ClientError>> + Unpin,
{
    wait_for(what, START, async {
        while !done(events) {
            match stream.next().await {
                Some(event) => events.push(event.expect("a stream event")),
                None => panic!("the stream ended before {what}: {events:#?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_secret_key_without_a_value_stops_chatd_at_start_naming_it() {
    let rendered = Rendered::overlay("production");
    let pod = sample_pod(&rendered);
    let (_, container) = rendered.chatd_pod();
    let from_secrets: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|variable| variable["valueFrom"]["secretKeyRef"].is_object())
        .map(|variable| variable["name"].as_str().unwrap())
        .collect();
    assert!(from_secrets.len() >= 3, "{from_secrets:?}");
    for name in from_secrets {
        let output = wait_for(
            &format!("chatd with an empty {name} to stop"),
            START,
            pod.command(CHATD, None).env(name, "").output(),
        )
        .await
        .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "chatd ran with an empty {name}");
        assert!(said.contains(name) && said.contains("empty"), "{said}");
    }
}

#[tokio::test]
async fn an_advertised_relay_url_without_the_pod_ip_stops_chatd_at_start() {
    // The pod IP variable defined after the URL that uses it: Kubernetes
    // leaves `$(POD_IP)` as written.
    let rendered = Rendered::overlay("production");
    let mut pod = sample_pod(&rendered);
    let url = pod.var("CHATD_RELAY_ADVERTISE_URL").unwrap();
    let unexpanded = url.replace(&pod.ip.to_string(), "$(POD_IP)");
    pod.env
        .push(("CHATD_RELAY_ADVERTISE_URL".into(), unexpanded));
    let output = wait_for(
        "chatd to refuse the URL",
        START,
        pod.command(CHATD, None).output(),
    )
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains("CHATD_RELAY_ADVERTISE_URL") && said.contains("$(POD_IP)"),
        "{said}"
    );
}
