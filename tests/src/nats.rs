//! nats-server with JetStream as a test peer: a free loopback port, a fresh store
//! directory, killed (and the directory removed) on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fail unless nats-server is installed (tests that need it are ignored by default).
///
/// # Panics
///
/// When nats-server cannot be run.
pub fn require() {
    crate::require_tool("nats-server", "nats-server");
}

/// nats-server starts tried before giving up (see [`Nats::start_with`]).
const START_ATTEMPTS: usize = 3;

/// A running nats-server.
#[derive(Debug)]
pub struct Nats {
    child: Child,
    store: PathBuf,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
}

impl Nats {
    /// Start one with JetStream and wait until it accepts connections.
    ///
    /// # Panics
    ///
    /// When it does not start or never listens.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// [`Nats::start`] with these lines of nats-server configuration (TLS,
    /// authorization, ...).
    ///
    /// # Panics
    ///
    /// As [`Nats::start`].
    #[must_use]
    pub fn start_with(config: &str) -> Self {
        require();
        // The port is found free beforehand (restarts need the same one) and another
        // process may take it in between: nats-server then exits, and it is started
        // again on another port.
        for attempt in 1..=START_ATTEMPTS {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let store =
                std::env::temp_dir().join(format!("evapi-nats-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&store);
            std::fs::create_dir_all(&store).expect("store dir");
            std::fs::write(store.join("nats.conf"), config).expect("nats-server config");
            let mut nats = Self {
                child: Self::spawn(port, &store),
                store,
                url: format!("nats://127.0.0.1:{port}"),
                port,
            };
            if nats.listening() {
                return nats;
            }
            eprintln!(
                "nats-server did not start on port {port} (attempt {attempt}); again on another"
            );
        }
        panic!("nats-server never listened ({START_ATTEMPTS} attempts)")
    }

    fn spawn(port: u16, store: &std::path::Path) -> Child {
        Command::new("nats-server")
            .arg("-c")
            .arg(store.join("nats.conf"))
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts")
    }

    /// Whether our nats-server serves its port: its `INFO` greeting comes back (not
    /// some other process that took the port), and it has not exited.
    fn listening(&mut self) -> bool {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut greeting = [0u8; 5];
                if s.read_exact(&mut greeting).is_ok() && &greeting == b"INFO " {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn wait_listening(&mut self) {
        assert!(self.listening(), "nats-server never listened again");
    }

    /// Kill it (`kill -9`: no goodbye to its clients), leave it down for `down`, start
    /// it again on the same port and store (clients reconnect).
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Self::spawn(self.port, &self.store);
        self.wait_listening();
    }

    /// Kill it (it stays down until [`Nats::start_again`]).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again after [`Nats::kill`], same port and store.
    pub fn start_again(&mut self) {
        self.child = Self::spawn(self.port, &self.store);
        self.wait_listening();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
