//! The signals an operator sends, as one stream: SIGINT (Ctrl-C) and SIGTERM (what
//! service managers and `kill` send) mean "shut down gracefully", SIGHUP means "reload".
//! For binaries; the libraries never install signal handlers.

/// A signal the binaries act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM: a service manager or `kill` stops the process.
    Terminate,
    /// SIGHUP: reload what can be reloaded.
    Hangup,
}

impl Signal {
    /// Whether this signal asks the process to stop.
    #[must_use]
    pub fn stops(self) -> bool {
        matches!(self, Signal::Interrupt | Signal::Terminate)
    }
}

/// SIGINT, SIGTERM and SIGHUP as one stream (installed when it is made).
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Watch the three signals. One that cannot be watched is never reported (the
    /// others still are), rather than reported at once.
    #[must_use]
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                hup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Whether SIGHUP is watched (it may not be, where the handler could not be
    /// installed, or off Unix).
    #[must_use]
    pub fn watches_hangup(&self) -> bool {
        #[cfg(unix)]
        return self.hup.is_some();
        #[cfg(not(unix))]
        false
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        // Ctrl-C that cannot be watched is never reported.
        let interrupt = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        {
            let term = wait(self.term.as_mut());
            let hup = wait(self.hup.as_mut());
            tokio::select! {
                () = interrupt => Signal::Interrupt,
                () = term => Signal::Terminate,
                () = hup => Signal::Hangup,
            }
        }
        #[cfg(not(unix))]
        {
            interrupt.await;
            Signal::Interrupt
        }
    }

    /// The next signal that asks the process to stop (SIGHUP is skipped).
    pub async fn stop(&mut self) -> Signal {
        loop {
            let signal = self.recv().await;
            if signal.stops() {
                return signal;
            }
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// The next delivery of `signal`; never when it is not watched (or its stream ended).
#[cfg(unix)]
async fn wait(signal: Option<&mut tokio::signal::unix::Signal>) {
    let delivered = match signal {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !delivered {
        std::future::pending::<()>().await;
    }
}

/// Resolves on the first SIGINT or SIGTERM. When neither can be watched it never
/// resolves (the process is then stopped by force), rather than resolving at once.
pub async fn terminated() {
    Signals::new().stop().await;
}
