//! `evapi-sim sip`: the SIP front ([`crate::front`]) behind real SIP over UDP, so sipp
//! can drive it. A thin driver: it owns the UDP socket, the embedded evapi socket and
//! the clock, reads datagrams in batches, and carries out what the core says (events to
//! the apps, tags to set, datagrams to send); every SIP decision is the core's.

use std::net::SocketAddr;

use evapi_server::Config;
use tokio::net::{TcpListener, UdpSocket};
use tracing::warn;

use crate::apps::{self, Embedded, Inbound};
use crate::clock;
pub use crate::front::UasCounters;
use crate::front::{Front, SipSettings};
use crate::metrics::SimMetrics;
use crate::router::RouterConfig;

/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read in one go once the socket is readable, before replies are sent and
/// timers looked at: a burst drains into the cores instead of waiting in the kernel.
const RECV_BATCH: usize = 256;

/// Settings of the SIP front.
#[derive(Debug)]
pub struct UasOptions {
    /// Routing, answers, timers.
    pub router: RouterConfig,
    /// The embedded evapi socket.
    pub server: Config,
    /// The SIP transaction layer.
    pub sip: SipSettings,
    /// Serve Prometheus metrics (the server's and the core's) and the admin API on
    /// this listener; admin requests need this bearer token when one is given.
    pub metrics: Option<(TcpListener, Option<std::sync::Arc<str>>)>,
}

/// Serve SIP on `socket` and the evapi socket on `listener` until `shutdown` resolves;
/// returns the counters.
pub async fn run(
    socket: UdpSocket,
    listener: TcpListener,
    options: UasOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> UasCounters {
    let metrics = SimMetrics::new();
    let mut embedded = Embedded::start(
        listener,
        options.server,
        options.metrics.map(|(l, token)| (l, token, &metrics)),
    );
    let mut front = Front::new(options.router, options.sip, clock::now());
    let served = embedded.serves_http();
    if served {
        front.keep_round_trips();
    }
    let mut publish = tokio::time::interval(crate::metrics::PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let handle = embedded.handle.clone();
    let mut deliver =
        |to: crate::router::Fanout<'_>, event: &[u8]| apps::deliver(&handle, to, event);
    let mut outgoing: Vec<(std::sync::Arc<[u8]>, SocketAddr)> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        let wake = front.poll_timeout();
        tokio::select! {
            () = &mut shutdown => break,
            got = socket.recv_from(&mut buf) => match got {
                Ok((n, peer)) => {
                    front.datagram(clock::now(), &buf[..n], peer, &mut deliver);
                    for _ in 1..RECV_BATCH {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, peer)) => front.datagram(clock::now(), &buf[..n], peer, &mut deliver),
                            Err(e) => {
                                if e.kind() != std::io::ErrorKind::WouldBlock {
                                    warn!(error = %e, "UDP receive failed");
                                }
                                break;
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "UDP receive failed"),
            },
            msg = embedded.inbound.recv() => match msg {
                Some(Inbound::Message(client, msg)) => {
                    if let Some(tag) = front.message(clock::now(), &client, &msg) {
                        apps::set_tag(&embedded.handle, &client, &tag);
                    }
                }
                Some(Inbound::Connected) => {}
                None => break,
            },
            () = evapi_ops::time::sleep_until(wake) => front.handle_timeout(clock::now()),
            _ = publish.tick(), if served => {
                publish_to(&metrics, &front, crate::udp::kernel_drops(&socket));
            }
        }
        send(&socket, &mut front, &mut outgoing).await;
        front.take_round_trips(|rt| metrics.answered(rt));
    }
    // Datagrams that arrived before the shutdown are still handled (an ACK in the
    // socket's buffer counts), nothing after.
    while let Ok((n, peer)) = socket.try_recv_from(&mut buf) {
        front.datagram(clock::now(), &buf[..n], peer, &mut deliver);
    }
    send(&socket, &mut front, &mut outgoing).await;
    front.take_round_trips(|rt| metrics.answered(rt));
    let kernel_drops = crate::udp::kernel_drops(&socket);
    if served {
        publish_to(&metrics, &front, kernel_drops);
    }
    embedded.stop().await;
    front.finish(kernel_drops)
}

/// The front's counters into the metrics served.
fn publish_to(metrics: &SimMetrics, front: &Front, kernel_drops: Option<u64>) {
    let (counters, suspended) = front.routing();
    metrics.publish(counters, suspended);
    metrics.kernel_drops(kernel_drops);
}

/// Send every datagram the front has, in batches (`outgoing`: a buffer reused).
async fn send(
    socket: &UdpSocket,
    front: &mut Front,
    outgoing: &mut Vec<(std::sync::Arc<[u8]>, SocketAddr)>,
) {
    let now = clock::now();
    outgoing.clear();
    while let Some(t) = front.poll_transmit(now) {
        outgoing.push((t.bytes, t.peer));
    }
    crate::udp::send_all(socket, outgoing).await;
    outgoing.clear();
}
