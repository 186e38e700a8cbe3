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
