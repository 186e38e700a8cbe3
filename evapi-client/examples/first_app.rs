//! The app of docs/writing-an-app.md, as written there (a test keeps them the same).
use std::sync::Arc;
use std::time::Duration;

use evapi_client::app::{App, Decision, Incoming};
use evapi_client::{nodes::Node, ClientConfig};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    // The nodes, as arguments: `my-app 10.0.0.1:8448 sip-b=10.0.0.2:8448`.
    let nodes: Vec<Node> = std::env::args()
        .skip(1)
        .map(|arg| Node::parse(&arg, |addr| Ok(addr.to_owned())))
        .collect::<Result<_, _>>()
        .expect("each argument is HOST:PORT or NAME=HOST:PORT");
    // The callers to turn away: `EVAPI_DENY=caller13@,spam@`.
    let deny: Arc<Vec<String>> = Arc::new(
        std::env::var("EVAPI_DENY")
            .unwrap_or_default()
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
    );

    // Every call gets an answer within 2 s: 503 when the handler is not done by then.
    let app = App::new(nodes, ClientConfig::default())
        .deadline(Duration::from_secs(2), Decision::new(503));

    // Ctrl-C or SIGTERM: finish the calls in hand, then leave.
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be caught");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });

    let handler = move |event: Incoming| {
        let deny = Arc::clone(&deny);
        async move {
            // `fu` is the caller (the From URI) in the node's event.
            let from = event.str("/fu").unwrap_or_default();
            let denied = deny.iter().any(|d| from.contains(d.as_str()));
            Some(Decision::new(if denied { 403 } else { 200 }))
        }
    };
    app.run(handler, stop).await;
}
