//! Unit tests of the run queue: bounds, per-caller caps, round-robin fairness, withdrawal,
//! and that every slot and place is given back.

use std::sync::{Arc, Mutex};

use super::*;

/// Records which runs got a slot, in order, and keeps their slots until released.
#[derive(Clone, Default)]
struct Started {
    order: Arc<Mutex<Vec<String>>>,
    slots: Arc<Mutex<Vec<(String, Slot)>>>,
}

impl Started {
    fn job(&self, run_id: &str) -> Job {
        let this = self.clone();
        let id = run_id.to_string();
        Box::new(move |slot| {
            this.order.lock().unwrap().push(id.clone());
            this.slots.lock().unwrap().push((id, slot));
        })
    }

    fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }

    /// Ends the run `id` (drops its slot), which starts the next waiting one.
    fn finish(&self, id: &str) {
        let slot = {
            let mut slots = self.slots.lock().unwrap();
            let at = slots.iter().position(|(i, _)| i == id).expect("running");
            slots.remove(at).1
        };
        drop(slot);
    }
}

fn limits(max_queued: usize, user: (usize, usize), process: (usize, usize)) -> QueueLimits {
    QueueLimits {
        max_queued,
        per_user_running: user.0,
        per_user_queued: user.1,
        per_process_running: process.0,
        per_process_queued: process.1,
    }
}

/// Admits run `id`; a run that must wait is enqueued with a recording job.
fn submit(queue: &RunQueue, started: &Started, user: &str, process: &str, id: &str) -> bool {
    match queue.admit(user, process).expect("admitted") {
        Admission::Start(slot) => {
            (started.job(id))(slot);
            true
        }
        Admission::Wait(place) => {
            queue.enqueue(place, id.to_string(), started.job(id));
            false
        }
    }
}

#[test]
fn runs_beyond_the_slots_wait_and_start_in_order_as_slots_free() {
    let queue = RunQueue::new(2, limits(10, (10, 10), (10, 10)));
    let started = Started::default();
    for id in ["a1", "a2", "a3", "a4"] {
        submit(&queue, &started, "alice", "p", id);
    }
    assert_eq!(started.order(), ["a1", "a2"]);
    assert_eq!(queue.stats().running, 2);
    assert_eq!(queue.stats().queued, 2);
    started.finish("a2");
    assert_eq!(started.order(), ["a1", "a2", "a3"]);
    started.finish("a1");
    started.finish("a3");
    assert_eq!(started.order(), ["a1", "a2", "a3", "a4"]);
    started.finish("a4");
    let stats = queue.stats();
    assert_eq!((stats.running, stats.queued), (0, 0), "{stats:?}");
}

#[test]
fn a_full_queue_refuses_and_counts_the_refusal() {
    let queue = RunQueue::new(1, limits(2, (10, 10), (10, 10)));
    let started = Started::default();
    submit(&queue, &started, "u1", "p", "r1");
    submit(&queue, &started, "u2", "p", "r2");
    submit(&queue, &started, "u3", "p", "r3");
    let refusal = queue.admit("u4", "p").err().expect("refused");
    assert_eq!(refusal, Refusal::QueueFull { limit: 2 });
    assert_eq!(refusal.code(), "queue_full");
    assert!(!refusal.is_caller_limit());
    assert_eq!(queue.stats().refused_queue_full, 1);
    assert_eq!(queue.stats().queued, 2);
}

#[test]
fn a_user_over_their_queue_share_is_refused_while_others_are_admitted() {
    let queue = RunQueue::new(1, limits(100, (1, 2), (100, 100)));
    let started = Started::default();
    for id in ["m1", "m2", "m3"] {
        submit(&queue, &started, "mallory", "p", id);
    }
    let refusal = queue.admit("mallory", "p").err().expect("refused");
    assert_eq!(refusal.code(), "user_run_limit");
    assert!(refusal.is_caller_limit());
    // Another user still gets a place (and later a slot).
    assert!(matches!(queue.admit("bob", "p"), Ok(Admission::Wait(_))));
    assert_eq!(queue.stats().refused_caller_limit, 1);
}

#[test]
fn a_process_over_its_queue_share_is_refused() {
    let queue = RunQueue::new(1, limits(100, (100, 100), (1, 1)));
    let started = Started::default();
    submit(&queue, &started, "u1", "popular", "r1");
    submit(&queue, &started, "u2", "popular", "r2");
    let refusal = queue.admit("u3", "popular").err().expect("refused");
    assert_eq!(refusal.code(), "process_run_limit");
    assert!(matches!(queue.admit("u3", "other"), Ok(Admission::Wait(_))));
}

#[test]
fn a_flooding_user_cannot_take_every_slot() {
    // Four slots, two per user: mallory floods, bob's run starts at once.
    let queue = RunQueue::new(4, limits(100, (2, 50), (100, 100)));
    let started = Started::default();
    for i in 0..20 {
        submit(&queue, &started, "mallory", "p", &format!("m{i}"));
    }
    assert_eq!(
        started.order(),
        ["m0", "m1"],
        "mallory holds only her share"
    );
    assert!(
        submit(&queue, &started, "bob", "p", "b0"),
        "bob starts at once"
    );
    assert_eq!(queue.stats().running, 3);
}

#[test]
fn free_slots_go_round_robin_over_waiting_users() {
    let queue = RunQueue::new(1, limits(100, (10, 50), (100, 100)));
    let started = Started::default();
    submit(&queue, &started, "mallory", "p", "m0");
    for i in 1..6 {
        submit(&queue, &started, "mallory", "p", &format!("m{i}"));
    }
    // Bob arrives after mallory queued five runs, carol after bob queued two.
    submit(&queue, &started, "bob", "p", "b0");
    submit(&queue, &started, "bob", "p", "b1");
    submit(&queue, &started, "carol", "p", "c0");
    let mut last = "m0".to_string();
    for _ in 0..8 {
        started.finish(&last);
        last = started.order().last().cloned().expect("a run started");
    }
    started.finish(&last);
    assert_eq!(
        started.order(),
        ["m0", "m1", "b0", "c0", "m2", "b1", "m3", "m4", "m5"],
        "each waiting user gets a turn; FIFO within one user"
    );
}

#[test]
fn a_run_whose_process_is_at_its_cap_lets_the_users_later_runs_go_first() {
    let queue = RunQueue::new(2, limits(100, (10, 50), (1, 50)));
    let started = Started::default();
    submit(&queue, &started, "alice", "slow", "s0");
    submit(&queue, &started, "bob", "other", "x0");
    submit(&queue, &started, "alice", "slow", "s1");
    submit(&queue, &started, "alice", "fast", "f0");
    assert_eq!(started.order(), ["s0", "x0"]);
    started.finish("x0");
    assert_eq!(
        started.order(),
        ["s0", "x0", "f0"],
        "s1 waits for its process"
    );
    started.finish("s0");
    assert_eq!(started.order(), ["s0", "x0", "f0", "s1"]);
}

#[test]
fn a_withdrawn_run_never_starts_and_frees_its_place() {
    let queue = RunQueue::new(1, limits(1, (10, 10), (10, 10)));
    let started = Started::default();
    submit(&queue, &started, "alice", "p", "r1");
    submit(&queue, &started, "alice", "p", "r2");
    assert!(queue.admit("bob", "p").is_err(), "queue of one is full");
    assert!(queue.withdraw("r2"));
    assert!(!queue.withdraw("r2"), "only once");
    assert!(!queue.withdraw("r1"), "a running run is not waiting");
    assert_eq!(queue.stats().queued, 0);
    submit(&queue, &started, "bob", "p", "b1");
    started.finish("r1");
    assert_eq!(started.order(), ["r1", "b1"]);
}

#[test]
fn a_place_dropped_before_it_is_enqueued_is_given_back() {
    let queue = RunQueue::new(1, limits(1, (10, 10), (10, 10)));
    let started = Started::default();
    submit(&queue, &started, "alice", "p", "r1");
    let place = queue.admit("alice", "p").expect("place");
    assert!(queue.admit("alice", "p").is_err());
    drop(place); // recording the run failed
    assert_eq!(queue.stats().queued, 0);
    assert!(matches!(queue.admit("alice", "p"), Ok(Admission::Wait(_))));
}

#[test]
fn a_slot_dropped_without_running_starts_the_next_run() {
    let queue = RunQueue::new(1, limits(10, (10, 10), (10, 10)));
    let started = Started::default();
    let Ok(Admission::Start(slot)) = queue.admit("alice", "p") else {
        panic!("slot expected");
    };
    submit(&queue, &started, "bob", "p", "b1");
    assert!(started.order().is_empty());
    drop(slot); // recording the run failed
    assert_eq!(started.order(), ["b1"]);
}

#[test]
fn limits_are_normalized_to_usable_values() {
    let small = limits(0, (0, 5), (0, 500)).normalized();
    assert_eq!(small.max_queued, 1);
    assert_eq!(small.per_user_running, 1);
    assert_eq!(small.per_user_queued, 1);
    assert_eq!(small.per_process_running, 1);
    assert_eq!(small.per_process_queued, 1);
    let huge = limits(usize::MAX, (1, 1), (1, 1)).normalized();
    assert_eq!(huge.max_queued, MAX_QUEUED_RUNS);
}

#[test]
fn a_full_server_is_reported_as_full_even_to_a_caller_at_its_own_cap() {
    // The per-user queue is clamped to the global one: both are full at once.
    let queue = RunQueue::new(1, limits(2, (10, 64), (10, 64)));
    let started = Started::default();
    for id in ["r1", "r2", "r3"] {
        submit(&queue, &started, "alice", "p", id);
    }
    let refusal = queue.admit("alice", "p").err().expect("refused");
    assert_eq!(refusal.code(), "queue_full");
}
