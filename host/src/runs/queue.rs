//! The run queue: admission control and fair scheduling of runs onto the execution slots
//! the wasmtime pool has.
//!
//! Threat: one caller (a user, a flood of schedules, one widely shared process) exhausting
//! the server so that everyone else's runs fail or wait forever. The pooling allocator holds
//! a fixed number of component instances; before this queue, run 65 failed at once with the
//! allocator's "maximum concurrent limit" error. Now:
//! - a run starts only when it holds a [`Slot`]; there are exactly as many slots as the pool
//!   can instantiate runs ([`crate::runtime::engine::EngineConfig::run_slots`]), so the
//!   allocator's limit is never reached by server runs;
//! - a run that finds no slot waits (state `queued`) and starts, in order, as slots free;
//! - the wait is bounded: globally ([`QueueLimits::max_queued`], refused as
//!   [`Refusal::QueueFull`]) and per user and per process (refused as
//!   [`Refusal::UserLimit`] / [`Refusal::ProcessLimit`]); a refusal is decided before any
//!   run record exists, so nothing is half created;
//! - fairness: a user (or process) never holds more than its running cap of slots, and free
//!   slots go round-robin over the users that have runs waiting (FIFO within one user), so a
//!   user who floods the queue delays another user's run by at most one start per slot.
//!
//! The queue is memory only: it knows run ids and the closures that start them, never inputs
//! or secrets. After a restart, runs still `queued` in the run store are cancelled (see
//! `AppState::open`); their callers must request them again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// Largest configurable global queue. Each waiting run holds a prepared spec in memory
/// (inputs included); this bounds what a misconfiguration can make the server hold.
pub const MAX_QUEUED_RUNS: usize = 100_000;

/// Seconds a refused caller is told to wait (`Retry-After`). A hint: a slot frees when any
/// run ends, which the server cannot predict.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Bounds of the queue and the fairness caps; the number of slots comes from the pool.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueLimits {
    /// Runs that may wait for a slot, all callers together.
    pub max_queued: usize,
    /// Slots one user (or schedule owner) may hold at once.
    pub per_user_running: usize,
    /// Runs one user may have waiting.
    pub per_user_queued: usize,
    /// Slots the runs of one process may hold at once.
    pub per_process_running: usize,
    /// Runs of one process that may be waiting.
    pub per_process_queued: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_queued: 1024,
            per_user_running: 16,
            per_user_queued: 64,
            per_process_running: 32,
            per_process_queued: 256,
        }
    }
}

impl QueueLimits {
    /// These limits made usable: every cap at least 1, the global queue at most
    /// [`MAX_QUEUED_RUNS`], and no per-caller queue larger than the global one.
    pub fn normalized(mut self) -> Self {
        self.max_queued = self.max_queued.clamp(1, MAX_QUEUED_RUNS);
        for cap in [
            &mut self.per_user_running,
            &mut self.per_process_running,
            &mut self.per_user_queued,
            &mut self.per_process_queued,
        ] {
            *cap = (*cap).max(1);
        }
        self.per_user_queued = self.per_user_queued.min(self.max_queued);
        self.per_process_queued = self.per_process_queued.min(self.max_queued);
        self
    }
}

/// Why a run was refused admission. Nothing was created for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server's queue is full (HTTP 503).
    #[error("the server's run queue is full ({limit} runs waiting); retry later")]
    QueueFull { limit: usize },
    /// The caller already has as many runs waiting as it may (HTTP 429).
    #[error("{user} already has {limit} runs waiting for a slot; retry once some have started")]
    UserLimit { user: String, limit: usize },
    /// The process already has as many runs waiting as it may (HTTP 429).
    #[error("process {process} already has {limit} runs waiting for a slot; retry later")]
    ProcessLimit { process: String, limit: usize },
}

impl Refusal {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::UserLimit { .. } => "user_run_limit",
            Refusal::ProcessLimit { .. } => "process_run_limit",
        }
    }

    /// True when the refusal is about this caller's (or process's) share, not the server.
    pub fn is_caller_limit(&self) -> bool {
        !matches!(self, Refusal::QueueFull { .. })
    }
}

/// Counts for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Execution slots (the pool's run capacity).
    pub slots: usize,
    /// Slots held now.
    pub running: usize,
    /// Runs admitted and waiting for a slot.
    pub queued: usize,
    /// Refusals since start, because the server's queue was full.
    pub refused_queue_full: u64,
    /// Refusals since start, because a user or a process was at its limit.
    pub refused_caller_limit: u64,
}

/// What a run is told when it is admitted.
pub enum Admission {
    /// A slot is free now: start the run.
    Start(Slot),
    /// Wait: create the run `queued`, then hand the place to [`RunQueue::enqueue`].
    Wait(Place),
}

/// Starts a waiting run once it has its slot. Called outside the queue's lock.
pub type Job = Box<dyn FnOnce(Slot) + Send>;

/// Admission control and fair scheduling over a fixed number of slots. Cheap to clone.
#[derive(Clone)]
pub struct RunQueue {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Counts {
    running: usize,
    queued: usize,
}

struct Waiting {
    run_id: String,
    process: String,
    job: Job,
}

struct Inner {
    slots: usize,
    limits: QueueLimits,
    running: usize,
    queued: usize,
    users: HashMap<String, Counts>,
    processes: HashMap<String, Counts>,
    /// Waiting runs per user, oldest first.
    waiting: HashMap<String, VecDeque<Waiting>>,
    /// Users with waiting runs, in the order they are next served.
    rotation: VecDeque<String>,
    /// The user of each waiting run id, to withdraw it.
    owner_of: HashMap<String, String>,
    refused_queue_full: u64,
    refused_caller_limit: u64,
}

impl RunQueue {
    /// A queue over `slots` execution slots (at least 1).
    pub fn new(slots: usize, limits: QueueLimits) -> Self {
        RunQueue {
            inner: Arc::new(Mutex::new(Inner {
                slots: slots.max(1),
                limits: limits.normalized(),
                running: 0,
                queued: 0,
                users: HashMap::new(),
                processes: HashMap::new(),
                waiting: HashMap::new(),
                rotation: VecDeque::new(),
                owner_of: HashMap::new(),
                refused_queue_full: 0,
                refused_caller_limit: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limits in force.
    pub fn limits(&self) -> QueueLimits {
        self.lock().limits.clone()
    }

    /// Admits a run of `process` charged to `user`: a slot if one is free for them, else a
    /// place in the queue, else a refusal (counted).
    pub fn admit(&self, user: &str, process: &str) -> Result<Admission, Refusal> {
        let mut inner = self.lock();
        if inner.may_start(user, process) {
            inner.take_slot(user, process);
            drop(inner);
            return Ok(Admission::Start(self.slot(user, process)));
        }
        if let Err(refusal) = inner.may_wait(user, process) {
            if refusal.is_caller_limit() {
                inner.refused_caller_limit += 1;
            } else {
                inner.refused_queue_full += 1;
            }
            return Err(refusal);
        }
        inner.queued += 1;
        inner.users.entry(user.to_string()).or_default().queued += 1;
        inner
            .processes
            .entry(process.to_string())
            .or_default()
            .queued += 1;
        Ok(Admission::Wait(Place {
            queue: self.clone(),
            user: user.to_string(),
            process: process.to_string(),
            armed: true,
        }))
    }

    /// Puts the (now recorded) run `run_id` in line; `job` starts it when its slot comes,
    /// which may be at once.
    pub fn enqueue(&self, mut place: Place, run_id: String, job: Job) {
        place.armed = false;
        let ready = {
            let mut inner = self.lock();
            inner.owner_of.insert(run_id.clone(), place.user.clone());
            let line = inner.waiting.entry(place.user.clone()).or_default();
            line.push_back(Waiting {
                run_id,
                process: place.process.clone(),
                job,
            });
            if !inner.rotation.contains(&place.user) {
                inner.rotation.push_back(place.user.clone());
            }
            inner.pump()
        };
        self.launch(ready);
    }

    /// Removes a waiting run (it was cancelled); false if it is not waiting here.
    pub fn withdraw(&self, run_id: &str) -> bool {
        // The job is dropped after the lock is released: what it holds may take it.
        let removed = self.lock().take_waiting(run_id);
        removed.is_some()
    }

    /// Current counts.
    pub fn stats(&self) -> QueueStats {
        let inner = self.lock();
        QueueStats {
            slots: inner.slots,
            running: inner.running,
            queued: inner.queued,
            refused_queue_full: inner.refused_queue_full,
            refused_caller_limit: inner.refused_caller_limit,
        }
    }

    fn slot(&self, user: &str, process: &str) -> Slot {
        Slot {
            queue: self.clone(),
            user: user.to_string(),
            process: process.to_string(),
        }
    }

    /// Runs the jobs that got a slot, outside the lock (a job may take it again).
    fn launch(&self, ready: Vec<(Waiting, String)>) {
        for (waiting, user) in ready {
            let slot = self.slot(&user, &waiting.process);
            (waiting.job)(slot);
        }
    }

    fn release_slot(&self, user: &str, process: &str) {
        let ready = {
            let mut inner = self.lock();
            inner.running = inner.running.saturating_sub(1);
            decrement(&mut inner.users, user, |c| &mut c.running);
            decrement(&mut inner.processes, process, |c| &mut c.running);
            inner.pump()
        };
        self.launch(ready);
    }
}

impl Inner {
    fn may_start(&self, user: &str, process: &str) -> bool {
        let running = |m: &HashMap<String, Counts>, k: &str| m.get(k).map_or(0, |c| c.running);
        self.running < self.slots
            && running(&self.users, user) < self.limits.per_user_running
            && running(&self.processes, process) < self.limits.per_process_running
    }

    fn may_wait(&self, user: &str, process: &str) -> Result<(), Refusal> {
        let queued = |m: &HashMap<String, Counts>, k: &str| m.get(k).map_or(0, |c| c.queued);
        // A full server is reported as such (503) even to a caller also at its own cap.
        if self.queued >= self.limits.max_queued {
            return Err(Refusal::QueueFull {
                limit: self.limits.max_queued,
            });
        }
        if queued(&self.users, user) >= self.limits.per_user_queued {
            return Err(Refusal::UserLimit {
                user: user.to_string(),
                limit: self.limits.per_user_queued,
            });
        }
        if queued(&self.processes, process) >= self.limits.per_process_queued {
            return Err(Refusal::ProcessLimit {
                process: process.to_string(),
                limit: self.limits.per_process_queued,
            });
        }
        Ok(())
    }

    fn take_slot(&mut self, user: &str, process: &str) {
        self.running += 1;
        self.users.entry(user.to_string()).or_default().running += 1;
        self.processes
            .entry(process.to_string())
            .or_default()
            .running += 1;
    }

    fn release_queued(&mut self, user: &str, process: &str) {
        self.queued = self.queued.saturating_sub(1);
        decrement(&mut self.users, user, |c| &mut c.queued);
        decrement(&mut self.processes, process, |c| &mut c.queued);
    }

    fn take_waiting(&mut self, run_id: &str) -> Option<Waiting> {
        let user = self.owner_of.remove(run_id)?;
        let line = self.waiting.get_mut(&user)?;
        let at = line.iter().position(|w| w.run_id == run_id)?;
        let removed = line.remove(at)?;
        if line.is_empty() {
            self.waiting.remove(&user);
            self.rotation.retain(|u| *u != user);
        }
        self.release_queued(&user, &removed.process);
        Some(removed)
    }

    /// Hands free slots to waiting runs: round-robin over users, the oldest eligible run of
    /// each (a run whose process is at its cap lets the user's next run go first).
    fn pump(&mut self) -> Vec<(Waiting, String)> {
        let mut ready = Vec::new();
        'slots: while self.running < self.slots {
            for turn in 0..self.rotation.len() {
                let Some(user) = self.rotation.get(turn).cloned() else {
                    break;
                };
                let Some(at) = self.eligible(&user) else {
                    continue;
                };
                let Some(line) = self.waiting.get_mut(&user) else {
                    continue;
                };
                let Some(waiting) = line.remove(at) else {
                    continue;
                };
                let empty = line.is_empty();
                // This user was served: to the back of the rotation (or out of it).
                self.rotation.remove(turn);
                if empty {
                    self.waiting.remove(&user);
                } else {
                    self.rotation.push_back(user.clone());
                }
                self.owner_of.remove(&waiting.run_id);
                self.release_queued(&user, &waiting.process);
                self.take_slot(&user, &waiting.process);
                ready.push((waiting, user));
                continue 'slots;
            }
            break;
        }
        ready
    }

    /// The position of `user`'s oldest waiting run that may start now.
    fn eligible(&self, user: &str) -> Option<usize> {
        let line = self.waiting.get(user)?;
        line.iter().position(|w| self.may_start(user, &w.process))
    }
}

fn decrement(map: &mut HashMap<String, Counts>, key: &str, field: fn(&mut Counts) -> &mut usize) {
    if let Some(counts) = map.get_mut(key) {
        let value = field(counts);
        *value = value.saturating_sub(1);
        if counts.running == 0 && counts.queued == 0 {
            map.remove(key);
        }
    }
}

/// The right to execute one run: one of the pool's instance slots. Dropping it (the run
/// ended, or never got going) frees the slot for the next waiting run.
pub struct Slot {
    queue: RunQueue,
    user: String,
    process: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.release_slot(&self.user, &self.process);
    }
}

/// A reserved place in the queue, held while the run is recorded. Dropped without
/// [`RunQueue::enqueue`] (recording failed) it gives the place back.
pub struct Place {
    queue: RunQueue,
    user: String,
    process: String,
    armed: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.armed {
            self.queue.lock().release_queued(&self.user, &self.process);
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
