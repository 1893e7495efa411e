//! The manifests as Kubernetes would receive them: `kubectl kustomize` of an
//! overlay, parsed into JSON values, and the objects looked up by kind and
//! name.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;
use serde_json::Value;

/// The repository's `deploy/k8s`.
pub fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// The folders under `deploy/k8s/FOLDER` (`overlays`, `components`), by name.
pub fn names_under(folder: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(k8s_dir().join(folder))
        .unwrap_or_else(|err| panic!("deploy/k8s/{folder}: {err}"))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `kubectl kustomize DIR`: the YAML an apply would send. Panics with what
/// kubectl said when it fails, or when kubectl is missing.
pub fn kustomize(dir: &Path) -> String {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!("running kubectl ({err}): these tests need kubectl (it has kustomize built in) on PATH")
        });
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kustomize prints UTF-8")
}

/// An overlay rendered with extra components, through a kustomization in a
/// scratch directory (kustomize accepts only relative paths to bases).
pub fn kustomize_with(overlay: &str, components: &[&str]) -> String {
    let scratch = std::env::temp_dir().join(format!(
        "chatd-kustomize-{}-{overlay}-{}",
        std::process::id(),
        components.join("-")
    ));
    std::fs::create_dir_all(&scratch).unwrap();
    let k8s = k8s_dir().canonicalize().unwrap();
    let up = "../".repeat(scratch.canonicalize().unwrap().components().count() - 1);
    let relative = |path: PathBuf| format!("{up}{}", path.strip_prefix("/").unwrap().display());
    let mut text =
        String::from("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n");
    text.push_str(&format!(
        "resources:\n  - {}\n",
        relative(k8s.join("overlays").join(overlay))
    ));
    text.push_str("components:\n");
    for component in components {
        text.push_str(&format!(
            "  - {}\n",
            relative(k8s.join("components").join(component))
        ));
    }
    std::fs::write(scratch.join("kustomization.yaml"), text).unwrap();
    let rendered = kustomize(&scratch);
    std::fs::remove_dir_all(&scratch).unwrap();
    rendered
}

/// The documents of a multi-document YAML text, as JSON values.
pub fn parse_yaml(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

/// The objects of one rendering.
pub struct Rendered {
    /// Every object, in kustomize's order.
    pub objects: Vec<Value>,
}

impl Rendered {
    /// `kubectl kustomize deploy/k8s/overlays/NAME`.
    pub fn overlay(name: &str) -> Self {
        Self::from_yaml(&kustomize(&k8s_dir().join("overlays").join(name)))
    }

    /// Objects from YAML text.
    pub fn from_yaml(text: &str) -> Self {
        Self {
            objects: parse_yaml(text),
        }
    }

    /// Objects of `kind`.
    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|object| object["kind"] == kind)
            .collect()
    }

    /// The one object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .all(kind)
            .into_iter()
            .filter(|object| object["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "exactly one {kind} named {name}");
        found[0]
    }

    /// `kind/name` of every object.
    pub fn names(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|object| {
                format!(
                    "{}/{}",
                    object["kind"].as_str().unwrap(),
                    object["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    /// The chatd Deployment's pod template and its `chatd` container.
    pub fn chatd_pod(&self) -> (&Value, &Value) {
        let deployment = self.get("Deployment", "chatd");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = pod["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .find(|container| container["name"] == "chatd")
            .expect("a container named chatd");
        (pod, container)
    }
}

/// The `data` of a ConfigMap, or the decoded values of a Secret's
/// `stringData` (examples are written that way).
pub fn string_map(object: &Value, field: &str) -> Vec<(String, String)> {
    object[field]
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(key, value)| {
                    let value = value
                        .as_str()
                        .unwrap_or_else(|| panic!("{field}.{key} is not a string"));
                    (key.clone(), value.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// True when every label of `selector` (a `matchLabels` map) is on `labels`.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a label selector");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}
