//! The transaction table at scale: memory per suspended transaction, and the cost of
//! continue and timeout at 10,000 and at 100,000 transactions (O(1) means the same).
//!
//! Run: `cargo bench -p evapi-sim --bench tm`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use evapi_proto::TransactionId;
use evapi_sim::tm::{Table, TmConfig};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A table holding `n` suspended INVITE transactions, their ids, and the time used.
fn fill(n: usize, now: Instant) -> (Table<()>, Vec<TransactionId>) {
    let mut table = Table::new(TmConfig::default());
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("call-{i}@bench 1");
        let id = table.create(key.as_bytes(), true, (), now);
        table.suspend(id, now).unwrap();
        ids.push(id);
    }
    (table, ids)
}

/// Nanoseconds per continue and per timeout with `n` transactions suspended.
fn per_op(n: usize) -> (f64, f64) {
    let now = Instant::now();
    let (mut table, ids) = fill(n, now);
    // Continue the first half, one by one.
    let half = n / 2;
    let t = Instant::now();
    for id in &ids[..half] {
        black_box(table.resume(*id, 200, now).unwrap());
    }
    let cont = t.elapsed().as_nanos() as f64 / half as f64;
    // Let the other half time out in one sweep.
    let mut expired = Vec::with_capacity(n - half);
    let t = Instant::now();
    table.handle_timeout(now + Duration::from_secs(121), &mut expired);
    let timeout = t.elapsed().as_nanos() as f64 / (n - half) as f64;
    assert_eq!(expired.len(), n - half);
    (cont, timeout)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let big = if bench { 100_000 } else { 10_000 };
    let small = big / 10;

    let before = rss_kib();
    let (table, ids) = fill(big, Instant::now());
    let after = rss_kib();
    let per_tx = (after.saturating_sub(before)) as f64 * 1024.0 / big as f64;
    black_box((&table, &ids));
    drop((table, ids));

    let (c_small, t_small) = per_op(small);
    let (c_big, t_big) = per_op(big);
    println!("| transaction table | {small} suspended | {big} suspended | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| continue, ns/op | {c_small:.0} | {c_big:.0} | {:.2} |",
        c_big / c_small
    );
    println!(
        "| timeout, ns/op | {t_small:.0} | {t_big:.0} | {:.2} |",
        t_big / t_small
    );
    println!();
    println!("| memory | value |");
    println!("|---|---|");
    println!(
        "| RSS growth for {big} suspended transactions | {:.1} MiB |",
        (after - before) as f64 / 1024.0
    );
    println!(
        "| per suspended transaction (ids, state, timer entry, hash slot) | {per_tx:.0} bytes |"
    );
}
