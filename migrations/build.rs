//! Embeds every `sql/NNNN_name.sql` file, in order, into the runner. A new
//! migration is a new file; nothing else has to be edited.

use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<String> = fs::read_dir(&dir)
        .expect("read migrations/sql")
        .map(|entry| entry.expect("read migrations/sql entry").file_name())
        .map(|name| name.into_string().expect("migration file names are UTF-8"))
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();

    let mut code = String::from(
        "/// Every embedded migration, in order.\npub static EMBEDDED: &[Migration] = &[\n",
    );
    let mut previous = 0;
    for name in &files {
        let version: i32 = name
            .split('_')
            .next()
            .and_then(|prefix| prefix.parse().ok())
            .unwrap_or_else(|| {
                panic!("migration {name} must start with a number, like 0001_name.sql")
            });
        // Branches reserve numbers in parallel and the numbering is made
        // contiguous when they merge, so a gap is allowed; two files with
        // one number, or a number that goes back, are not.
        assert!(
            version > previous,
            "migration {name}: versions must increase (after {previous})"
        );
        previous = version;
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        code.push_str(&format!(
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({path:?}) }},\n",
            path = path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("embedded.rs");
    fs::write(out, code).expect("write embedded.rs");
}
