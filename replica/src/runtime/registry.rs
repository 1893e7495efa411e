//! The runs this replica has in flight, by chat: what the lease reconciles
//! against the database, and what shutdown hands back.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use chatd_shared::{
    ids::{ChatId, Generation},
    sync::lock,
};
use tokio::{sync::Notify, task::AbortHandle, time::Instant};
use tokio_util::sync::CancellationToken;

/// Why a run was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The database no longer gives us this chat (another generation or
    /// status): write nothing more.
    OwnershipLost,
    /// Our lease could not be renewed in time: others may take the chat.
    LeaseLost,
    /// Shutdown: the chat is being handed back to `pending`.
    HandBack,
}

/// The switches of one run: stop (with a reason) and interrupt.
#[derive(Debug)]
pub struct RunControl {
    cancel: CancellationToken,
    reason: OnceLock<StopReason>,
    interrupt: AtomicBool,
    interrupt_signal: Notify,
    turn_started: Mutex<Instant>,
}

impl Default for RunControl {
    fn default() -> Self {
        Self {
            cancel: CancellationToken::new(),
            reason: OnceLock::new(),
            interrupt: AtomicBool::new(false),
            interrupt_signal: Notify::new(),
            turn_started: Mutex::new(Instant::now()),
        }
    }
}

impl RunControl {
    /// Tells the run to stop at once; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    /// Why the run was stopped, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    /// Resolves when the run must stop.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// True once the run must stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Records an interrupt request (idempotent).
    pub fn interrupt(&self) {
        if !self.interrupt.swap(true, Ordering::AcqRel) {
            self.interrupt_signal.notify_waiters();
        }
    }

    /// True while an interrupt is pending.
    pub fn is_interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Acquire)
    }

    /// Resolves once an interrupt is requested (at once if one is pending).
    pub async fn interrupted(&self) {
        loop {
            let notified = self.interrupt_signal.notified();
            if self.is_interrupted() {
                return;
            }
            notified.await;
        }
    }

    /// A release committed: the database flag is cleared and, when a queued
    /// message continues, a new turn starts now.
    pub fn released(&self) {
        *lock(&self.turn_started) = Instant::now();
        self.interrupt.store(false, Ordering::Release);
    }

    /// True when the current turn started before `instant` (so a database
    /// read begun at `instant` already saw the last release).
    pub fn turn_started_before(&self, instant: Instant) -> bool {
        *lock(&self.turn_started) < instant
    }
}

/// One run in the registry.
#[derive(Debug)]
pub struct RunEntry {
    /// The generation it runs under.
    pub generation: Generation,
    /// Its switches.
    pub control: Arc<RunControl>,
    /// When it was registered (reconciliation ignores runs newer than its read).
    pub registered_at: Instant,
    /// Aborts its task (crash simulation only).
    pub task: Option<AbortHandle>,
}

/// Runs in flight, by chat.
#[derive(Debug, Default)]
pub struct Registry {
    runs: Mutex<HashMap<ChatId, RunEntry>>,
    /// Signalled whenever a run leaves (a slot is free, or the drain progressed).
    pub(crate) changed: Notify,
}

impl Registry {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<ChatId, RunEntry>> {
        lock(&self.runs)
    }

    /// Adds a run. A run of an older generation of the same chat (the chat
    /// was taken away and acquired again) is told to stop: it can no longer
    /// write, and nothing else would ever stop it.
    pub fn insert(&self, chat_id: ChatId, entry: RunEntry) {
        if let Some(old) = self.runs().insert(chat_id, entry) {
            old.control.stop(StopReason::OwnershipLost);
        }
    }

    /// Sets the abort handle of a run that was just spawned.
    pub fn set_task(&self, chat_id: ChatId, generation: Generation, task: AbortHandle) {
        if let Some(entry) = self
            .runs()
            .get_mut(&chat_id)
            .filter(|e| e.generation == generation)
        {
            entry.task = Some(task);
        }
    }

    /// Removes a run if it is still the one of `generation`.
    pub fn remove(&self, chat_id: ChatId, generation: Generation) {
        let removed = {
            let mut runs = self.runs();
            match runs.get(&chat_id) {
                Some(entry) if entry.generation == generation => runs.remove(&chat_id).is_some(),
                _ => false,
            }
        };
        if removed {
            self.changed.notify_waiters();
        }
    }

    /// Number of runs.
    pub fn len(&self) -> usize {
        self.runs().len()
    }

    /// True when nothing runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(chat, generation, registered_at, control)` of every run.
    pub fn snapshot(&self) -> Vec<(ChatId, Generation, Instant, Arc<RunControl>)> {
        self.runs()
            .iter()
            .map(|(id, e)| (*id, e.generation, e.registered_at, e.control.clone()))
            .collect()
    }

    /// The control of the run of `chat_id`, if it runs under `generation`.
    pub fn control(&self, chat_id: ChatId, generation: Generation) -> Option<Arc<RunControl>> {
        self.runs()
            .get(&chat_id)
            .filter(|e| e.generation == generation)
            .map(|e| e.control.clone())
    }

    /// Stops every run.
    pub fn stop_all(&self, reason: StopReason) -> usize {
        let runs = self.runs();
        for entry in runs.values() {
            entry.control.stop(reason);
        }
        runs.len()
    }

    /// Aborts every run's task (crash simulation).
    pub fn abort_all(&self) {
        for entry in self.runs().values() {
            if let Some(task) = &entry.task {
                task.abort();
            }
        }
    }
}
