//! The SIP front over real UDP and TCP sockets. Tests that depend on timers run on
//! tokio's paused clock: when every task waits, time jumps to the next timer, so a
//! "nothing more is sent" window costs no real time and cannot be cut short by load.

use std::time::Duration;

use evapi_client::{Client, ClientConfig};
use evapi_sim::router::RouterConfig;
use evapi_sim::scenario::{Action, Answers, DEFAULT_EVENT};
use evapi_sim::template::Template;
use evapi_sim::tm::TmConfig;
use evapi_sim::uas::{self, UasCounters, UasOptions};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

struct Uas {
    sip: std::net::SocketAddr,
    phone: UdpSocket,
    app: Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<UasCounters>,
}

async fn start(fr_inv_timer: Duration) -> Uas {
    start_with(fr_inv_timer, None).await
}

async fn start_with(fr_inv_timer: Duration, reason: Option<&str>) -> Uas {
    start_event(fr_inv_timer, reason, DEFAULT_EVENT).await
}

async fn start_event(fr_inv_timer: Duration, reason: Option<&str>, event: &str) -> Uas {
    start_routed(fr_inv_timer, reason, event, Action::AsyncRelay, None, None).await
}

async fn start_routed(
    fr_inv_timer: Duration,
    reason: Option<&str>,
    event: &str,
    action: Action,
    tag: Option<&str>,
    max: Option<usize>,
) -> Uas {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sip = socket.local_addr().unwrap();
    let evapi = listener.local_addr().unwrap().to_string();
    let answers = Answers::default();
    let options = UasOptions {
        router: RouterConfig {
            action,
            tag: tag.map(String::from),
            relay_code: 200,
            event: Template::parse(event).unwrap(),
            reason: reason.map(|r| Template::parse(r).unwrap()),
            reader: answers.reader(),
            actions: answers.actions,
            tm: TmConfig {
                fr_inv_timer,
                ..TmConfig::default()
            },
            max_transactions: max,
            unicast_policy: evapi_server::UnicastPolicy::First,
            no_app_reply: None,
        },
        server: evapi_server::Config::default(),
        sip: evapi_sim::front::SipSettings {
            final_retransmits: evapi_sim::ist::DEFAULT_FINAL_RETRANSMITS,
            retry_after: None,
            trying_after: Duration::ZERO,
            max_request_bytes: evapi_sim::front::DEFAULT_MAX_REQUEST_BYTES,
        },
        metrics: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(uas::run(socket, listener, options, async {
        let _ = stopped.await;
    }));
    let app = Client::connect(&evapi, &ClientConfig::default())
        .await
        .unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut uas = Uas {
        sip,
        phone,
        app,
        stop,
        task,
    };
    // Ready when the app gets events: a MESSAGE is relayed to every accepted app. The
    // app is accepted just after its connect returns, so the first MESSAGE may reach
    // nobody: ask again until one arrives.
    for attempt in 0..20 {
        let branch = format!("z9hG4bK-ready{attempt}");
        let hello = request("MESSAGE", &branch, "ready", "MESSAGE", &uas.phone);
        uas.send(&hello).await;
        assert_eq!(status(&uas.recv().await), "SIP/2.0 200 OK");
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(250), uas.app.recv()).await {
            let event = event.unwrap().unwrap();
            assert!(!event.is_empty(), "the readiness event");
            return uas;
        }
    }
    panic!("the app never received an event");
}

fn request(
    method: &str,
    branch: &str,
    call_id: &str,
    cseq_method: &str,
    phone: &UdpSocket,
) -> String {
    let me = phone.local_addr().unwrap();
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch}\r\n\
         From: <sip:alice@example.org>;tag=a-{call_id}\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {cseq_method}\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

impl Uas {
    async fn send(&self, text: &str) {
        self.phone.send_to(text.as_bytes(), self.sip).await.unwrap();
    }

    async fn recv(&self) -> String {
        let mut buf = vec![0u8; 65535];
        let (n, _) = tokio::time::timeout(WAIT, self.phone.recv_from(&mut buf))
            .await
            .expect("a SIP response in time")
            .unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    async fn nothing_for(&self, d: Duration) {
        let mut buf = vec![0u8; 65535];
        if let Ok(got) = tokio::time::timeout(d, self.phone.recv_from(&mut buf)).await {
            let (n, _) = got.unwrap();
            panic!(
                "unexpected datagram: {}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }

    async fn event(&mut self) -> serde_json::Value {
        let msg = tokio::time::timeout(WAIT, self.app.recv())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        serde_json::from_slice(&msg).unwrap()
    }

    async fn answer(&mut self, event: &serde_json::Value, code: u16) {
        let answer = serde_json::json!({
            "tindex": event["tindex"], "tlabel": event["tlabel"], "code": code,
        });
        self.app.send(answer.to_string().as_bytes()).await.unwrap();
    }

    async fn answer_raw(&mut self, answer: &str) {
        self.app.send(answer.as_bytes()).await.unwrap();
    }

    async fn finish(self) -> UasCounters {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

/// `evapi-client respond --code 486` on `app`, on its own task, until the token fires.
fn respond_486(app: Client) -> (tokio_util::sync::CancellationToken, JoinHandle<()>) {
    let stop = tokio_util::sync::CancellationToken::new();
    let stop2 = stop.clone();
    let task = tokio::spawn(async move {
        let counts = evapi_client::respond::Counts::default();
        let _ = evapi_client::respond::run(
            app,
            &evapi_client::respond::Responder::new(486),
            &counts,
            None,
            &stop2,
        )
        .await;
    });
    (stop, task)
}

fn status(resp: &str) -> &str {
    resp.lines().next().unwrap()
}

#[tokio::test(start_paused = true)]
async fn invite_answered_by_the_app_with_retransmissions_and_ack() {
    let mut uas = start(Duration::from_secs(30)).await;
    let invite = request("INVITE", "z9hG4bK-1", "call-1", "INVITE", &uas.phone);
    uas.send(&invite).await;
    let trying = uas.recv().await;
    assert_eq!(status(&trying), "SIP/2.0 100 Trying");
    assert!(
        trying.contains("\r\nTo: <sip:bob@example.com>\r\n"),
        "no To tag on 100"
    );
    let event = uas.event().await;
    assert_eq!(event["ru"], "sip:bob@example.com");
    assert_eq!(event["ci"], "call-1");

    // A retransmitted INVITE gets the last response again, and no second event.
    uas.send(&invite).await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");

    uas.answer(&event, 486).await;
    let busy = uas.recv().await;
    assert_eq!(status(&busy), "SIP/2.0 486 Busy Here");
    assert!(
        busy.contains("\r\nTo: <sip:bob@example.com>;tag="),
        "{busy}"
    );
    assert!(busy.contains("\r\nCall-ID: call-1\r\n") && busy.contains("\r\nCSeq: 1 INVITE\r\n"));
    assert!(busy.contains(&format!(
        "Via: SIP/2.0/UDP {};branch=z9hG4bK-1",
        uas.phone.local_addr().unwrap()
    )));

    uas.send(&invite).await;
    assert_eq!(
        status(&uas.recv().await),
        "SIP/2.0 486 Busy Here",
        "retransmission"
    );
    // Without an ACK the final response is retransmitted (Timer G, T1 = 500 ms).
    assert_eq!(
        status(&uas.recv().await),
        "SIP/2.0 486 Busy Here",
        "timer G"
    );
    uas.send(&request("ACK", "z9hG4bK-1", "call-1", "ACK", &uas.phone))
        .await;
    // Past Timer I and the next Timer G: nothing more after the ACK.
    uas.nothing_for(Duration::from_secs(40)).await;

    // A second answer for the same transaction is refused: no second final response.
    uas.answer(&event, 200).await;
    uas.nothing_for(Duration::from_secs(40)).await;
    // The app's socket got exactly one event: the retransmitted INVITEs made none.
    assert!(
        tokio::time::timeout(Duration::from_secs(40), uas.app.recv())
            .await
            .is_err(),
        "no second event"
    );
    let counters = uas.finish().await;
    assert_eq!(counters.routing.finals.get(&486), Some(&1));
    assert_eq!(counters.sip.retransmissions, 2);
    assert_eq!(counters.sip.final_retransmits, 1);
    assert_eq!(counters.routing.refused_total(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancel_gets_200_and_the_invite_487_then_the_late_answer_is_refused() {
    let mut uas = start(Duration::from_secs(30)).await;
    uas.send(&request(
        "INVITE",
        "z9hG4bK-2",
        "call-2",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let event = uas.event().await;
    uas.send(&request(
        "CANCEL",
        "z9hG4bK-2",
        "call-2",
        "CANCEL",
        &uas.phone,
    ))
    .await;
    let mut got = [uas.recv().await, uas.recv().await];
    got.sort();
    assert_eq!(status(&got[0]), "SIP/2.0 200 OK");
    assert!(got[0].contains("CSeq: 1 CANCEL"));
    assert_eq!(status(&got[1]), "SIP/2.0 487 Request Terminated");
    assert!(got[1].contains("CSeq: 1 INVITE"));
    uas.send(&request("ACK", "z9hG4bK-2", "call-2", "ACK", &uas.phone))
        .await;
    // The app's answer comes too late: refused, nothing more is sent.
    uas.answer(&event, 200).await;
    uas.nothing_for(Duration::from_secs(40)).await;
    // A CANCEL for nothing: 481.
    uas.send(&request(
        "CANCEL",
        "z9hG4bK-none",
        "call-x",
        "CANCEL",
        &uas.phone,
    ))
    .await;
    assert_eq!(
        status(&uas.recv().await),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );
    let counters = uas.finish().await;
    assert_eq!(counters.routing.finals.get(&487), Some(&1));
    assert_eq!(counters.routing.refused.get("already-replied"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn unanswered_invites_time_out_and_other_methods_are_answered() {
    let mut uas = start(Duration::from_millis(300)).await;
    uas.send(&request(
        "INVITE",
        "z9hG4bK-3",
        "call-3",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let _ = uas.event().await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 408 Request Timeout");
    uas.send(&request("ACK", "z9hG4bK-3", "call-3", "ACK", &uas.phone))
        .await;

    uas.send(&request(
        "OPTIONS",
        "z9hG4bK-4",
        "call-4",
        "OPTIONS",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 200 OK");
    uas.send(&request(
        "MESSAGE",
        "z9hG4bK-5",
        "call-5",
        "MESSAGE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 200 OK");
    assert_eq!(uas.event().await["rm"], "MESSAGE");
    uas.send(&request("BYE", "z9hG4bK-b", "call-b", "BYE", &uas.phone))
        .await;
    let bye = uas.recv().await;
    assert_eq!(status(&bye), "SIP/2.0 200 OK");
    assert!(bye.contains("CSeq: 1 BYE"), "{bye}");
    uas.send(&request(
        "SUBSCRIBE",
        "z9hG4bK-6",
        "call-6",
        "SUBSCRIBE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 501 Not Implemented");

    // Garbage is dropped; a request with a readable head but a bad CSeq gets 400.
    uas.send("this is not SIP").await;
    uas.send(&request(
        "OPTIONS",
        "z9hG4bK-7",
        "call-7",
        "BYE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 400 Bad Request");
    let counters = uas.finish().await;
    assert_eq!(counters.routing.timeouts, 1);
    assert_eq!(counters.routing.finals.get(&408), Some(&1));
    assert_eq!(counters.malformed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_completes_every_call_against_the_uas() {
    let uas = start(Duration::from_secs(30)).await;
    let sip = uas.sip;
    // The app answers every suspend with 486, on its own task.
    let app = uas.app;
    let (stop, responder) = respond_486(app);
    let report = evapi_sim::load::run(&evapi_sim::load::LoadOptions {
        target: sip,
        rate: 1000,
        calls: 300,
        expect: evapi_sim::load::ExpectedCodes::Codes(vec![486]),
        ruri: None,
        timeout: Duration::from_secs(10),
    })
    .await
    .unwrap();
    assert_eq!((report.ok, report.failed), (300, 0), "{report:?}");
    assert!(report.latency.p50_us > 0 && report.latency.p50_us <= report.latency.max_us);
    stop.cancel();
    let _ = responder.await;
    let _ = uas.stop.send(());
    let counters = uas.task.await.unwrap();
    assert_eq!(counters.routing.finals.get(&486), Some(&300));
    assert_eq!(
        counters.requests.get("ACK"),
        Some(&300),
        "every final acknowledged"
    );
    assert_eq!(counters.sip.unacked, 0);
}

#[tokio::test(start_paused = true)]
async fn the_reason_template_reads_evapi_variables_on_the_way_back() {
    let mut uas = start_with(
        Duration::from_secs(30),
        Some("app $evapi(conidx) at $evapi(srcaddr) for $rU ($T(id_index))"),
    )
    .await;
    uas.send(&request(
        "INVITE",
        "z9hG4bK-r",
        "call-r",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let event = uas.event().await;
    uas.answer(&event, 480).await;
    let tindex = event["tindex"].as_str().unwrap().to_owned();
    assert_eq!(
        status(&uas.recv().await),
        format!("SIP/2.0 480 app 0 at 127.0.0.1 for bob ({tindex})")
    );
    let _ = uas.finish().await;
}

/// The evapi module documentation's async example (Example 1.6), verbatim: the ids are
/// strings under `data.index` / `data.label`. The client's responder answers in the
/// event's own shape, and the simulator must understand it.
const MODULE_DOC_EVENT: &str = "{ \"event\": \"suspend\",\n \"data\": { \"index\": \"$T(id_index)\", \"label\": \"$T(id_label)\" }\n}";

#[tokio::test(start_paused = true)]
async fn the_module_documentation_example_is_answered_by_the_client_responder() {
    let uas = start_event(Duration::from_secs(30), None, MODULE_DOC_EVENT).await;
    let Uas {
        sip,
        phone,
        app,
        stop: stop_uas,
        task,
    } = uas;
    let (stop, responder) = respond_486(app);
    for n in 0..5 {
        let branch = format!("z9hG4bK-doc{n}");
        let call = format!("doc-{n}");
        let text = request("INVITE", &branch, &call, "INVITE", &phone);
        phone.send_to(text.as_bytes(), sip).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let mut statuses = Vec::new();
        while statuses.len() < 2 {
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
                .await
                .expect("responses before the 5 s timeout")
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            statuses.push(status(&text).to_owned());
        }
        assert_eq!(
            statuses,
            ["SIP/2.0 100 Trying", "SIP/2.0 486 Busy Here"],
            "call {n}"
        );
        let ack = request("ACK", &branch, &call, "ACK", &phone);
        phone.send_to(ack.as_bytes(), sip).await.unwrap();
    }
    stop.cancel();
    let _ = responder.await;
    let _ = stop_uas.send(());
    let counters = task.await.unwrap();
    assert_eq!(counters.routing.finals.get(&486), Some(&5));
    assert_eq!(counters.routing.invalid_answers, 0);
    assert_eq!(counters.routing.timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn an_app_cannot_write_sip_headers_or_send_codes_outside_200_to_699() {
    let mut uas = start(Duration::from_secs(3)).await;
    uas.send(&request(
        "INVITE",
        "z9hG4bK-i",
        "call-i",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let event = uas.event().await;
    let ids = format!(
        r#""tindex":{},"tlabel":{}"#,
        event["tindex"], event["tlabel"]
    );
    for bad in [
        format!(
            r#"{{{ids},"code":486,"reason":"Busy\r\nX-Injected: evil\r\nContact: <sip:attacker@evil>"}}"#
        ),
        format!(r#"{{{ids},"code":486,"reason":"Busy\nX-Injected: evil"}}"#),
        format!(r#"{{{ids},"code":99}}"#),
        format!(r#"{{{ids},"code":-486}}"#),
        format!(r#"{{{ids},"code":70000}}"#),
        format!(r#"{{{ids},"code":"486; X-Evil: 1"}}"#),
    ] {
        uas.answer_raw(&bad).await;
    }
    // None of them is a reply: the transaction waits for its timer and ends 408.
    let timeout = uas.recv().await;
    assert_eq!(status(&timeout), "SIP/2.0 408 Request Timeout");
    assert!(!timeout.contains("X-Injected") && !timeout.contains("attacker"));
    let counters = uas.finish().await;
    assert_eq!(counters.routing.invalid_answers, 6);
    assert_eq!(counters.routing.finals.get(&486), None);
}

/// Regression (issue 24): a caller whose Call-ID carries `","tindex":"N","tlabel":"M`
/// aimed the app's answer at another call. With the default event template the
/// Call-ID stays one string, and the app's answer goes to the caller's own call.
#[tokio::test(start_paused = true)]
async fn a_call_id_cannot_aim_the_apps_answer_at_another_call() {
    let mut uas = start(Duration::from_secs(30)).await;
    uas.send(&request(
        "INVITE",
        "z9hG4bK-victim",
        "victim",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let victim = uas.event().await;
    let (vi, vl) = (
        victim["tindex"].as_str().unwrap().to_owned(),
        victim["tlabel"].as_str().unwrap().to_owned(),
    );
    let evil = format!(r#"inj","tindex":"{vi}","tlabel":"{vl}","x":"y"#);
    uas.send(&request(
        "INVITE",
        "z9hG4bK-evil",
        &evil,
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let event = uas.event().await;
    assert_eq!(event["ci"], evil.as_str(), "the Call-ID, unchanged");
    assert_ne!(
        (event["tindex"].as_str(), event["tlabel"].as_str()),
        (Some(vi.as_str()), Some(vl.as_str())),
        "the event names the caller's own transaction"
    );
    assert!(event.get("x").is_none());
    // The app answers the event it read: the caller's call ends 486, the victim's waits.
    uas.answer(&event, 486).await;
    let reply = uas.recv().await;
    assert_eq!(status(&reply), "SIP/2.0 486 Busy Here");
    assert!(reply.contains("z9hG4bK-evil"), "{reply}");
    uas.send(&request("ACK", "z9hG4bK-evil", &evil, "ACK", &uas.phone))
        .await;
    uas.nothing_for(Duration::from_secs(5)).await;
    uas.answer(&victim, 200).await;
    let reply = uas.recv().await;
    assert_eq!(status(&reply), "SIP/2.0 200 OK");
    assert!(reply.contains("z9hG4bK-victim"), "{reply}");
    let counters = uas.finish().await;
    assert_eq!(counters.routing.refused_total(), 0);
}

/// `--unicast TAG`: events go to the app that registered the tag (`{"tag": T}`); before
/// any app has it, the event reaches nobody and the INVITE waits for its timer.
#[tokio::test(start_paused = true)]
async fn unicast_reaches_the_tagged_app_only_once_it_registered() {
    let mut uas = start_routed(
        Duration::from_secs(3),
        None,
        DEFAULT_EVENT,
        Action::AsyncUnicast,
        Some("routing"),
        None,
    )
    .await;
    uas.send(&request(
        "INVITE",
        "z9hG4bK-u1",
        "call-u1",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    assert_eq!(status(&uas.recv().await), "SIP/2.0 408 Request Timeout");
    uas.answer_raw(r#"{"tag":"routing"}"#).await;
    // A MESSAGE (relayed to all) shows the registration went through first.
    uas.send(&request(
        "MESSAGE",
        "z9hG4bK-u0",
        "call-u0",
        "MESSAGE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 200 OK");
    assert_eq!(uas.event().await["ci"], "call-u0");
    uas.send(&request(
        "INVITE",
        "z9hG4bK-u2",
        "call-u2",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let event = uas.event().await;
    assert_eq!(event["ci"], "call-u2");
    uas.answer(&event, 486).await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 486 Busy Here");
    let counters = uas.finish().await;
    assert_eq!(counters.routing.undelivered, 1);
    assert_eq!(counters.routing.registrations, 1);
}

/// --max-transactions: past the cap a new INVITE gets 503 and no transaction; when one
/// ends there is room again.
#[tokio::test(start_paused = true)]
async fn invites_past_max_transactions_get_503() {
    let mut uas = start_routed(
        Duration::from_secs(30),
        None,
        DEFAULT_EVENT,
        Action::AsyncRelay,
        None,
        Some(1),
    )
    .await;
    uas.send(&request(
        "INVITE",
        "z9hG4bK-m1",
        "call-m1",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let first = uas.event().await;
    uas.send(&request(
        "INVITE",
        "z9hG4bK-m2",
        "call-m2",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 503 Service Unavailable");
    uas.answer(&first, 486).await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 486 Busy Here");
    uas.send(&request(
        "INVITE",
        "z9hG4bK-m3",
        "call-m3",
        "INVITE",
        &uas.phone,
    ))
    .await;
    assert_eq!(status(&uas.recv().await), "SIP/2.0 100 Trying");
    let counters = uas.finish().await;
    assert_eq!(counters.routing.busy, 1);
}

/// --no-app-reply 503 --retry-after 5: with no app connected an INVITE is answered at
/// once (not after fr_inv_timer), with Retry-After, and counted as "no app".
#[tokio::test(start_paused = true)]
async fn with_no_app_an_invite_is_answered_at_once() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sip = socket.local_addr().unwrap();
    let answers = Answers::default();
    let options = UasOptions {
        router: RouterConfig {
            action: Action::AsyncRelay,
            tag: None,
            relay_code: 200,
            event: Template::parse(DEFAULT_EVENT).unwrap(),
            reason: None,
            reader: answers.reader(),
            actions: answers.actions,
            tm: TmConfig {
                fr_inv_timer: Duration::from_secs(120),
                ..TmConfig::default()
            },
            max_transactions: None,
            unicast_policy: evapi_server::UnicastPolicy::First,
            no_app_reply: Some(503),
        },
        server: evapi_server::Config::default(),
        sip: evapi_sim::front::SipSettings {
            final_retransmits: evapi_sim::ist::DEFAULT_FINAL_RETRANSMITS,
            retry_after: Some(5),
            trying_after: Duration::ZERO,
            max_request_bytes: evapi_sim::front::DEFAULT_MAX_REQUEST_BYTES,
        },
        metrics: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(uas::run(socket, listener, options, async {
        let _ = stopped.await;
    }));
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let invite = request("INVITE", "z9hG4bK-na1", "call-na1", "INVITE", &phone);
    phone.send_to(invite.as_bytes(), sip).await.unwrap();
    let started = tokio::time::Instant::now();
    let recv = || async {
        let mut buf = vec![0u8; 65535];
        let (n, _) = tokio::time::timeout(WAIT, phone.recv_from(&mut buf))
            .await
            .expect("a SIP response in time")
            .unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    assert_eq!(status(&recv().await), "SIP/2.0 100 Trying");
    let final_reply = recv().await;
    assert_eq!(status(&final_reply), "SIP/2.0 503 Service Unavailable");
    assert!(
        final_reply.contains("\r\nRetry-After: 5\r\n"),
        "{final_reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not held until the timer"
    );
    let _ = stop.send(());
    let counters = task.await.unwrap();
    assert_eq!(counters.routing.no_app, 1);
    assert_eq!(counters.routing.timeouts, 0);
    assert_eq!(counters.routing.finals.get(&503), Some(&1));
}
