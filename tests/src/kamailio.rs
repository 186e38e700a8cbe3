//! Kamailio 5.6 as a test peer: started in the foreground with the config shipped in
//! `tests/interop/kamailio.cfg`, on free loopback ports, in its own process group (it
//! forks workers), killed with the whole group on drop, its log kept in a file and
//! printed when the test failed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Kamailio may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Kamailio cannot listen on port 0 and say which port it got, so its ports are found
/// free beforehand and another process may take one in between: it then exits at once,
/// and it is started again on new ports, up to this many times.
const START_ATTEMPTS: usize = 3;

/// Settings passed to the config with `-A`.
#[derive(Debug, Clone)]
pub struct Options {
    /// evapi `max_clients`.
    pub max_clients: usize,
    /// evapi `netstring_format`.
    pub netstring: bool,
    /// Shared memory in MiB (`-m`).
    pub shm_mib: usize,
    /// `-A NOAPP503`: INVITEs get 503 at once while no evapi client is connected.
    pub no_app_503: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_clients: 8,
            netstring: true,
            shm_mib: 64,
            no_app_503: false,
        }
    }
}

/// A running Kamailio.
#[derive(Debug)]
pub struct Kamailio {
    child: Child,
    /// The evapi socket (TCP).
    pub evapi: SocketAddr,
    /// The SIP socket (UDP).
    pub sip: SocketAddr,
    log: PathBuf,
    dir: PathBuf,
}

/// Fail unless Kamailio is installed (see [`crate::require_tool`]).
///
/// # Panics
///
/// When it is missing.
pub fn require() {
    crate::require_tool("kamailio", "kamailio kamailio-extra-modules");
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free UDP port")
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free TCP port")
    }
}

impl Kamailio {
    /// Start Kamailio and wait until its evapi socket serves.
    ///
    /// # Panics
    ///
    /// When it does not start: the log is printed.
    #[must_use]
    pub fn start(options: &Options) -> Self {
        for attempt in 1..=START_ATTEMPTS {
            let mut kamailio = Self::spawn(options);
            match kamailio.wait_ready() {
                Ok(()) => return kamailio,
                Err(exited) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "kamailio exited at start ({exited}; a port taken meanwhile?), again on new ports"
                    );
                }
                Err(exited) => panic!(
                    "kamailio exited at start {START_ATTEMPTS} times ({exited}):\n{}",
                    kamailio.log()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(options: &Options) -> Self {
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/kamailio.cfg");
        let dir = std::env::temp_dir().join(format!(
            "evapi-kamailio-{}-{}",
            std::process::id(),
            free_port(false)
        ));
        std::fs::create_dir_all(&dir).expect("a runtime directory");
        let evapi: SocketAddr = ([127, 0, 0, 1], free_port(false)).into();
        let sip: SocketAddr = ([127, 0, 0, 1], free_port(true)).into();
        let log = dir.join("kamailio.log");
        let log_file = std::fs::File::create(&log).expect("a log file");
        let mut cmd = Command::new("kamailio");
        cmd.arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-Y"])
            .arg(&dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .args(["-m", &options.shm_mib.to_string(), "-M", "16"])
            .arg("-A")
            .arg(format!("EVAPIBIND=\"{evapi}\""))
            .arg("-A")
            .arg(format!("SIPLISTEN=udp:{sip}"))
            .arg("-A")
            .arg(format!("MAXCLIENTS={}", options.max_clients))
            .arg("-A")
            .arg(format!("NETSTRING={}", u8::from(options.netstring)));
        if options.no_app_503 {
            cmd.args(["-A", "NOAPP503"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("kamailio starts");
        Self {
            child,
            evapi,
            sip,
            log,
            dir,
        }
    }

    /// Connect once to the evapi socket, and wait for Kamailio to see that connection
    /// close again, so the first test client finds every slot free. `Err` with its exit
    /// status when Kamailio exited instead.
    fn wait_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(status);
            }
            if let Ok(probe) = std::net::TcpStream::connect(self.evapi) {
                drop(probe);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kamailio did not open its evapi socket:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.wait_log("evapi connection-closed conidx=0", START_TIMEOUT),
            "kamailio did not report the probe connection:\n{}",
            self.log()
        );
        Ok(())
    }

    /// Kamailio's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle` `count` times; false on timeout.
    #[must_use]
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until the log contains `needle`; false on timeout.
    #[must_use]
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_log_count(needle, 1, timeout)
    }

    /// Wait until `n` test clients have connected (the readiness probe not counted).
    #[must_use]
    pub fn wait_clients(&self, n: usize, timeout: Duration) -> bool {
        self.wait_log_count("evapi connection-new", n + 1, timeout)
    }

    /// The process group id (for CPU accounting).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        // `--` so that the negative process-group id is not read as an option.
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (forked workers) goes too.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- kamailio log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
