//! A model of Kamailio's transaction module (tm), as much as async relay needs: a
//! sans-I/O transaction table.
//!
//! Each transaction has an id `(index, label)`: `index` is the hash slot of the
//! transaction key (Call-ID and CSeq number), `label` a per-slot counter, as
//! `$T(id_index)` / `$T(id_label)` in Kamailio. A transaction is created, suspended
//! (`t_suspend`, which `evapi_async_relay` does), and ends with exactly one final reply:
//! the app's decision when it is resumed (`t_continue`), or the timeout code when its
//! final-response timer fires first. A continue that cannot be applied is refused with
//! the precise reason and changes nothing.
//!
//! No clocks, no sockets: every call takes `now`; [`Table::poll_timeout`] says when the
//! table next needs [`Table::handle_timeout`]. Timers live in one FIFO per timer kind
//! (every transaction of a kind has the same duration, so deadlines arrive in order),
//! which makes arming, cancelling and expiring O(1).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use evapi_proto::TransactionId;

/// Kamailio's default hash table size (`TABLE_ENTRIES`, 2^16 slots).
pub const DEFAULT_HASH_SIZE: u32 = 1 << 16;
/// Default `fr_timer`: final response timeout for non-INVITE transactions.
pub const DEFAULT_FR_TIMER: Duration = Duration::from_secs(5);
/// Default `fr_inv_timer`: final response timeout for INVITE transactions.
pub const DEFAULT_FR_INV_TIMER: Duration = Duration::from_secs(120);
/// Default code of the reply a timed-out transaction ends with.
pub const DEFAULT_TIMEOUT_CODE: u16 = 408;
/// How long an ended transaction is remembered, so a late or second continue gets the
/// precise reason (Kamailio keeps a transaction in its wait timer for 5 s).
pub const DEFAULT_WAIT_TIME: Duration = Duration::from_secs(5);

/// Table settings.
#[derive(Debug, Clone)]
pub struct TmConfig {
    /// Hash slots (the range of `index`).
    pub hash_size: u32,
    /// Final response timeout, non-INVITE.
    pub fr_timer: Duration,
    /// Final response timeout, INVITE.
    pub fr_inv_timer: Duration,
    /// Code of the final reply when the timer fires.
    pub timeout_code: u16,
    /// How long ended transactions are remembered.
    pub wait_time: Duration,
    /// Where each slot's labels start: 0, every slot at 0 (predictable, for tests);
    /// otherwise a slot's first label is drawn from this seed, as Kamailio draws them
    /// at random when it starts, so that a restarted node does not hand the ids of its
    /// previous life to new calls (an answer held for the old one would resume them).
    pub label_seed: u64,
}

impl Default for TmConfig {
    fn default() -> Self {
        Self {
            hash_size: DEFAULT_HASH_SIZE,
            fr_timer: DEFAULT_FR_TIMER,
            fr_inv_timer: DEFAULT_FR_INV_TIMER,
            timeout_code: DEFAULT_TIMEOUT_CODE,
            wait_time: DEFAULT_WAIT_TIME,
            label_seed: 0,
        }
    }
}

/// The timers a transaction can have; each kind has one duration, hence one FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Final response timer of a non-INVITE transaction (`fr_timer`).
    Fr,
    /// Final response timer of an INVITE transaction (`fr_inv_timer`).
    FrInv,
    /// How long an ended transaction is kept to answer late continues precisely.
    Wait,
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, not suspended yet.
    Active,
    /// Suspended, waiting for a continue or its timer.
    Suspended,
    /// Ended with the app's reply.
    Resumed {
        /// The final code.
        code: u16,
    },
    /// Ended by its final response timer.
    TimedOut {
        /// The final code (the timeout code).
        code: u16,
    },
    /// Ended some other way (CANCEL, a local reply).
    Replied {
        /// The final code.
        code: u16,
    },
}

impl State {
    /// Whether the transaction has its final reply.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Resumed { .. } | State::TimedOut { .. } | State::Replied { .. }
        )
    }
}

/// Why a continue or reply was refused. Nothing changed in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The index is outside the table.
    #[error("no transaction {0}: index out of range")]
    IndexOutOfRange(TransactionId),
    /// Nothing lives in that slot with that label (never existed, or long gone).
    #[error("no transaction {0}")]
    Unknown(TransactionId),
    /// The slot holds transactions, but none with this label.
    #[error("no transaction {0}: the label does not match any transaction in slot {slot}", slot = .0.index)]
    LabelMismatch(TransactionId),
    /// It is not suspended (continue before suspend).
    #[error("transaction {0} is not suspended")]
    NotSuspended(TransactionId),
    /// It was resumed already: a transaction resumes once.
    #[error("transaction {0} was already resumed")]
    AlreadyResumed(TransactionId),
    /// Its timer fired first: the continue is late.
    #[error("transaction {0} already timed out: continue is late")]
    TimedOut(TransactionId),
    /// It already has its final reply from elsewhere (CANCEL, local reply).
    #[error("transaction {0} already has a final reply")]
    AlreadyReplied(TransactionId),
}

impl Refusal {
    /// A short kebab-case name for counting, e.g. in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Refusal::IndexOutOfRange(_) => "index-out-of-range",
            Refusal::Unknown(_) => "unknown",
            Refusal::LabelMismatch(_) => "label-mismatch",
            Refusal::NotSuspended(_) => "not-suspended",
            Refusal::AlreadyResumed(_) => "already-resumed",
            Refusal::TimedOut(_) => "late",
            Refusal::AlreadyReplied(_) => "already-replied",
        }
    }
}

/// A transaction that just ended on its timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired<T> {
    /// Which one.
    pub id: TransactionId,
    /// The code it ended with (the timeout code).
    pub code: u16,
    /// When it was created.
    pub created: Instant,
    /// The caller's data, by reference in the table until the wait timer removes it.
    pub data: T,
}

#[derive(Debug)]
struct Tx<T> {
    state: State,
    invite: bool,
    created: Instant,
    /// Bumped whenever a timer is armed, so stale FIFO entries are skipped.
    generation: u32,
    data: T,
}

#[derive(Debug, Clone, Copy)]
struct TimerEntry {
    due: Instant,
    id: TransactionId,
    generation: u32,
}

/// Counters since the table was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Transactions created.
    pub created: u64,
    /// Transactions suspended.
    pub suspended: u64,
    /// Resumed by a continue.
    pub resumed: u64,
    /// Ended by their timer.
    pub timed_out: u64,
    /// Ended by a local reply.
    pub replied: u64,
    /// Continues refused.
    pub refused: u64,
}

/// The transaction table. `T` is the caller's per-transaction data.
#[derive(Debug)]
pub struct Table<T> {
    config: TmConfig,
    txs: HashMap<TransactionId, Tx<T>>,
    /// Next label per slot.
    next_label: Vec<u32>,
    /// Live (remembered) transactions per slot, to tell "label mismatch" from "unknown".
    per_slot: Vec<u32>,
    fr: VecDeque<TimerEntry>,
    fr_inv: VecDeque<TimerEntry>,
    wait: VecDeque<TimerEntry>,
    counters: Counters,
    trim: crate::trim::Trim,
}

impl<T> Table<T> {
    /// An empty table.
    #[must_use]
    pub fn new(config: TmConfig) -> Self {
        let slots = config.hash_size.max(1) as usize;
        let next_label = match config.label_seed {
            0 => vec![0; slots],
            seed => {
                let mut rng = fastrand::Rng::with_seed(seed);
                (0..slots).map(|_| rng.u32(..)).collect()
            }
        };
        Self {
            config,
            txs: HashMap::new(),
            next_label,
            per_slot: vec![0; slots],
            fr: VecDeque::new(),
            fr_inv: VecDeque::new(),
            wait: VecDeque::new(),
            counters: Counters::default(),
            trim: crate::trim::Trim::default(),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &TmConfig {
        &self.config
    }

    /// Counters so far.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Transactions in the table (live or remembered in their wait time).
    #[must_use]
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Create a transaction for `key` (the Call-ID and CSeq number, as tm hashes them).
    pub fn create(&mut self, key: &[u8], invite: bool, data: T, now: Instant) -> TransactionId {
        let index = slot_of(key, self.config.hash_size);
        let label = self.next_label[index as usize];
        self.next_label[index as usize] = label.wrapping_add(1);
        let id = TransactionId { index, label };
        self.per_slot[index as usize] += 1;
        self.txs.insert(
            id,
            Tx {
                state: State::Active,
                invite,
                created: now,
                generation: 0,
                data,
            },
        );
        self.counters.created += 1;
        id
    }

    /// `t_suspend`: park the transaction and arm its final response timer.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] when it does not exist or already ended.
    pub fn suspend(&mut self, id: TransactionId, now: Instant) -> Result<(), Refusal> {
        let tx = self.lookup_mut(id)?;
        if tx.state.is_final() {
            return Err(ended(id, tx.state));
        }
        tx.state = State::Suspended;
        tx.generation = tx.generation.wrapping_add(1);
        let (generation, invite) = (tx.generation, tx.invite);
        let (queue, after) = if invite {
            (&mut self.fr_inv, self.config.fr_inv_timer)
        } else {
            (&mut self.fr, self.config.fr_timer)
        };
        queue.push_back(TimerEntry {
            due: now + after,
            id,
            generation,
        });
        self.counters.suspended += 1;
        Ok(())
    }

    /// `t_continue`: resume a suspended transaction once, ending it with `code`.
    /// Returns its data and when it was created.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] saying exactly why; the table is unchanged then.
    pub fn resume(
        &mut self,
        id: TransactionId,
        code: u16,
        now: Instant,
    ) -> Result<(&T, Instant), Refusal> {
        let due = now + self.config.wait_time;
        let found = find_mut(&mut self.txs, &self.per_slot, id).and_then(|tx| match tx.state {
            State::Suspended => Ok(tx),
            State::Active => Err(Refusal::NotSuspended(id)),
            other => Err(ended(id, other)),
        });
        match found {
            Ok(tx) => {
                end(tx, id, State::Resumed { code }, due, &mut self.wait);
                self.counters.resumed += 1;
                Ok((&tx.data, tx.created))
            }
            Err(refusal) => {
                self.counters.refused += 1;
                Err(refusal)
            }
        }
    }

    /// End a transaction with a local final reply (e.g. 487 after CANCEL).
    ///
    /// # Errors
    ///
    /// A [`Refusal`] when it does not exist or already has its final reply.
    pub fn reply(&mut self, id: TransactionId, code: u16, now: Instant) -> Result<&T, Refusal> {
        let due = now + self.config.wait_time;
        let tx = find_mut(&mut self.txs, &self.per_slot, id)?;
        if tx.state.is_final() {
            return Err(ended(id, tx.state));
        }
        end(tx, id, State::Replied { code }, due, &mut self.wait);
        self.counters.replied += 1;
        Ok(&tx.data)
    }

    /// The state of a transaction still in the table.
    #[must_use]
    pub fn state(&self, id: TransactionId) -> Option<State> {
        self.txs.get(&id).map(|tx| tx.state)
    }

    /// The caller's data of a transaction still in the table.
    #[must_use]
    pub fn data(&self, id: TransactionId) -> Option<&T> {
        self.txs.get(&id).map(|tx| &tx.data)
    }

    /// When the table next needs [`handle_timeout`](Self::handle_timeout), if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [&self.fr, &self.fr_inv, &self.wait]
            .into_iter()
            .filter_map(|q| q.front().map(|e| e.due))
            .min()
    }

    /// Fire every timer due at `now`: suspended transactions whose final response timer
    /// ran out end with the timeout code and are appended to `expired`; ended ones whose
    /// wait time is over are forgotten.
    pub fn handle_timeout(&mut self, now: Instant, expired: &mut Vec<Expired<T>>)
    where
        T: Clone,
    {
        if self.trim.due(now) {
            crate::trim::map(&mut self.txs);
            for q in [&mut self.fr, &mut self.fr_inv, &mut self.wait] {
                crate::trim::queue(q);
            }
        }
        let code = self.config.timeout_code;
        let due = now + self.config.wait_time;
        for kind in [Timer::Fr, Timer::FrInv] {
            while let Some(entry) = self.pop_due(kind, now) {
                let Some(tx) = self.txs.get_mut(&entry.id) else {
                    continue;
                };
                if tx.generation != entry.generation || tx.state != State::Suspended {
                    continue;
                }
                end(tx, entry.id, State::TimedOut { code }, due, &mut self.wait);
                self.counters.timed_out += 1;
                expired.push(Expired {
                    id: entry.id,
                    code,
                    created: tx.created,
                    data: tx.data.clone(),
                });
            }
        }
        while let Some(entry) = self.pop_due(Timer::Wait, now) {
            if let Entry::Occupied(tx) = self.txs.entry(entry.id) {
                if tx.get().generation == entry.generation {
                    tx.remove();
                    self.per_slot[entry.id.index as usize] -= 1;
                }
            }
        }
    }

    fn pop_due(&mut self, kind: Timer, now: Instant) -> Option<TimerEntry> {
        let queue = match kind {
            Timer::Fr => &mut self.fr,
            Timer::FrInv => &mut self.fr_inv,
            Timer::Wait => &mut self.wait,
        };
        if queue.front().is_some_and(|e| e.due <= now) {
            queue.pop_front()
        } else {
            None
        }
    }

    fn lookup_mut(&mut self, id: TransactionId) -> Result<&mut Tx<T>, Refusal> {
        find_mut(&mut self.txs, &self.per_slot, id)
    }
}

/// The live transaction `id`, or why there is none: no slot with that index, a slot
/// that holds other transactions (a label mismatch), or nothing at all. A free function
/// over the table's fields so callers can keep using the other fields meanwhile.
fn find_mut<'t, T>(
    txs: &'t mut HashMap<TransactionId, Tx<T>>,
    per_slot: &[u32],
    id: TransactionId,
) -> Result<&'t mut Tx<T>, Refusal> {
    match per_slot.get(id.index as usize) {
        None => Err(Refusal::IndexOutOfRange(id)),
        Some(&live) => txs.get_mut(&id).ok_or(if live > 0 {
            Refusal::LabelMismatch(id)
        } else {
            Refusal::Unknown(id)
        }),
    }
}

/// Give a transaction its final state and start its wait time (due at `due`).
fn end<T>(
    tx: &mut Tx<T>,
    id: TransactionId,
    state: State,
    due: Instant,
    wait: &mut VecDeque<TimerEntry>,
) {
    tx.state = state;
    tx.generation = tx.generation.wrapping_add(1);
    wait.push_back(TimerEntry {
        due,
        id,
        generation: tx.generation,
    });
}

fn ended(id: TransactionId, state: State) -> Refusal {
    match state {
        State::Resumed { .. } => Refusal::AlreadyResumed(id),
        State::TimedOut { .. } => Refusal::TimedOut(id),
        _ => Refusal::AlreadyReplied(id),
    }
}

/// The hash slot of a transaction key (FNV-1a; Kamailio uses its own hash, the point
/// here is a stable spread over the slots).
#[must_use]
pub fn slot_of(key: &[u8], hash_size: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % hash_size.max(1)
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timer::Fr => "fr_timer",
            Timer::FrInv => "fr_inv_timer",
            Timer::Wait => "wait_timer",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_start_where_the_seed_says() {
        let seeded = |seed| {
            Table::<u32>::new(TmConfig {
                label_seed: seed,
                ..TmConfig::default()
            })
            .next_label
        };
        assert!(seeded(0).iter().all(|l| *l == 0), "predictable for tests");
        assert_eq!(seeded(7), seeded(7));
        assert_ne!(seeded(7), seeded(8), "another life, other labels");
    }

    fn table() -> (Table<u32>, Instant) {
        let config = TmConfig {
            hash_size: 16,
            fr_timer: Duration::from_secs(5),
            fr_inv_timer: Duration::from_secs(120),
            ..TmConfig::default()
        };
        (Table::new(config), Instant::now())
    }

    #[test]
    fn ids_are_slot_and_per_slot_label() {
        let (mut t, now) = table();
        let a = t.create(b"call-a 1", true, 1, now);
        let b = t.create(b"call-a 1", true, 2, now);
        assert_eq!(a.index, b.index, "same key, same slot");
        assert_eq!((a.label, b.label), (0, 1), "labels count per slot");
        assert!(a.index < 16);
    }

    #[test]
    fn a_suspended_transaction_resumes_exactly_once() {
        let (mut t, now) = table();
        let id = t.create(b"k", true, 7, now);
        t.suspend(id, now).unwrap();
        let (data, created) = t.resume(id, 486, now).unwrap();
        assert_eq!((*data, created), (7, now));
        assert_eq!(t.state(id), Some(State::Resumed { code: 486 }));
        assert_eq!(t.resume(id, 200, now), Err(Refusal::AlreadyResumed(id)));
        assert_eq!(t.state(id), Some(State::Resumed { code: 486 }), "unchanged");
        assert_eq!(t.counters().refused, 1);
    }

    #[test]
    fn continues_that_cannot_apply_say_why_and_change_nothing() {
        let (mut t, now) = table();
        let id = t.create(b"k", false, 0, now);
        assert_eq!(t.resume(id, 200, now), Err(Refusal::NotSuspended(id)));
        t.suspend(id, now).unwrap();
        let wrong_label = TransactionId {
            label: id.label + 5,
            ..id
        };
        assert_eq!(
            t.resume(wrong_label, 200, now),
            Err(Refusal::LabelMismatch(wrong_label))
        );
        let other_slot = TransactionId {
            index: (id.index + 1) % 16,
            label: 0,
        };
        assert_eq!(
            t.resume(other_slot, 200, now),
            Err(Refusal::Unknown(other_slot))
        );
        let out = TransactionId {
            index: 99,
            label: 0,
        };
        assert_eq!(t.resume(out, 200, now), Err(Refusal::IndexOutOfRange(out)));
        assert_eq!(t.state(id), Some(State::Suspended));
        assert_eq!(t.counters().refused, 4);
        assert_eq!(
            Refusal::LabelMismatch(wrong_label).to_string(),
            format!(
                "no transaction {}:{}: the label does not match any transaction in slot {}",
                id.index,
                id.label + 5,
                id.index
            )
        );
    }

    #[test]
    fn the_timer_ends_a_suspended_transaction_and_a_late_continue_is_refused() {
        let (mut t, now) = table();
        let inv = t.create(b"inv", true, 1, now);
        let msg = t.create(b"msg", false, 2, now);
        t.suspend(inv, now).unwrap();
        t.suspend(msg, now).unwrap();
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(5)));
        let mut expired = Vec::new();
        t.handle_timeout(now + Duration::from_secs(4), &mut expired);
        assert!(expired.is_empty());
        t.handle_timeout(now + Duration::from_secs(5), &mut expired);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].id, expired[0].code, expired[0].data),
            (msg, 408, 2)
        );
        assert_eq!(
            t.resume(msg, 200, now + Duration::from_secs(6)),
            Err(Refusal::TimedOut(msg))
        );
        // The INVITE uses fr_inv_timer.
        assert_eq!(
            t.poll_timeout(),
            Some(now + Duration::from_secs(10)),
            "the wait timer of msg"
        );
        t.handle_timeout(now + Duration::from_secs(10), &mut expired);
        assert_eq!(t.state(msg), None, "forgotten after its wait time");
        assert_eq!(t.resume(msg, 200, now), Err(Refusal::Unknown(msg)));
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(120)));
        t.handle_timeout(now + Duration::from_secs(120), &mut expired);
        assert_eq!(expired.last().map(|e| e.id), Some(inv));
    }

    #[test]
    fn resumed_transactions_do_not_time_out_later() {
        let (mut t, now) = table();
        let id = t.create(b"k", false, 0, now);
        t.suspend(id, now).unwrap();
        t.resume(id, 200, now + Duration::from_secs(1)).unwrap();
        let mut expired = Vec::new();
        t.handle_timeout(now + Duration::from_secs(60), &mut expired);
        assert!(expired.is_empty());
        assert_eq!(t.counters().timed_out, 0);
        assert!(t.is_empty(), "forgotten after the wait time");
    }

    #[test]
    fn a_local_reply_ends_it_and_later_continues_are_refused() {
        let (mut t, now) = table();
        let id = t.create(b"k", true, 0, now);
        t.suspend(id, now).unwrap();
        t.reply(id, 487, now).unwrap();
        assert_eq!(t.resume(id, 200, now), Err(Refusal::AlreadyReplied(id)));
        assert_eq!(
            t.reply(id, 500, now).err(),
            Some(Refusal::AlreadyReplied(id))
        );
    }

    #[test]
    fn many_transactions_expire_in_order_without_scanning() {
        let (mut t, now) = table();
        let mut ids = Vec::new();
        for i in 0..1000u32 {
            let at = now + Duration::from_millis(u64::from(i));
            let id = t.create(format!("k{i}").as_bytes(), false, i, at);
            t.suspend(id, at).unwrap();
            ids.push(id);
        }
        // Resume every other one.
        for id in ids.iter().step_by(2) {
            t.resume(*id, 200, now).unwrap();
        }
        let mut expired = Vec::new();
        t.handle_timeout(now + Duration::from_secs(10), &mut expired);
        let data: Vec<u32> = expired.iter().map(|e| e.data).collect();
        assert_eq!(data, (1..1000).step_by(2).collect::<Vec<_>>());
    }
}
