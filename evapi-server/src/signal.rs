//! Waiting for the signals that mean "shut down gracefully": SIGINT (Ctrl-C) and, on
//! Unix, SIGTERM (what service managers and `kill` send). For binaries built on the
//! library; the library itself never installs signal handlers.

/// Resolves on the first SIGINT or SIGTERM.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // Without SIGTERM handling, Ctrl-C still works; if even that cannot be installed,
    // never resolving is the only safe answer (the process is then stopped by force).
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
