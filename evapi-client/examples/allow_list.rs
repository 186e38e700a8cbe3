//! An app that decides calls from a deny list: every suspended INVITE of every node
//! is answered 403 when its caller (`fu`, the From URI) is in the list, 200 otherwise.
//!
//! - Several nodes, no broker: each answer goes back on the connection its event came
//!   on; a node that restarts is reconnected on its own.
//! - The list is read again when its file changes (checked every second).
//! - Events of one call are handled in order, calls concurrently (by Call-ID).
//! - Every call gets an answer within the deadline: one that the lookup has not decided
//!   in 1.5 s gets 503 (keep it below Kamailio's `fr_inv_timer`).
//!
//! ```sh
//! printf 'sip:spam@\n' > deny.txt
//! cargo run -p evapi-client --example allow_list -- deny.txt sip-a=127.0.0.1:8448 sip-b=127.0.0.1:8449
//! ```
//!
//! `SLOW_EVERY=N` makes the lookup of every Nth call take 3 s, to see the fallback at
//! work. Stop it with Ctrl-C or SIGTERM: it prints what it did.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use evapi_client::app::{App, Decision, Handler, Incoming, Notice};
use evapi_client::nodes::Node;
use evapi_client::ClientConfig;
use tokio_util::sync::CancellationToken;

/// The answer must be on its way by then.
const DEADLINE: Duration = Duration::from_millis(1500);

struct AllowList {
    denied: Arc<RwLock<HashSet<String>>>,
    calls: AtomicU64,
    slow_every: Option<u64>,
}

impl Handler for AllowList {
    async fn handle(&self, event: Incoming) -> Option<Decision> {
        event.id?; // not a suspend event: nothing to decide
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.slow_every.is_some_and(|every| n.is_multiple_of(every)) {
            // A backend that is slow today.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let from = event.str("/fu").unwrap_or_default();
        let denied = self
            .denied
            .read()
            .map(|list| list.iter().any(|d| from.contains(d.as_str())))
            .unwrap_or(false);
        Some(if denied {
            Decision::with_reason(403, "Denied")
        } else {
            Decision::new(200)
        })
    }

    fn notice(&self, notice: Notice) {
        eprintln!("allow_list: {notice:?}");
    }
}

/// The non-empty, non-comment lines of `path`.
fn read_list(path: &PathBuf) -> std::io::Result<HashSet<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Read `path` again whenever it changes.
async fn reload(path: PathBuf, denied: Arc<RwLock<HashSet<String>>>) {
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = modified(&path);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match read_list(&path) {
            Ok(list) => {
                eprintln!("allow_list: {} denied callers", list.len());
                if let Ok(mut d) = denied.write() {
                    *d = list;
                }
            }
            Err(e) => eprintln!(
                "allow_list: cannot read {}: {e} (keeping the old list)",
                path.display()
            ),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: allow_list DENY_FILE [NAME=]HOST:PORT...";
    let path = PathBuf::from(args.next().ok_or(usage)?);
    let nodes = args
        .map(|a| Node::parse(&a, |addr| Ok(addr.to_owned())))
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err(usage.into());
    }
    let denied = Arc::new(RwLock::new(read_list(&path)?));
    tokio::spawn(reload(path, Arc::clone(&denied)));
    let handler = AllowList {
        denied,
        calls: AtomicU64::new(0),
        slow_every: std::env::var("SLOW_EVERY")
            .ok()
            .and_then(|n| n.parse().ok()),
    };

    let app = App::new(nodes, ClientConfig::default())
        .deadline(DEADLINE, Decision::with_reason(503, "Decision Late"));
    let counters = app.counters();
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM can be caught");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    eprintln!("allow_list: serving");
    app.run(handler, stop).await;
    let c = counters.snapshot();
    println!(
        "events {}, answered {}, fallback {}, late {}, stale {}",
        c.events, c.answered, c.fallback, c.late, c.stale
    );
    Ok(())
}
