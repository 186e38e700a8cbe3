use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use evapi_proto::Framing;
use evapi_server::{ClientEnv, CloseReason, Config, EventRoutes, Handle, Server};

pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) enum Ev {
    New(ClientEnv),
    Msg(Bytes),
    Closed(#[allow(dead_code)] CloseReason),
}

/// Records every route call; a message `echo TEXT` is relayed back as `TEXT`.
struct Routes(mpsc::SyncSender<Ev>);

impl EventRoutes for Routes {
    // Reported once accepted: a test that relays on seeing it reaches the client.
    async fn connection_accepted(&self, _: &Handle, c: &ClientEnv) {
        let _ = self.0.send(Ev::New(c.clone()));
    }
    async fn message_received(&self, server: &Handle, _: &ClientEnv, msg: Bytes) {
        if let Some(rest) = msg.strip_prefix(b"echo ") {
            let _ = server.relay(rest);
        }
        let _ = self.0.send(Ev::Msg(msg));
    }
    async fn connection_closed(&self, _: &Handle, _: &ClientEnv, reason: CloseReason) {
        let _ = self.0.send(Ev::Closed(reason));
    }
}

/// An evapi-server on 127.0.0.1:0, running on its own runtime until dropped.
pub(crate) struct Srv {
    pub addr: String,
    pub handle: Handle,
    events: mpsc::Receiver<Ev>,
    _runtime: tokio::runtime::Runtime,
}

pub(crate) fn start(framing: Framing) -> Srv {
    start_on(framing, "127.0.0.1:0")
}

/// [`start`] on a given address.
pub(crate) fn start_on(framing: Framing, bind: &str) -> Srv {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(bind))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, events) = mpsc::sync_channel(100_000);
    let config = Config {
        framing,
        max_clients: 64,
        ..Config::default()
    };
    let server = Server::new(config, Routes(tx));
    let handle = server.handle();
    runtime.spawn(server.run(listener, std::future::pending()));
    Srv {
        addr,
        handle,
        events,
        _runtime: runtime,
    }
}

impl Srv {
    pub(crate) fn next(&self) -> Ev {
        self.events
            .recv_timeout(PATIENCE)
            .expect("a route call within PATIENCE")
    }

    pub(crate) fn connected(&self) -> ClientEnv {
        match self.next() {
            Ev::New(c) => c,
            other => panic!("expected connection-new, got {other:?}"),
        }
    }

    /// The next message received, skipping connection events.
    pub(crate) fn msg(&self) -> Bytes {
        loop {
            if let Ev::Msg(m) = self.next() {
                return m;
            }
        }
    }

    /// The next message received within `patience`, skipping connection events.
    pub(crate) fn msg_within(&self, patience: Duration) -> Option<Bytes> {
        let until = std::time::Instant::now() + patience;
        loop {
            let left = until.checked_duration_since(std::time::Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok(Ev::Msg(m)) => return Some(m),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    pub(crate) fn relay(&self, payload: &str) {
        let _ = self.handle.relay(payload.as_bytes()).unwrap();
    }

    pub(crate) fn client(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(evapi_tests::binary("evapi-client"));
        cmd.arg("--addr")
            .arg(&self.addr)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }
}

/// Run to the end; stdout, stderr as text, and the exit code.
pub(crate) fn output(mut cmd: Command) -> (String, String, i32) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
        status.code().unwrap_or(-1),
    )
}

/// A child process killed on drop.
pub(crate) struct Running(pub Child);

impl Running {
    /// SIGTERM, as a service manager or `kill` stops it.
    pub(crate) fn term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
    }

    pub(crate) fn spawn(mut cmd: Command) -> Self {
        Running(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Wait for the exit, at most [`FINISH`]: a hung client fails the test instead of
    /// holding CI until its time limit.
    pub(crate) fn finish(mut self) -> (String, String, i32) {
        use wait_timeout::ChildExt as _;
        if self.0.wait_timeout(FINISH).unwrap().is_none() {
            panic!("the client did not exit within {FINISH:?}");
        }
        let child = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap());
        let out = child.wait_with_output().unwrap();
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
            out.status.code().unwrap_or(-1),
        )
    }
}

/// How long a client under test may take to finish by itself.
const FINISH: std::time::Duration = std::time::Duration::from_secs(30);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
