//! Embedding the event socket: an echo server with a greeting and a ticker.
//!
//! Every client is greeted with its conidx and tagged `app`; whatever a client sends
//! is relayed back to all clients as `echo:CONIDX:MSG` (the routing a Kamailio config
//! would do in `event_route[evapi:message-received]`); a heartbeat event is multicast
//! to the `app` tag every second. Ctrl-C shuts down gracefully.
//!
//! ```sh
//! cargo run -p evapi-server --example embed -- 127.0.0.1:8448
//! evapi-client --addr 127.0.0.1:8448 repl     # or: printf '5:hello,' | nc 127.0.0.1 8448
//! ```

use std::time::Duration;

use bytes::Bytes;
use evapi_server::{Admit, ClientEnv, CloseReason, Config, EventRoutes, Handle, Server};

struct Echo;

impl EventRoutes for Echo {
    async fn connection_new(&self, _server: &Handle, client: &ClientEnv) -> Admit {
        println!(
            "connected: conidx {} from {}:{}",
            client.conidx, client.srcaddr, client.srcport
        );
        Admit::AcceptWithTag("app".into())
    }

    async fn message_received(&self, server: &Handle, client: &ClientEnv, msg: Bytes) {
        let mut echo = format!("echo:{}:", client.conidx).into_bytes();
        echo.extend_from_slice(&msg);
        if let Err(e) = server.relay(&echo) {
            eprintln!("relay failed: {e}");
        }
    }

    async fn connection_closed(&self, _server: &Handle, client: &ClientEnv, reason: CloseReason) {
        println!("closed: conidx {} ({reason})", client.conidx);
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8448".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);

    let server = Server::new(Config::default(), Echo);
    let handle = server.handle();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for n in 0u64.. {
            tick.tick().await;
            // No client with the tag yet is not an error worth reporting here.
            let _ = handle.multicast(
                format!(r#"{{"event":"heartbeat","data":{n}}}"#).as_bytes(),
                "app",
            );
        }
    });
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server.run(listener, ctrl_c).await;
    Ok(())
}
