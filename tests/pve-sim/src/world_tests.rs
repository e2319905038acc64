//! The task engine's vzdump lock: FIFO hand-over at the exact release instant and `lockwait`
//! timeouts judged before a later release, whatever the tick size; `next_due` for drivers.

use super::*;

const T0: f64 = 1_795_000_000.0;

fn world() -> World {
    let sc = Scenario::parse(
        "[settings]\nstart-time = 1795000000\nclock-speed = 0.0\n[[nodes]]\nname = \"pve1\"\n",
    )
    .unwrap();
    World::from_scenario(&sc).unwrap()
}

/// A vzdump-like task that waits for the lock (`lockwait` seconds) and then runs `secs`.
fn dump(w: &mut World, id: &str, lockwait: f64, secs: f64) -> String {
    let step: StepFn = Box::new(|_w: &mut World, _u: &str| StepResult::Finish("OK".into()));
    w.spawn_task_with_lock(
        "pve1",
        "vzdump",
        id,
        "root@pam",
        None,
        Some(lockwait),
        vec![(secs, step)],
    )
}

fn event_time(w: &World, kind: &str, upid: &str) -> Option<f64> {
    w.events
        .iter()
        .find(|e| e.kind == kind && e.upid.as_deref() == Some(upid))
        .map(|e| e.time - T0)
}

#[test]
fn one_coarse_tick_hands_the_lock_over_at_the_release_instant() {
    let mut w = world();
    let a = dump(&mut w, "1", 600.0, 10.0);
    let b = dump(&mut w, "2", 600.0, 10.0);
    let c = dump(&mut w, "3", 600.0, 10.0);
    w.clock.advance(25.0);
    w.tick();
    assert_eq!(w.task(&a).unwrap().endtime, Some(T0 as i64 + 10));
    assert_eq!(event_time(&w, "vzdump-lock-acquired", &b), Some(10.0));
    assert_eq!(w.task(&b).unwrap().endtime, Some(T0 as i64 + 20));
    assert_eq!(event_time(&w, "vzdump-lock-acquired", &c), Some(20.0));
    assert!(w.task(&c).unwrap().running(), "c runs 20..30");
    assert_eq!(w.vzdump_lock.get("pve1"), Some(&c));
    let waited: Vec<&str> = w
        .events
        .iter()
        .filter(|e| e.kind == "vzdump-lock-acquired")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(waited, ["0.0", "10.0", "20.0"]);
    assert_eq!(
        w.task(&b).unwrap().log,
        [
            "INFO: trying to get global lock - waiting...",
            "INFO: got global lock",
            "TASK OK"
        ]
    );
}

#[test]
fn a_lockwait_that_ran_out_before_the_release_fails_even_in_the_same_tick() {
    let mut w = world();
    let a = dump(&mut w, "1", 600.0, 50.0);
    let b = dump(&mut w, "2", 30.0, 5.0);
    let c = dump(&mut w, "3", 600.0, 5.0);
    w.clock.advance(100.0);
    w.tick();
    let tb = w.task(&b).unwrap();
    assert_eq!(tb.endtime, Some(T0 as i64 + 30));
    assert_eq!(
        tb.log.last().unwrap(),
        "ERROR: can't acquire lock '/var/run/vzdump.lock' - got timeout"
    );
    assert_eq!(event_time(&w, "task-finished", &a), Some(50.0));
    assert_eq!(event_time(&w, "vzdump-lock-acquired", &c), Some(50.0));
    assert_eq!(w.task(&c).unwrap().endtime, Some(T0 as i64 + 55));
}

#[test]
fn next_due_names_the_next_step_or_timeout() {
    let mut w = world();
    assert_eq!(w.next_due(), None);
    let _a = dump(&mut w, "1", 600.0, 10.0);
    let _b = dump(&mut w, "2", 4.0, 10.0);
    assert_eq!(
        w.next_due().map(|t| t - T0),
        Some(4.0),
        "b's lockwait runs out first"
    );
    w.clock.advance(4.0);
    w.tick();
    assert_eq!(w.next_due().map(|t| t - T0), Some(10.0), "a's end");
    w.clock.advance(6.0);
    w.tick();
    assert_eq!(w.next_due(), None);
}
