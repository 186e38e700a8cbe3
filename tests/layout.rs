//! The crate graph as docs/architecture.md draws it: arrows point down only. Each
//! workspace crate names the workspace crates it may depend on (normal, dev or build);
//! any other edge, and any crate not placed here, fails with what to do.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::process::Command;

/// Who may depend on whom, in every kind of dependency (dev included: the client's
/// tests that need a server live in this crate, not in the client's).
const ALLOWED: &[(&str, &[&str])] = &[
    // No I/O, nothing of ours.
    ("evapi-proto", &[]),
    ("evapi-cli", &[]),
    ("evapi-ops", &["evapi-proto"]),
    // Knows nothing about SIP or the client side.
    ("evapi-server", &["evapi-proto", "evapi-ops", "evapi-cli"]),
    // Meets the server only on the wire.
    ("evapi-client", &["evapi-proto", "evapi-ops"]),
    ("evapi-nats", &["evapi-proto", "evapi-ops", "evapi-client"]),
    (
        "evapi-record",
        &["evapi-proto", "evapi-ops", "evapi-client"],
    ),
    // The evapi-client binary: on the libraries; no library on it.
    (
        "evapi-client-bin",
        &[
            "evapi-proto",
            "evapi-ops",
            "evapi-cli",
            "evapi-client",
            "evapi-nats",
            "evapi-record",
        ],
    ),
    // Embeds the server; on the client side, the core client only.
    (
        "evapi-sim",
        &[
            "evapi-proto",
            "evapi-ops",
            "evapi-cli",
            "evapi-server",
            "evapi-client",
        ],
    ),
];

/// The end-to-end suite may use every crate.
const ANYTHING: &str = "evapi-tests";

/// Workspace crate -> (dependency, kind) for every dependency on a workspace crate.
fn edges() -> BTreeMap<String, Vec<(String, String)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let ours: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    let mut edges = BTreeMap::new();
    for p in packages {
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter_map(|d| {
                let name = d["name"].as_str()?;
                ours.contains(&name).then(|| {
                    let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                    (name.to_owned(), kind)
                })
            })
            .collect();
        edges.insert(p["name"].as_str().expect("a name").to_owned(), deps);
    }
    edges
}

/// What is wrong with `edges` under [`ALLOWED`], one line each.
fn violations(edges: &BTreeMap<String, Vec<(String, String)>>) -> Vec<String> {
    let mut wrong = Vec::new();
    for (krate, deps) in edges {
        if krate == ANYTHING {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| name == krate) else {
            wrong.push(format!(
                "{krate} is not placed in the crate graph: add it to ALLOWED in tests/layout.rs \
                 and to docs/architecture.md"
            ));
            continue;
        };
        for (dep, kind) in deps {
            if !allowed.contains(&dep.as_str()) {
                wrong.push(format!(
                    "{krate} -> {dep} ({kind} dependency) is an arrow the layout forbids \
                     (docs/architecture.md); {krate} may depend on {allowed:?}"
                ));
            }
        }
    }
    wrong
}

#[test]
fn the_crate_graph_has_only_the_allowed_arrows() {
    let edges = edges();
    assert!(
        edges.contains_key("evapi-client") && edges.contains_key("evapi-server"),
        "cargo metadata lists the workspace: {:?}",
        edges.keys()
    );
    let wrong = violations(&edges);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_forbidden_arrow_is_named() {
    // The check itself: the arrows the layout exists to keep out are caught.
    let mut edges = BTreeMap::new();
    let dev = |dep: &str| vec![(dep.to_owned(), "dev".to_owned())];
    edges.insert("evapi-client".to_owned(), dev("evapi-server"));
    edges.insert("evapi-server".to_owned(), dev("evapi-client"));
    edges.insert("evapi-proto".to_owned(), dev("evapi-ops"));
    edges.insert("evapi-sim".to_owned(), dev("evapi-nats"));
    edges.insert("evapi-new".to_owned(), Vec::new());
    let wrong = violations(&edges);
    assert_eq!(wrong.len(), 5, "{wrong:#?}");
    assert!(wrong[0].contains("evapi-client -> evapi-server (dev dependency)"));
    assert!(wrong[1].contains("evapi-new is not placed"));
}

/// Files of the binaries (their types are nobody's API).
const BINARY_ONLY: &[&str] = &[
    "evapi-client-bin/",
    "evapi-sim/src/cmd/",
    "evapi-sim/src/main.rs",
    "evapi-sim/src/progress.rs",
    "evapi-server/src/cli.rs",
    "evapi-server/src/main.rs",
];

/// Names defined twice on purpose: the two definitions of one type under `cfg`.
const SAME_TYPE_TWICE: &[&str] = &["TlsSetup"];

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_two_public_types_of_the_libraries_share_a_name() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let mut files = Vec::new();
    for krate in ALLOWED.iter().map(|(name, _)| name) {
        let src = root.join(krate).join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut homes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let shown = file
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        if BINARY_ONLY.iter().any(|b| shown.starts_with(b)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a readable source");
        for line in text.lines() {
            let line = line.trim_start();
            for kind in ["pub struct ", "pub enum ", "pub trait ", "pub type "] {
                if let Some(rest) = line.strip_prefix(kind) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    homes.entry(name).or_default().push(shown.clone());
                }
            }
        }
    }
    let clashes: Vec<String> = homes
        .iter()
        .filter(|(name, files)| files.len() > 1 && !SAME_TYPE_TWICE.contains(&name.as_str()))
        .map(|(name, files)| format!("{name}: {}", files.join(", ")))
        .collect();
    assert!(
        clashes.is_empty(),
        "one public name per idea (docs/architecture.md): rename one of each, or re-export \
         it (`pub use`):\n{}",
        clashes.join("\n")
    );
}
