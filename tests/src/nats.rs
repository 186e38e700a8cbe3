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

/// Three nats-servers in one JetStream cluster on loopback (free client, route and
/// monitoring ports, each with its own store), for failover tests.
#[derive(Debug)]
pub struct Cluster {
    servers: Vec<(Child, u16)>,
    dir: PathBuf,
    /// `nats://127.0.0.1:P1,nats://127.0.0.1:P2,nats://127.0.0.1:P3`.
    pub urls: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    /// Start three servers (`n1`, `n2`, `n3`) and wait until JetStream has a meta
    /// leader and three peers. The ports are found free beforehand (each server must
    /// know the others' route ports), and another process may take one in between: a
    /// server then exits at once, and the cluster is started again on new ports.
    ///
    /// # Panics
    ///
    /// When the cluster does not form within 30 s, three times.
    #[must_use]
    pub fn start() -> Self {
        require();
        for attempt in 1..=START_ATTEMPTS {
            if let Some(cluster) = Self::try_start() {
                return cluster;
            }
            eprintln!("the NATS cluster did not form (attempt {attempt}); again on new ports");
        }
        panic!("the NATS cluster never formed ({START_ATTEMPTS} attempts)")
    }

    fn try_start() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("evapi-nats-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut servers = Vec::new();
        for (i, (client, route, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: evapi, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                dir.join(&name).display(),
                routes.join(", ")
            );
            let file = dir.join(format!("{name}.conf"));
            std::fs::write(&file, config).expect("nats-server config");
            let child = Command::new("nats-server")
                .arg("-c")
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            servers.push((child, *monitor));
        }
        let urls = ports
            .iter()
            .map(|(client, _, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",");
        // Dropped (every server killed, the directory removed) if it does not form.
        let mut cluster = Self { servers, dir, urls };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exited = cluster
                .servers
                .iter_mut()
                .any(|(child, _)| matches!(child.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                return None;
            }
            // Every server knows the meta leader and the three peers.
            let ready = (0..3).all(|i| {
                cluster.monitor(i, "/jsz").is_some_and(|jsz| {
                    jsz.contains("\"leader\"") && jsz.contains("\"cluster_size\": 3")
                })
            });
            if ready {
                return Some(cluster);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The body of `GET path` on server `i`'s monitoring port (`None`: it does not
    /// answer).
    #[must_use]
    pub fn monitor(&self, i: usize, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let (_, port) = self.servers.get(i)?;
        let mut s = TcpStream::connect(("127.0.0.1", *port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    }

    /// Kill server `i` (`n{i+1}`) with `kill -9`.
    pub fn kill(&mut self, i: usize) {
        if let Some((child, _)) = self.servers.get_mut(i) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// Put server `i` in lame duck mode (SIGUSR2): it hands its stream leaderships to
    /// the others and sends its clients away, as an operator's clean stop does.
    pub fn lame_duck(&mut self, i: usize) {
        if let Some((child, _)) = self.servers.get(i) {
            let _ = Command::new("kill")
                .args(["-USR2", &child.id().to_string()])
                .status();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
