//! Built-in apps: real evapi clients over TCP that answer, stay silent, disconnect after
//! a number of answers, or send garbage, as the scenario says.
//!
//! A responder with a tag first sends `{"tag": T}`; the simulator's message-received
//! route turns that into `evapi_set_tag` (the registration convention apps use).

use std::sync::atomic::AtomicU64;

use evapi_client::respond::{self, Counts, Responder};
use evapi_client::{Client, ClientConfig, ClientError, SuspendMatcher};
use evapi_proto::IdFields;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::scenario::BuiltinApp;

/// Connect one built-in responder and run it until `stop` or its own end.
///
/// # Errors
///
/// The connection fails.
pub(crate) async fn run(
    spec: BuiltinApp,
    addr: String,
    config: ClientConfig,
    ids: IdFields,
    stop: CancellationToken,
) -> Result<(), ClientError> {
    let mut client = Client::connect(&addr, &config).await?;
    let matcher = SuspendMatcher::with_fields(ids);
    let counts = Counts::default();
    match spec {
        BuiltinApp::Answer {
            code,
            reason,
            delay,
            tag,
        } => {
            register(&mut client, tag.as_deref()).await?;
            let answerer = Responder::with(code, reason, delay, matcher);
            respond::run(client, &answerer, &counts, None, &stop).await?;
        }
        BuiltinApp::Silent { tag } => {
            register(&mut client, tag.as_deref()).await?;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    msg = client.recv() => if msg?.is_none() { break },
                }
            }
        }
        BuiltinApp::Disconnect { after, code } => {
            let answerer = Responder::with(code, None, std::time::Duration::ZERO, matcher);
            let budget = AtomicU64::new(after);
            // Its own token: reaching the budget ends this responder only.
            let own = stop.child_token();
            respond::run(client, &answerer, &counts, Some(&budget), &own).await?;
            debug!(after, "disconnecting as the scenario says");
        }
        BuiltinApp::Garbage => {
            let garbage: [&[u8]; 3] = [
                b"this is not JSON",
                br#"{"tindex":"not a number","tlabel":1,"code":200}"#,
                br#"{"event":"neither ids nor a decision"}"#,
            ];
            let mut n = 0usize;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    msg = client.recv() => {
                        if msg?.is_none() { break }
                        client.send(garbage[n % garbage.len()]).await?;
                        n += 1;
                    }
                }
            }
        }
    }
    Ok(())
}

async fn register(client: &mut Client, tag: Option<&str>) -> Result<(), ClientError> {
    if let Some(tag) = tag {
        client
            .send(serde_json::json!({ "tag": tag }).to_string().as_bytes())
            .await?;
    }
    Ok(())
}

/// Responders that register a tag.
#[must_use]
pub(crate) fn tagged(specs: &[BuiltinApp]) -> usize {
    specs
        .iter()
        .filter(|s| {
            matches!(
                s,
                BuiltinApp::Answer { tag: Some(_), .. } | BuiltinApp::Silent { tag: Some(_) }
            )
        })
        .count()
}
