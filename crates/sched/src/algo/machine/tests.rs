//! The state machine's own rules, on small hand-made schedules.

use std::time::Duration;

use super::{Clock, Idle, Machine, Pace, PaceConfig, VirtualClock, STALL_NOTICE};
use crate::algo::{Action, BufId, Schedule, Span, Step};

fn span(off: usize, len: usize) -> Span {
    Span {
        buf: BufId::Recv,
        off,
        len,
    }
}

fn step(action: Action, deps: &[u32]) -> Step {
    Step {
        action,
        channel: 0,
        deps: deps.to_vec(),
        word: None,
    }
}

/// Send, then a receive that depends on it, then a copy of what came.
fn ping() -> Schedule {
    Schedule {
        steps: vec![
            step(
                Action::Send {
                    peer: 1,
                    src: span(0, 4),
                },
                &[],
            ),
            step(
                Action::Recv {
                    peer: 1,
                    dst: span(4, 4),
                },
                &[0],
            ),
            step(
                Action::Copy {
                    src: span(4, 4),
                    dst: span(8, 4),
                },
                &[1],
            ),
        ],
        scratch_bytes: 0,
    }
}

#[test]
fn posts_in_order_once_dependencies_are_done() {
    let s = ping();
    let mut m: Machine<&str> = Machine::default();
    m.load(&s, 0, 2, 4, |_, _| 12).unwrap();
    assert_eq!(m.queues().len(), 2);
    assert_eq!(m.pop_ready(), None, "the copy waits for its receive");
    let (send, recv) = (0, 1);
    assert_eq!(
        m.next_post(recv, &s),
        None,
        "the receive waits for the send"
    );
    assert_eq!(m.next_post(send, &s), Some(0));
    m.posted(send, "s0", None);
    assert_eq!(m.next_post(send, &s), None, "nothing more to send");
    assert_eq!(m.oldest(send).map(|p| p.request), Some("s0"));
    assert_eq!(m.complete_oldest(send, &s), Some(0));
    assert_eq!(m.next_post(recv, &s), Some(1));
    m.posted(recv, "r1", None);
    assert!(m.busy(1));
    assert_eq!(m.complete_oldest(recv, &s), Some(1));
    assert_eq!(m.pop_ready(), Some(2));
    assert!(!m.finished());
    m.complete_local(2, &s);
    assert!(m.finished());
    assert!(!m.busy(1));
}

#[test]
fn a_receive_reduce_is_posted_early_and_applied_when_ready() {
    let s = Schedule {
        steps: vec![
            step(
                Action::Copy {
                    src: span(0, 4),
                    dst: span(4, 4),
                },
                &[],
            ),
            step(
                Action::RecvReduce {
                    peer: 1,
                    dst: span(4, 4),
                    local: span(4, 4),
                },
                &[0],
            ),
        ],
        scratch_bytes: 0,
    };
    let mut m: Machine<u8> = Machine::default();
    assert_eq!(m.load(&s, 0, 2, 4, |_, _| 8).unwrap(), 4, "staging length");
    assert_eq!(m.next_post(0, &s), Some(1), "posted before its dependency");
    m.posted(0, 7, Some(3));
    m.complete_oldest(0, &s);
    assert_eq!(m.pop_ready(), Some(0), "data came, the copy is still due");
    m.complete_local(0, &s);
    assert_eq!(m.pop_ready(), Some(1));
    assert_eq!(m.take_arrived(1), Some(3));
    m.complete_local(1, &s);
    assert!(m.finished());
}

#[test]
fn the_in_flight_limit_holds() {
    let steps = (0..5)
        .map(|i| {
            step(
                Action::Send {
                    peer: 1,
                    src: span(i, 1),
                },
                &[],
            )
        })
        .collect();
    let s = Schedule {
        steps,
        scratch_bytes: 0,
    };
    let mut m: Machine<()> = Machine::default();
    m.load(&s, 0, 2, 2, |_, _| 8).unwrap();
    m.posted(0, (), None);
    m.posted(0, (), None);
    assert_eq!(m.next_post(0, &s), None);
    m.complete_oldest(0, &s);
    assert_eq!(m.next_post(0, &s), Some(2));
}

#[test]
fn bad_steps_are_refused_with_their_index() {
    let mut m: Machine<()> = Machine::default();
    let cases = [
        (
            Action::Send {
                peer: 0,
                src: span(0, 4),
            },
            "talks to rank 0",
        ),
        (
            Action::Send {
                peer: 5,
                src: span(0, 4),
            },
            "talks to rank 5",
        ),
        (
            Action::Recv {
                peer: 1,
                dst: span(6, 4),
            },
            "beyond its 8 bytes",
        ),
        (
            Action::Copy {
                src: span(0, 4),
                dst: span(4, 2),
            },
            "different lengths",
        ),
    ];
    for (a, want) in cases {
        let s = Schedule {
            steps: vec![step(a, &[])],
            scratch_bytes: 0,
        };
        let e = m.load(&s, 0, 2, 1, |_, _| 8).unwrap_err();
        assert!(e.contains("step 0") && e.contains(want), "{e}");
        m.recycle();
    }
    let s = Schedule {
        steps: vec![step(Action::Finalize { span: span(0, 4) }, &[0])],
        scratch_bytes: 0,
    };
    assert!(m
        .load(&s, 0, 2, 1, |_, _| 8)
        .unwrap_err()
        .contains("later step"));
}

#[test]
fn the_pace_spins_then_waits_then_times_out_on_a_virtual_clock() {
    let cfg = PaceConfig {
        spin: 3,
        yield_when_idle: true,
        timeout: Duration::from_secs(2),
    };
    let mut clock = VirtualClock::default();
    let mut pace = Pace::default();
    for _ in 0..3 {
        assert_eq!(pace.idle(&cfg, &clock), Idle::Yield);
    }
    let mut notices = 0;
    loop {
        match pace.idle(&cfg, &clock) {
            Idle::Wait {
                sleep,
                notice_stall,
                waited,
            } => {
                assert!(waited < cfg.timeout);
                notices += usize::from(notice_stall);
                if notice_stall {
                    assert!(waited >= STALL_NOTICE);
                }
                clock.advance(sleep);
            }
            Idle::TimedOut { waited } => {
                assert_eq!(waited, cfg.timeout);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(notices, 1, "the stall is noticed once");
    assert_eq!(clock.elapsed(), cfg.timeout);
    assert!(pace.moved(), "the notice is withdrawn when something moves");
    assert_eq!(pace.idle(&cfg, &clock), Idle::Yield);
    let _ = clock.now();
}

#[test]
fn a_spinning_rank_spins_past_its_count_for_spin_min() {
    let cfg = PaceConfig {
        spin: 2,
        yield_when_idle: false,
        timeout: Duration::from_secs(1),
    };
    let mut clock = VirtualClock::default();
    let mut pace = Pace::default();
    for _ in 0..4 {
        assert!(matches!(pace.idle(&cfg, &clock), Idle::Spin { .. }));
    }
    clock.advance(super::SPIN_MIN);
    assert!(matches!(pace.idle(&cfg, &clock), Idle::Wait { .. }));
}
