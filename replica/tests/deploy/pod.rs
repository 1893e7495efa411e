//! A pod of a rendered Deployment, emulated on this machine: the
//! container's environment and command line as the kubelet would build
//! them, and the process started from them.
//!
//! What the kubelet does, and how it is emulated here:
//! - `envFrom` first, then `env` in order (later wins); `configMapRef` and
//!   `secretKeyRef` read the rendered ConfigMaps and the given Secrets;
//!   `fieldRef: status.podIP` is the pod's address, a loopback address of
//!   its own (127.0.0.2, .3, …).
//! - `$(VAR)` in an `env` value is replaced by a variable defined before it;
//!   in `command` and `args`, by any of the container's variables; `$$` is a
//!   literal `$`; an unknown reference stays as written.
//! - The image's `ENV` comes first and the pod's variables override it;
//!   `command` replaces the image's `ENTRYPOINT` (and `CMD`), `args`
//!   replace `CMD`.
//! - Each pod has a network namespace of its own, where `0.0.0.0` means its
//!   own interfaces; here the pods share one, so an address that listens on
//!   every interface listens on the pod's address instead.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use super::{dockerfile::Stage, manifests::Rendered};

/// Where the image has chatd, and where this build has it.
pub const IMAGE_CHATD: &str = "/usr/local/bin/chatd";

/// What the cluster provides that the manifests only name: Secrets (which
/// the overlay references but never contains) and values that differ on
/// this machine.
pub struct Cluster<'a> {
    /// The rendered overlay.
    pub rendered: &'a Rendered,
    /// Secret name → key → value.
    pub secrets: HashMap<String, HashMap<String, String>>,
    /// ConfigMap keys whose value this machine replaces (a model URL).
    pub config_overrides: HashMap<String, String>,
}

/// One pod's container, ready to start.
#[derive(Debug, Clone)]
pub struct Pod {
    /// The pod's address.
    pub ip: IpAddr,
    /// The container's environment, image `ENV` first.
    pub env: Vec<(String, String)>,
    /// The command line, the executable first (as in the image).
    pub command: Vec<String>,
    /// Container port numbers by name.
    pub ports: HashMap<String, u16>,
}

impl Cluster<'_> {
    /// The container `container` of pod template `pod` as started at `ip`,
    /// from an image built as `image`.
    pub fn pod(&self, pod: &Value, container: &Value, image: &Stage, ip: IpAddr) -> Pod {
        assert!(
            pod["initContainers"].is_null(),
            "init containers are not emulated"
        );
        let defined = self.container_env(container, ip);
        let mut env: Vec<(String, String)> = image
            .env
            .iter()
            .filter(|(name, _)| !defined.iter().any(|(defined, _)| defined == name))
            .cloned()
            .collect();
        env.extend(defined.iter().cloned());
        for (_, value) in &mut env {
            *value = own_interfaces(value, ip);
        }
        let lookup = |name: &str| lookup(&defined, name);
        let strings = |field: &Value| -> Option<Vec<String>> {
            field.as_array().map(|items| {
                items
                    .iter()
                    .map(|item| expand(item.as_str().expect("a string"), &lookup))
                    .collect()
            })
        };
        let command = match (strings(&container["command"]), strings(&container["args"])) {
            (Some(command), args) => [command, args.unwrap_or_default()].concat(),
            (None, Some(args)) => [image.entrypoint.clone(), args].concat(),
            (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
        };
        let ports = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|port| {
                (
                    port["name"].as_str().unwrap_or_default().to_owned(),
                    port["containerPort"].as_u64().expect("containerPort") as u16,
                )
            })
            .collect();
        Pod {
            ip,
            env,
            command,
            ports,
        }
    }

    /// `envFrom`, then `env`, each value resolved.
    fn container_env(&self, container: &Value, ip: IpAddr) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, name: &str, value: String| {
            env.retain(|(existing, _)| existing != name);
            env.push((name.to_owned(), value));
        };
        for source in container["envFrom"].as_array().into_iter().flatten() {
            let name = source["configMapRef"]["name"]
                .as_str()
                .expect("envFrom reads ConfigMaps only here");
            let config = self.rendered.get("ConfigMap", name);
            for (key, value) in super::manifests::string_map(config, "data") {
                let value = self.config_overrides.get(&key).cloned().unwrap_or(value);
                set(&mut env, &key, value);
            }
        }
        for variable in container["env"].as_array().into_iter().flatten() {
            let name = variable["name"].as_str().expect("env name");
            let value = match (&variable["value"], &variable["valueFrom"]) {
                (Value::String(value), _) => expand(value, &|n| lookup(&env, n)),
                (_, Value::Null) => String::new(),
                (_, from) => match self.value_from(from, ip) {
                    Some(value) => value,
                    None => continue, // an optional Secret key that is absent
                },
            };
            set(&mut env, name, value);
        }
        env
    }

    fn value_from(&self, from: &Value, ip: IpAddr) -> Option<String> {
        if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            assert_eq!(path, "status.podIP", "only the pod IP is emulated");
            return Some(ip.to_string());
        }
        let secret = &from["secretKeyRef"];
        let (name, key) = (
            secret["name"].as_str().expect("secretKeyRef.name"),
            secret["key"].as_str().expect("secretKeyRef.key"),
        );
        let value = self.secrets.get(name).and_then(|keys| keys.get(key));
        if value.is_none() && secret["optional"] == true {
            return None;
        }
        let value = value.unwrap_or_else(|| {
            panic!("Secret {name} has no key {key}: the pod would not start (CreateContainerConfigError)")
        });
        Some(value.clone())
    }
}

fn lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(defined, _)| defined == name)
        .map(|(_, value)| value.clone())
}

/// Kubernetes' `$(VAR)` expansion.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => out.push_str(&rest[at..at + close + 3]),
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str(&rest[at..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `0.0.0.0:PORT` (or `[::]:PORT`) in the pod's own namespace → `IP:PORT`.
fn own_interfaces(value: &str, ip: IpAddr) -> String {
    match value.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => SocketAddr::new(ip, addr.port()).to_string(),
        _ => value.to_owned(),
    }
}

impl Pod {
    /// `http://IP:PORT` of the container port named `port` (a probe's port).
    pub fn url(&self, port: &Value, path: &str) -> String {
        let number = match port {
            Value::String(name) => *self
                .ports
                .get(name)
                .unwrap_or_else(|| panic!("no container port named {name}")),
            other => other.as_u64().expect("a port") as u16,
        };
        format!("http://{}{path}", SocketAddr::new(self.ip, number))
    }

    /// The value of `name` in the container's environment.
    pub fn var(&self, name: &str) -> Option<String> {
        lookup(&self.env, name)
    }

    /// The command line with `executable` (this build's binary) in place of
    /// the image's, and `args` in place of the container's arguments when
    /// given (`kubectl exec POD -- chatd ARGS`).
    pub fn command(&self, executable: &str, args: Option<&[&str]>) -> Command {
        assert_eq!(
            self.command[0], IMAGE_CHATD,
            "the container runs the image's chatd"
        );
        let mut command = Command::new(executable);
        match args {
            Some(args) => command.args(args),
            None => command.args(&self.command[1..]),
        };
        command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

/// A started container: its process and everything it wrote to stderr.
pub struct Container {
    /// The process.
    pub child: Child,
    /// Its stderr so far, line by line.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Container {
    /// Starts `command`, collecting stderr.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chatd");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    /// What the container logged, for failure messages.
    pub fn logged(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, as the kubelet sends when it stops the container.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    /// Waits up to `within` for the process to exit.
    pub async fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .map(|status| status.expect("waiting for chatd"))
    }
}

#[test]
fn expansion_follows_kubernetes_rules() {
    let env = [("POD_IP".to_owned(), "10.1.2.3".to_owned())];
    let lookup = |name: &str| lookup(&env, name);
    assert_eq!(expand("ws://$(POD_IP):7081", &lookup), "ws://10.1.2.3:7081");
    assert_eq!(expand("$$(POD_IP)", &lookup), "$(POD_IP)");
    assert_eq!(expand("$(MISSING)-x", &lookup), "$(MISSING)-x");
    assert_eq!(expand("a$b$", &lookup), "a$b$");
    assert_eq!(expand("$(POD_IP", &lookup), "$(POD_IP");
    assert_eq!(expand("$(POD_IP)$(POD_IP)", &lookup), "10.1.2.310.1.2.3");
}

#[test]
fn every_interface_of_a_pod_is_its_own_address() {
    let ip: IpAddr = "127.0.0.3".parse().unwrap();
    assert_eq!(own_interfaces("0.0.0.0:7080", ip), "127.0.0.3:7080");
    assert_eq!(own_interfaces("127.0.0.1:7080", ip), "127.0.0.1:7080");
    assert_eq!(own_interfaces("info", ip), "info");
}
