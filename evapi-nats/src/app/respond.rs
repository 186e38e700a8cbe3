//! A responder over NATS: events taken from the work queue, answered concurrently.

use async_nats::jetstream::AckKind;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{confirm_answer, NatsApp, NatsEvent, Taking, CONFIRMING_MAX, GIVE_BACK_PATIENCE};
use crate::NatsError;
use evapi_client::respond::{Counts, Responder};

/// Answer events from every node with `responder`, as one of the instances sharing
/// the work queue, until `stop` or `count` answers. At most `max_in_flight` events are
/// in hand at once (answered concurrently, each after `responder.delay`); on `stop` the
/// ones still waiting for their answer are given back at once, for another app.
///
/// # Errors
///
/// The stream or consumer cannot be set up.
pub async fn respond(
    nats: async_nats::Client,
    responder: &Responder,
    taking: Taking,
    counts: &Counts,
    count: Option<u64>,
    stop: CancellationToken,
) -> Result<(), NatsError> {
    let mut app =
        NatsApp::take_at_most(nats, taking.ack_wait, taking.max_in_flight, taking.stream).await?;
    let max_in_flight = taking.max_in_flight;
    let result = answer_events(&mut app, responder, max_in_flight, counts, count, &stop).await;
    // What was answered reaches the server before we go.
    let _ = app.flush().await;
    result
}

async fn answer_events(
    app: &mut NatsApp,
    responder: &Responder,
    max_in_flight: usize,
    counts: &Counts,
    count: Option<u64>,
    stop: &CancellationToken,
) -> Result<(), NatsError> {
    let mut answered = 0u64;
    let limit = max_in_flight.clamp(1, CONFIRMING_MAX);
    // Events in hand: waiting for their answer (--delay), then for their bridge's
    // confirmation.
    let mut in_hand = tokio::task::JoinSet::new();
    // Cancelled once this app has stopped pulling: the events still waiting for their
    // answer then go back (before, the server could hand them back to this app).
    let release = CancellationToken::new();
    let result = loop {
        counts.set_in_flight(in_hand.len() as u64);
        while let Some(done) = in_hand.try_join_next() {
            report(done, counts);
        }
        if in_hand.len() >= limit {
            tokio::select! {
                () = stop.cancelled() => break Ok(()),
                done = in_hand.join_next() => if let Some(done) = done { report(done, counts) },
            }
            continue;
        }
        let event = tokio::select! {
            () = stop.cancelled() => break Ok(()),
            event = app.next() => event,
        };
        counts.set_expired(app.expired());
        let Some(event) = event else { break Ok(()) };
        match responder.answer(&event.payload, counts) {
            Some(answer) => {
                answered += 1;
                let (js, delay, release) = (app.js.clone(), responder.delay, release.clone());
                in_hand.spawn(async move {
                    // A slow app (--delay): the answer comes after it, concurrently
                    // with the other events in hand; stopped meanwhile, the event goes
                    // back to the work queue at once instead of after the ack wait.
                    if !delay.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = release.cancelled() => {
                                give_back(&event).await;
                                return (event.node, None);
                            }
                        }
                    }
                    let result = confirm_answer(&js, &event, Bytes::from(answer)).await;
                    (event.node, Some(result))
                });
            }
            None => {
                debug!("not a suspend event, acknowledged without an answer");
                if let Err(e) = app.ack(&event).await {
                    warn!(error = %e, node = %event.node, "cannot acknowledge an event; it will be redelivered");
                }
            }
        }
        if count.is_some_and(|n| answered >= n) {
            break Ok(());
        }
    };
    // Stopped: what was pulled for us and not handed out goes back, and so do the events
    // still waiting for their answer; the answers sent wait for their confirmations (each
    // at most ANSWER_CONFIRM).
    let given = app.give_back_pulled(GIVE_BACK_PATIENCE, limit).await;
    counts.add_given_back(given);
    if given > 0 {
        info!(given, "events pulled and not started given back");
    }
    // Stopped by the caller: what is still waiting for its answer goes back too (with
    // --count reached, those are answered).
    if stop.is_cancelled() {
        release.cancel();
    }
    while let Some(done) = in_hand.join_next().await {
        report(done, counts);
    }
    counts.set_in_flight(0);
    result
}

/// Give `event` back to the work queue (a negative acknowledgement): redelivered to
/// an app at once.
async fn give_back(event: &NatsEvent) {
    if let Some(msg) = &event.msg {
        let _ = msg.ack_with(AckKind::Nak(None)).await;
    }
}

/// What became of an event in hand: its node, and `Some` with the confirmation's result
/// when it was answered (`None`: given back unanswered).
type Handled = (String, Option<Result<(), NatsError>>);

fn report(done: Result<Handled, tokio::task::JoinError>, counts: &Counts) {
    match done {
        Ok((_, Some(Ok(())))) => {
            counts.add_answered(1);
        }
        Ok((node, Some(Err(e)))) => {
            counts.add_answered(1);
            warn!(error = %e, %node, "answer not confirmed; the event will be redelivered");
        }
        Ok((_, None)) => {
            counts.add_given_back(1);
        }
        Err(_) => {}
    }
}
