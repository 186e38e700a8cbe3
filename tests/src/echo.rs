//! evapi-server in-process with the same routing as `tests/interop/kamailio.cfg`, so
//! the same byte streams can be sent to both and the results compared:
//! `tag:NAME` sets the tag and relays `tagged:CONIDX:NAME`; `mcast:TAG:TEXT` and
//! `ucast:TAG:TEXT` multicast / unicast TEXT; anything else is relayed to every client
//! as `echo:CONIDX:MSG`.

use std::net::SocketAddr;

use bytes::Bytes;
use evapi_server::{ClientEnv, Config, EventRoutes, Handle, Server, Target};

struct Echo;

impl EventRoutes for Echo {
    async fn message_received(&self, server: &Handle, client: &ClientEnv, msg: Bytes) {
        if let Some(tag) = msg.strip_prefix(b"tag:") {
            let tag = String::from_utf8_lossy(tag);
            let _ = server.set_tag(Target::Connid(client.connid), &tag);
            let _ = server.relay(format!("tagged:{}:{tag}", client.conidx).as_bytes());
            return;
        }
        for (prefix, unicast) in [(&b"mcast:"[..], false), (&b"ucast:"[..], true)] {
            if let Some(rest) = msg.strip_prefix(prefix) {
                let (tag, text) = match rest.iter().position(|b| *b == b':') {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, &b""[..]),
                };
                let tag = String::from_utf8_lossy(tag);
                let _ = if unicast {
                    server.unicast(text, &tag)
                } else {
                    server.multicast(text, &tag)
                };
                return;
            }
        }
        let mut echo = format!("echo:{}:", client.conidx).into_bytes();
        echo.extend_from_slice(&msg);
        let _ = server.relay(&echo);
    }
}

/// Our server with the echo routing, on its own runtime until dropped.
#[derive(Debug)]
pub struct Ours {
    /// The evapi socket.
    pub addr: SocketAddr,
    /// The server's handle.
    pub handle: Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Ours {
    /// Start on a free loopback port.
    ///
    /// # Panics
    ///
    /// When the runtime or the socket cannot be set up.
    #[must_use]
    pub fn start(config: Config) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        let server = Server::new(config, Echo);
        let handle = server.handle();
        runtime.spawn(server.run(listener, std::future::pending()));
        Self {
            addr,
            handle,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}
