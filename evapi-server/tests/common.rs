use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use evapi_proto::{FrameCodec, Framing};
use evapi_server::{Admit, ClientEnv, CloseReason, Config, EventRoutes, Handle, Server};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// How long a test waits for something that should happen at once.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// An event route call, as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ev {
    New(ClientEnv),
    Msg(ClientEnv, Bytes),
    Closed(ClientEnv, CloseReason),
}

/// Routes that record every call; connection-new admits with `admit`.
pub(crate) struct Recorder {
    tx: mpsc::Sender<Ev>,
    admit: fn(&ClientEnv) -> Admit,
}

impl EventRoutes for Recorder {
    async fn connection_new(&self, _: &Handle, client: &ClientEnv) -> Admit {
        self.tx.send(Ev::New(client.clone())).await.unwrap();
        (self.admit)(client)
    }
    async fn message_received(&self, _: &Handle, client: &ClientEnv, msg: Bytes) {
        self.tx.send(Ev::Msg(client.clone(), msg)).await.unwrap();
    }
    async fn connection_closed(&self, _: &Handle, client: &ClientEnv, reason: CloseReason) {
        self.tx
            .send(Ev::Closed(client.clone(), reason))
            .await
            .unwrap();
    }
}

pub(crate) type Client = Framed<TcpStream, FrameCodec>;

pub(crate) struct TestServer {
    pub handle: Handle,
    pub addr: SocketAddr,
    pub events: mpsc::Receiver<Ev>,
    pub task: JoinHandle<()>,
    framing: Framing,
}

pub(crate) async fn start(config: Config) -> TestServer {
    start_with(config, |_| Admit::Accept).await
}

pub(crate) async fn start_with(config: Config, admit: fn(&ClientEnv) -> Admit) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, events) = mpsc::channel(200_000);
    let framing = config.framing;
    let server = Server::new(config, Recorder { tx, admit });
    let handle = server.handle();
    let task = tokio::spawn(server.run(listener, std::future::pending()));
    TestServer {
        handle,
        addr,
        events,
        task,
        framing,
    }
}

/// A server on an in-memory listener (no sockets), and the connector to reach it.
pub(crate) async fn start_memory(
    config: Config,
) -> (TestServer, evapi_server::transport::MemoryConnector) {
    let (listener, connector) = evapi_server::transport::memory();
    let (tx, events) = mpsc::channel(200_000);
    let framing = config.framing;
    let server = Server::new(
        config,
        Recorder {
            tx,
            admit: |_| Admit::Accept,
        },
    );
    let handle = server.handle();
    let task = tokio::spawn(server.run(listener, std::future::pending()));
    let server = TestServer {
        handle,
        addr: evapi_server::transport::UNIX_PEER,
        events,
        task,
        framing,
    };
    (server, connector)
}

impl TestServer {
    /// The next route call.
    pub(crate) async fn next(&mut self) -> Ev {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("a route call within PATIENCE")
            .expect("server alive")
    }

    /// Connect a framed client and wait until connection-new ran for it and its
    /// decision took effect (accepted, so relays reach it; or rejected and gone).
    pub(crate) async fn connect(&mut self) -> (Client, ClientEnv) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let env = self.next_new().await;
        (
            Framed::new(stream, FrameCodec::new(self.framing, 1 << 20)),
            env,
        )
    }

    /// The next connection-new, once its decision took effect (accepted, so relays
    /// reach it; or rejected and gone).
    pub(crate) async fn next_new(&mut self) -> ClientEnv {
        let env = match self.next().await {
            Ev::New(env) => env,
            other => panic!("expected connection-new, got {other:?}"),
        };
        let handle = self.handle.clone();
        tokio::time::timeout(PATIENCE, async {
            while !handle.is_accepted(env.connid)
                && handle.clients().iter().any(|c| c.connid == env.connid)
            {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("connection-new's decision takes effect within PATIENCE");
        env
    }

    pub(crate) async fn expect_msg(&mut self) -> (ClientEnv, Bytes) {
        match self.next().await {
            Ev::Msg(env, msg) => (env, msg),
            other => panic!("expected message-received, got {other:?}"),
        }
    }

    pub(crate) async fn expect_closed(&mut self) -> (ClientEnv, CloseReason) {
        match self.next().await {
            Ev::Closed(env, reason) => (env, reason),
            other => panic!("expected connection-closed, got {other:?}"),
        }
    }
}

/// Next frame on a client, within PATIENCE.
pub(crate) async fn recv(client: &mut Client) -> Bytes {
    tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("a frame within PATIENCE")
        .expect("connection open")
        .expect("valid frame")
}

/// Wait for the server to close the client's connection: EOF, or a reset (the server
/// closed with unread input). A decode error is not a close: it fails the test.
pub(crate) async fn expect_eof(client: &mut Client) {
    match tokio::time::timeout(PATIENCE, client.next()).await {
        Ok(None) => {}
        Ok(Some(Err(evapi_proto::CodecError::Io(e))))
            if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Some(Err(e))) => panic!("expected EOF, got an error: {e}"),
        Ok(Some(Ok(frame))) => panic!("expected EOF, got frame {frame:?}"),
        Err(_) => panic!("connection still open after PATIENCE"),
    }
}

pub(crate) async fn send(client: &mut Client, payload: &'static [u8]) {
    client.send(payload).await.unwrap();
}

pub(crate) fn config(framing: Framing) -> Config {
    Config {
        framing,
        ..Config::default()
    }
}
