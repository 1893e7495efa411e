//! What the Dockerfile says an image is: per stage, its base, user,
//! environment, entrypoint, command and the files it copies in. Enough to
//! run a binary the way a container of that image would, without building
//! the image.

use std::path::Path;

/// One `FROM … AS name` stage.
#[derive(Debug, Default)]
pub struct Stage {
    /// The name after `AS`.
    pub name: String,
    /// The image or stage it starts from (unexpanded).
    pub base: String,
    /// `USER`, if set.
    pub user: Option<String>,
    /// `ENV` pairs, in order.
    pub env: Vec<(String, String)>,
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD` (exec form).
    pub cmd: Vec<String>,
    /// Destinations of `COPY`.
    pub copies: Vec<String>,
}

/// The stages of the repository's Dockerfile, in order.
pub fn stages() -> Vec<Stage> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    parse(&std::fs::read_to_string(&path).expect("the Dockerfile"))
}

/// The stage named `name`.
pub fn stage(name: &str) -> Stage {
    stages()
        .into_iter()
        .find(|stage| stage.name == name)
        .unwrap_or_else(|| panic!("no Dockerfile stage named {name}"))
}

fn parse(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(text) {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        let rest = rest.trim();
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => String::new(),
            };
            stages.push(Stage {
                name,
                base: words[0].to_owned(),
                ..Stage::default()
            });
            continue;
        }
        let Some(stage) = stages.last_mut() else {
            continue; // ARG before the first FROM
        };
        match keyword.as_str() {
            "USER" => stage.user = Some(rest.to_owned()),
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (name, value) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV {rest}: write NAME=VALUE pairs"));
                    stage.env.push((name.to_owned(), value.to_owned()));
                }
            }
            "ENTRYPOINT" => stage.entrypoint = exec_form(&keyword, rest),
            "CMD" => stage.cmd = exec_form(&keyword, rest),
            "COPY" => stage.copies.push(
                rest.split_whitespace()
                    .last()
                    .expect("COPY has a destination")
                    .to_owned(),
            ),
            _ => {}
        }
    }
    stages
}

/// Instructions with their continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
}

/// `["a", "b"]`: the shell form would need a shell the runtime image lacks.
fn exec_form(keyword: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|_| panic!("{keyword} {rest}: use the exec form, [\"…\"]"))
}

#[test]
fn stages_are_read_with_their_settings() {
    let stages = parse(
        "# syntax=docker/dockerfile:1\nARG BASE=x\nFROM ${BASE} AS build\nRUN a \\\n  b\nFROM img AS run\nCOPY --from=build /out/app /usr/local/bin/app\nUSER 1:1\nENV A=1 \\\n    B=2\nENTRYPOINT [\"/usr/local/bin/app\"]\nCMD [\"serve\"]\n",
    );
    assert_eq!(stages.len(), 2);
    let run = &stages[1];
    assert_eq!((run.name.as_str(), run.base.as_str()), ("run", "img"));
    assert_eq!(run.user.as_deref(), Some("1:1"));
    assert_eq!(
        run.env,
        [("A".into(), "1".into()), ("B".into(), "2".into())]
    );
    assert_eq!(run.entrypoint, ["/usr/local/bin/app"]);
    assert_eq!(run.cmd, ["serve"]);
    assert_eq!(run.copies, ["/usr/local/bin/app"]);
}
