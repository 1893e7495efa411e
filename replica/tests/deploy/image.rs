//! Builds the Dockerfile's `chatd` target with buildah from this build's
//! binary (`--build-arg CHATD_BINARY=prebuilt`), in a private image store
//! that is removed afterwards.
//!
//! No registry is reachable here, so the runtime base is a stand-in for
//! distroless cc made from this machine's files: the C libraries the binary
//! links, the CA bundle, and the `nonroot` user 65532. The Dockerfile's
//! build stages are skipped (they would need the Rust image).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The stand-in runtime base's name in the private store.
const BASE: &str = "localhost/chatd-test-runtime-base:latest";

/// A private buildah store and build context.
pub struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    /// An empty store in a scratch directory.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("chatd-image-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("context/out")).unwrap();
        Self { dir }
    }

    /// `buildah` on the private store.
    fn buildah(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    }

    /// `buildah ARGS` on the private store; stdout, or a panic with what it said.
    pub fn run(&self, args: &[&str]) -> String {
        let output = self.buildah().args(args).output().unwrap_or_else(|err| {
            panic!("running buildah ({err}): this test needs buildah (apt-get install buildah)")
        });
        assert!(
            output.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// The stand-in runtime base, holding what `binary` needs to run.
    pub fn make_base(&self, binary: &Path) {
        let container = self.run(&["from", "scratch"]);
        let root = PathBuf::from(self.run(&["mount", &container]));
        for library in linked_libraries(binary) {
            let into = root.join(library.strip_prefix("/").unwrap());
            std::fs::create_dir_all(into.parent().unwrap()).unwrap();
            std::fs::copy(&library, &into).unwrap();
        }
        let certificates = root.join("etc/ssl/certs");
        std::fs::create_dir_all(&certificates).unwrap();
        std::fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            certificates.join("ca-certificates.crt"),
        )
        .expect("the CA bundle (Debian package ca-certificates)");
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n").unwrap();
        self.run(&["umount", &container]);
        self.run(&["commit", "--quiet", &container, BASE]);
        self.run(&["rm", &container]);
    }

    /// Builds `target` of the repository's Dockerfile with `binary` as
    /// `out/chatd`; returns the image's config.
    pub fn build(&self, target: &str, binary: &Path, tag: &str) -> Value {
        let context = self.dir.join("context");
        let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
        std::fs::copy(&dockerfile, context.join("Dockerfile")).unwrap();
        std::fs::copy(binary, context.join("out/chatd")).unwrap();
        let base = format!("RUNTIME_IMAGE={BASE}");
        self.run(&[
            "bud",
            "--quiet",
            "--target",
            target,
            "--build-arg",
            "CHATD_BINARY=prebuilt",
            "--build-arg",
            &base,
            "--tag",
            tag,
            context.to_str().unwrap(),
        ]);
        let inspected: Value =
            serde_json::from_str(&self.run(&["inspect", "--type", "image", tag])).unwrap();
        inspected["OCIv1"]["config"].clone()
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let _ = self.buildah().args(["rm", "--all"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shared libraries `binary` loads, its interpreter included (`ldd`).
fn linked_libraries(binary: &Path) -> Vec<PathBuf> {
    let output = Command::new("ldd").arg(binary).output().expect("ldd");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}
