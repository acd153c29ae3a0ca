//! Group commit: one syncer thread turns many writers' durability requests into few fsyncs.
//!
//! An fsync costs 0.2 ms (this machine's disk: ~5k fdatasync/s) to ~3 ms (DEPENDENCIES.md), so an
//! fsync per write caps a node at 300-5000 writes/s. Instead, writers wait for *an* fsync that started after their write
//! finished, and every writer waiting when the syncer starts an fsync shares it (the classic
//! group commit of databases). Two ways in:
//!
//! - `apply` + `durable` (what `Store::write` + `Store::durable` use): the caller writes itself
//!   and gets a [`WriteTicket`], a sequence number taken *after* the engine write returned. The
//!   syncer reads the highest ticket issued, fsyncs, and then every ticket up to that number is
//!   durable. Taking the ticket after the write is what makes this sound: a ticket the syncer has
//!   seen belongs to a write that was complete before the fsync began.
//! - `enqueue` (what `Store::commit` uses): the caller hands the batch over and the syncer
//!   applies all queued batches, then fsyncs once. The async caller never touches the engine, so
//!   nothing the engine does on a write (fjall stalls writers for up to 100 ms at a time while
//!   its flushes lag) can hold up a runtime thread.
//!
//! Both reach ~25 commits per fsync and ~100k commits/s with 50 concurrent writers on this
//! machine's disk (examples/commit_bench.rs), because the fjall engine fsyncs without holding its
//! journal lock (`fjall_engine::journal`); with fjall's own `persist(SyncData)` the `write` path
//! managed ~30k/s at ~5 per fsync.
//!
//! Waiters are completed through `tokio::sync::oneshot`, so `Store::durable` is an ordinary
//! future and nothing blocks the async runtime; the syncer is a std thread because fsync blocks.
//! The queue is a `parking_lot::Mutex` + `Condvar` (a blocking lock: the thread must sleep on it,
//! and no critical section spans an await or an fsync).
//!
//! In `Periodic` mode the same thread fsyncs every interval if anything was written, and
//! `durable` resolves at once (the write is acknowledged before it is durable; that is the mode's
//! documented trade).
//!
//! Failure: a failed fsync (or a journal write failing with an I/O error) poisons the store
//! (fail-stop): the waiters of that fsync and every later write and durability request get
//! `Poisoned`. Retrying an fsync after a failure can report success for data the kernel already
//! dropped, so the only honest answer is a restart and a journal replay.
//!
//! IMPLEMENTATION CAVEATS: no adaptive delay before an fsync (no "wait 100 us for more writers"):
//! the batch is whatever queued up during the previous fsync, which is what a slow disk needs and
//! costs nothing on a fast one. Tickets are per process: they do not survive a restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::engine::{Engine, WriteBatch};
use crate::error::StorageError;

/// Proof that a write was applied, to wait for its durability with `Store::durable`. Ordered:
/// a later write has a larger ticket.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteTicket(u64);

impl WriteTicket {
    /// The write's sequence number in this process (starts at 1).
    pub fn seq(self) -> u64 {
        self.0
    }
}

/// How writes become durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging, shared between concurrent writers (group commit).
    Sync,
    /// Acknowledge at once; fsync every `interval`. A crash loses at most about one interval of
    /// acknowledged writes on this node.
    Periodic {
        /// Time between fsyncs.
        interval: Duration,
    },
}

impl Durability {
    /// `"sync"` or `"periodic"`, as in the config and `INFO`.
    pub fn name(&self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Periodic { .. } => "periodic",
        }
    }
}

impl Default for Durability {
    /// `Sync`: an acknowledged write survives a power loss unless the operator chose otherwise.
    fn default() -> Self {
        Durability::Sync
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Sync => f.write_str("sync"),
            Durability::Periodic { interval } => write!(f, "periodic ({interval:?})"),
        }
    }
}

type Reply = oneshot::Sender<Result<(), StorageError>>;

/// What `durable` hands back: an answer now, or a receiver to await.
pub(crate) enum Durable {
    Ready(Result<(), StorageError>),
    Pending(oneshot::Receiver<Result<(), StorageError>>),
}

struct State {
    /// Every ticket up to this one is durable.
    durable_upto: u64,
    /// `durable` callers waiting for an fsync.
    waiters: Vec<(WriteTicket, Reply)>,
    /// `commit` batches for the syncer to apply, then fsync.
    commits: Vec<(WriteBatch, Reply)>,
    closing: bool,
}

struct Shared {
    engine: Arc<dyn Engine>,
    durability: Durability,
    state: Mutex<State>,
    wake: Condvar,
    /// The highest ticket issued; tickets are issued after the engine write returned.
    last_ticket: AtomicU64,
    /// Fast-path copies of the flags, read on every write without the lock.
    poisoned: AtomicBool,
    closed: AtomicBool,
    writes: AtomicU64,
    fsyncs: AtomicU64,
}

/// The syncer thread and the state it shares with writers.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shut_down: AtomicBool,
}

impl GroupCommit {
    /// Starts the syncer thread for `durability`.
    pub(crate) fn start(engine: Arc<dyn Engine>, durability: Durability) -> GroupCommit {
        let shared = Arc::new(Shared {
            engine,
            durability,
            state: Mutex::new(State {
                durable_upto: 0,
                waiters: Vec::new(),
                commits: Vec::new(),
                closing: false,
            }),
            wake: Condvar::new(),
            last_ticket: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("ringkv-syncer".into())
            .spawn(move || {
                let _guard = ExitGuard(Arc::clone(&for_thread));
                match for_thread.durability {
                    Durability::Sync => for_thread.run_group_commit(),
                    Durability::Periodic { interval } => for_thread.run_periodic(interval),
                }
            });
        let thread = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                // Without a syncer nothing would ever become durable: fail-stop, loudly.
                shared.poison(&format!("cannot start the syncer thread: {e}"));
                None
            }
        };
        GroupCommit {
            shared,
            thread: Mutex::new(thread),
            shut_down: AtomicBool::new(false),
        }
    }

    /// `Err(Closed)` after shutdown, `Err(Poisoned)` after a failed fsync, else Ok.
    pub(crate) fn check_open(&self) -> Result<(), StorageError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    /// Writes `batch` to the engine from the calling thread and issues its ticket.
    pub(crate) fn apply(&self, batch: &WriteBatch) -> Result<WriteTicket, StorageError> {
        self.shared.apply(batch)
    }

    /// Registers interest in `ticket` becoming durable.
    pub(crate) fn durable(&self, ticket: WriteTicket) -> Durable {
        let shared = &self.shared;
        if let Durability::Periodic { .. } = shared.durability {
            return Durable::Ready(if shared.poisoned.load(Ordering::Acquire) {
                Err(StorageError::Poisoned)
            } else {
                Ok(())
            });
        }
        let mut state = shared.state.lock();
        if ticket.0 <= state.durable_upto {
            return Durable::Ready(Ok(()));
        }
        if shared.poisoned.load(Ordering::Acquire) {
            return Durable::Ready(Err(StorageError::Poisoned));
        }
        if state.closing {
            return Durable::Ready(Err(StorageError::Closed));
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push((ticket, tx));
        drop(state);
        shared.wake.notify_one();
        Durable::Pending(rx)
    }

    /// Hands `batch` to the syncer (Sync mode only): it is applied and fsynced with the others
    /// queued at the time; the receiver resolves once it is durable.
    pub(crate) fn enqueue(
        &self,
        batch: WriteBatch,
    ) -> Result<oneshot::Receiver<Result<(), StorageError>>, StorageError> {
        debug_assert_eq!(self.shared.durability, Durability::Sync);
        let mut state = self.shared.state.lock();
        if state.closing {
            return Err(StorageError::Closed);
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        let (tx, rx) = oneshot::channel();
        state.commits.push((batch, tx));
        drop(state);
        self.shared.wake.notify_one();
        Ok(rx)
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Marks the store poisoned (e.g. the engine reported its own fail-stop).
    pub(crate) fn poison(&self, why: &str) {
        self.shared.poison(why);
    }

    pub(crate) fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    pub(crate) fn fsyncs(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// Stops accepting work, lets the syncer finish what is queued, joins it, and fsyncs whatever
    /// was written since the last fsync. Idempotent: later calls return Ok at once.
    pub(crate) fn shutdown(&self) -> Result<(), StorageError> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            let mut state = self.shared.state.lock();
            state.closing = true;
            self.shared.closed.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        if let Some(handle) = self.thread.lock().take() {
            if handle.join().is_err() {
                tracing::error!("the storage syncer thread panicked");
            }
        }
        if self.is_poisoned() {
            return Err(StorageError::Poisoned);
        }
        // Covers direct writes since the last fsync, and Periodic mode's unsynced tail.
        let target = self.shared.last_ticket.load(Ordering::SeqCst);
        if target > self.shared.state.lock().durable_upto {
            self.shared.fsync()?;
            self.shared.mark_durable(target);
        }
        Ok(())
    }
}

impl Shared {
    fn apply(&self, batch: &WriteBatch) -> Result<WriteTicket, StorageError> {
        match self.engine.write(batch) {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                // SeqCst pairs with the syncer's load: a ticket it sees is a finished write.
                Ok(WriteTicket(
                    self.last_ticket.fetch_add(1, Ordering::SeqCst) + 1,
                ))
            }
            Err(StorageError::Poisoned) => {
                self.poison("the engine refused a write as poisoned");
                Err(StorageError::Poisoned)
            }
            // A journal write that failed half way leaves the log in an unknown state (fjall
            // poisons itself here too). This caller learns the cause; later ones get Poisoned.
            Err(StorageError::Io(e)) => {
                self.poison(&format!("a journal write failed: {e}"));
                Err(StorageError::Io(e))
            }
            Err(e) => Err(e),
        }
    }

    fn poison(&self, why: &str) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            tracing::error!(
                reason = why,
                "storage poisoned: no further writes are accepted; restart the node"
            );
        }
    }

    /// One fsync, counted; a failure poisons.
    fn fsync(&self) -> Result<(), StorageError> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.engine.sync().map_err(|e| {
            self.poison(&format!("fsync failed: {e}"));
            StorageError::Poisoned
        })
    }

    fn mark_durable(&self, upto: u64) {
        let mut state = self.state.lock();
        state.durable_upto = state.durable_upto.max(upto);
    }

    /// Sync mode: sleep until someone waits, then apply queued commits, fsync once, answer all.
    fn run_group_commit(&self) {
        loop {
            let (commits, waiters) = {
                let mut state = self.state.lock();
                while state.commits.is_empty() && state.waiters.is_empty() {
                    if state.closing {
                        return;
                    }
                    self.wake.wait(&mut state);
                }
                (
                    std::mem::take(&mut state.commits),
                    std::mem::take(&mut state.waiters),
                )
            };
            self.round(commits, waiters);
        }
    }

    fn round(&self, commits: Vec<(WriteBatch, Reply)>, waiters: Vec<(WriteTicket, Reply)>) {
        if self.poisoned.load(Ordering::Acquire) {
            let replies = commits.into_iter().map(|c| c.1);
            replies
                .chain(waiters.into_iter().map(|w| w.1))
                .for_each(|r| {
                    let _ = r.send(Err(StorageError::Poisoned));
                });
            return;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(commits.len() + waiters.len());
        for (batch, reply) in commits {
            match self.apply(&batch) {
                Ok(_) => replies.push(reply),
                // Only this batch failed; it is not in the journal, so it needs no fsync.
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        replies.extend(waiters.into_iter().map(|w| w.1));
        // Read after every write of this round and after the waiters were taken, before the
        // fsync starts: everything up to `target` is covered by it.
        let target = self.last_ticket.load(Ordering::SeqCst);
        match self.fsync() {
            Ok(()) => {
                self.mark_durable(target);
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(_) => {
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Poisoned));
                }
            }
        }
    }

    /// Periodic mode: fsync every `interval` if anything was written.
    fn run_periodic(&self, interval: Duration) {
        let mut next = Instant::now() + interval;
        loop {
            {
                let mut state = self.state.lock();
                while !state.closing && Instant::now() < next {
                    self.wake.wait_until(&mut state, next);
                }
                if state.closing {
                    // `shutdown` does the final fsync.
                    return;
                }
            }
            let now = Instant::now();
            // Skip missed ticks instead of fsyncing back to back to catch up.
            next = (next + interval).max(now);
            if self.poisoned.load(Ordering::Acquire) {
                continue;
            }
            let target = self.last_ticket.load(Ordering::SeqCst);
            if target > self.state.lock().durable_upto && self.fsync().is_ok() {
                self.mark_durable(target);
            }
        }
    }
}

/// Runs when the syncer thread leaves, however it leaves. If it panicked, nobody would ever
/// answer the queue again: poison, close, and answer everything still queued.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let shared = &self.0;
        if std::thread::panicking() {
            shared.poison("the syncer thread panicked");
        }
        let (commits, waiters) = {
            let mut state = shared.state.lock();
            state.closing = true;
            shared.closed.store(true, Ordering::Release);
            (
                std::mem::take(&mut state.commits),
                std::mem::take(&mut state.waiters),
            )
        };
        let error = || {
            if shared.poisoned.load(Ordering::Acquire) {
                StorageError::Poisoned
            } else {
                StorageError::Closed
            }
        };
        for (_, reply) in commits {
            let _ = reply.send(Err(error()));
        }
        for (_, reply) in waiters {
            let _ = reply.send(Err(error()));
        }
    }
}
