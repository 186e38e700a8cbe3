use std::path::{Path, PathBuf};
use std::process::Command;

/// The summary with what varies from run to run replaced.
pub(crate) fn redact_summary(text: &str) -> String {
    text.lines()
        .map(|l| {
            if let Some((head, _)) = l.split_once(" requests in ") {
                format!("{head} requests in [duration]")
            } else if l.trim_start().starts_with("latency ") {
                "  latency (suspend to final reply): [timings]".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn redact_report(mut v: serde_json::Value) -> serde_json::Value {
    v["duration_ms"] = "[duration]".into();
    v["latency"] = "[timings]".into();
    v
}

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Every shipped scenario, in-process on tokio's paused clock: timers of seconds (the
/// slow app, fr_inv_timer) pass at once and exactly, whatever the machine's load.
#[tokio::test(start_paused = true)]
async fn every_shipped_scenario_meets_its_expectations() {
    let files = shipped();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "app-disconnects",
            "external-app",
            "garbage-answers",
            "happy-path",
            "slow-app-timeout",
            "tags-multicast",
            "tags-unicast"
        ]
    );
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let loaded = evapi_sim::scenario::Scenario::load(&path).unwrap();
        if loaded.scenario.external > 0 {
            // Needs an outside app: run by the cross-binary suite with evapi-client.
            continue;
        }
        let options = evapi_sim::engine::RunOptions {
            bind: Some("127.0.0.1:0".to_owned()),
            fallback_to_ephemeral: false,
            interrupt: None,
            metrics: None,
            control_token: None,
        };
        let report = evapi_sim::engine::run(&loaded, &options, &evapi_sim::engine::Quiet)
            .await
            .unwrap();
        assert!(report.passed, "{name}: {}", report.summary());
        let mut summary = redact_summary(&report.summary());
        let mut json = serde_json::to_value(&report).unwrap();
        if name == "app-disconnects" {
            // Events relayed after the app left reach nobody; how many depends on when
            // the app's goodbye overtakes the traffic. The outcomes do not vary.
            summary = summary
                .lines()
                .map(|l| {
                    if l.contains("undelivered events") {
                        "  undelivered events      [varies]"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            json["undelivered"] = "[varies]".into();
        }
        insta::assert_snapshot!(format!("{name}-summary"), summary);
        insta::assert_json_snapshot!(format!("{name}-report"), redact_report(json));
    }
}

#[test]
fn the_demo_runs_10000_invites_on_embedded_defaults() {
    let out = Command::new(assert_cmd::cargo::cargo_bin!("evapi-sim"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("  final 200               10000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("latency (suspend to final reply): p50 "),
        "{stdout}"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("evapi socket on 127.0.0.1:"), "{stderr}");
}
