//! Cases per second: a scenario of 10,000 cases read from a CSV file (each with a code,
//! a reason and an answer field to check), run end to end with a built-in responder,
//! beside the same 10,000 calls as plain traffic (`traffic.count`, totals only) in the
//! same run: the cost of judging every call on its own. Also the judge alone (parse,
//! prepare and judge 10,000 calls, no I/O).
//!
//! Run: `cargo bench -p evapi-sim --bench cases` (1,000 cases when run as a test).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use evapi_sim::cases::{self, Ended, Ending};
use evapi_sim::engine::{self, Quiet, RunOptions};
use evapi_sim::scenario::Scenario;

fn csv(n: usize) -> String {
    let mut text = String::from("name,ruri,code,reason,outcome,/code\n");
    for i in 0..n {
        let _ = writeln!(text, "call {i},sip:{i}@example.com,200,OK,answered,200");
    }
    text
}

fn scenario(cases_file: Option<&str>, n: usize) -> String {
    let cases = cases_file.map_or(String::new(), |f| format!(r#""cases_file": "{f}","#));
    format!(
        r#"{{ "name": "bench", {cases}
            "traffic": {{ "count": {n}, "concurrency": 1000 }},
            "responders": [ {{ "kind": "answer", "code": 200 }} ],
            "expect": {{ "timeouts": 0 }} }}"#
    )
}

async fn run(text: &str, dir: &std::path::Path) -> (Duration, bool, usize) {
    let loaded = Scenario::parse_in(text, "bench", dir).unwrap();
    let started = Instant::now();
    let report = engine::run(&loaded, &RunOptions::default(), &Quiet)
        .await
        .unwrap();
    (started.elapsed(), report.passed, report.cases.len())
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = if bench { 10_000 } else { 1_000 };
    let dir = std::env::temp_dir().join(format!("evapi-cases-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cases.csv"), csv(n)).unwrap();

    // The judge alone.
    let started = Instant::now();
    let parsed = cases::from_csv(&csv(n), "cases.csv").unwrap();
    let ready = cases::prepare(&parsed).unwrap();
    let answer = br#"{"tindex":1,"tlabel":2,"code":200,"reason":"OK"}"#;
    let mut failed = 0;
    for c in &ready {
        let ended = Ended {
            code: 200,
            reason: "OK",
            ending: Ending::Answered,
            latency: Some(Duration::from_millis(1)),
            answer: Some(answer),
        };
        failed += usize::from(!c.judge(&ended).is_empty());
    }
    let judge = started.elapsed();
    assert_eq!(failed, 0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..3 {
            let (t, passed, judged) = run(&scenario(Some("cases.csv"), n), &dir).await;
            assert!(passed && judged == n, "every case passes");
            with.push(t);
            let (t, passed, _) = run(&scenario(None, n), &dir).await;
            assert!(passed);
            without.push(t);
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    with.sort();
    without.sort();
    let (w, wo) = (with[1], without[1]);
    let per_s = |t: Duration| n as f64 / t.as_secs_f64();
    println!("| {n} calls | wall time | calls/s |");
    println!("|---|---|---|");
    println!(
        "| cases from CSV, each judged | {w:.2?} | {:.0} |",
        per_s(w)
    );
    println!(
        "| plain traffic, totals only (baseline) | {wo:.2?} | {:.0} |",
        per_s(wo)
    );
    println!(
        "| cases / plain | {:.2} | |",
        wo.as_secs_f64() / w.as_secs_f64()
    );
    println!(
        "| the judge alone (parse, prepare, judge) | {judge:.2?} | {:.0} |",
        per_s(judge)
    );
}
