//! The time-ordered merge rule (DESIGN.md §2.2), pure and free of Kafka types.
//!
//! Each stream exposes at most one buffered head. The next element is the head with the
//! smallest `(timestamp, stream index, offset)`, but only once every unfinished stream either
//! has a head or has been caught up (no unread data) for at least the idle timeout: Kafka
//! Streams' `max.task.idle.ms` rule. A stream with unread data is always waited for.

use std::time::{Duration, Instant};

/// What the merge needs to know about one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// `(timestamp, offset)` of the buffered head, if any.
    pub head: Option<(i64, i64)>,
    /// The stream will produce nothing more.
    pub finished: bool,
    /// When the stream was last seen caught up with no head; `None` while it has unread data.
    pub caught_up_since: Option<Instant>,
}

/// The merge's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Emit the head of this stream. `passed_idle` says an idle stream was passed over.
    Emit {
        /// Stream index.
        stream: usize,
        /// Some unfinished stream without a head was skipped because it was idle.
        passed_idle: bool,
    },
    /// Nothing may be emitted yet. New data wakes the caller; so does `until` when set (the
    /// moment the last blocking stream becomes idle long enough to be passed over).
    Wait {
        /// Re-decide at this instant even without new data.
        until: Option<Instant>,
    },
    /// Every stream is finished.
    End,
}

/// Decides what to do next.
pub fn decide(gates: &[Gate], now: Instant, idle_timeout: Duration) -> Decision {
    let mut best: Option<(i64, usize, i64)> = None;
    let mut passed_idle = false;
    let mut blocked = false;
    let mut until: Option<Instant> = None;
    let mut all_finished = true;
    for (i, gate) in gates.iter().enumerate() {
        if let Some((ts, offset)) = gate.head {
            all_finished = false;
            let key = (ts, i, offset);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
            continue;
        }
        if gate.finished {
            continue;
        }
        all_finished = false;
        match gate.caught_up_since {
            Some(since) if now.duration_since(since) >= idle_timeout => passed_idle = true,
            Some(since) => {
                blocked = true;
                let ready = since + idle_timeout;
                until = Some(until.map_or(ready, |u: Instant| u.max(ready)));
            }
            // A stream with unread data is waited for without limit.
            None => return Decision::Wait { until: None },
        }
    }
    if all_finished {
        return Decision::End;
    }
    match best {
        Some((_, stream, _)) if !blocked => Decision::Emit {
            stream,
            passed_idle,
        },
        _ => Decision::Wait { until },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_millis(100);

    fn head(ts: i64, offset: i64) -> Gate {
        Gate {
            head: Some((ts, offset)),
            finished: false,
            caught_up_since: None,
        }
    }
    fn lagging() -> Gate {
        Gate {
            head: None,
            finished: false,
            caught_up_since: None,
        }
    }
    fn finished() -> Gate {
        Gate {
            head: None,
            finished: true,
            caught_up_since: None,
        }
    }
    fn idle_since(t: Instant) -> Gate {
        Gate {
            head: None,
            finished: false,
            caught_up_since: Some(t),
        }
    }

    #[test]
    fn smallest_timestamp_then_stream_index_wins() {
        let now = Instant::now();
        let d = decide(&[head(5, 0), head(3, 9), head(3, 1)], now, IDLE);
        assert_eq!(
            d,
            Decision::Emit {
                stream: 1,
                passed_idle: false
            }
        );
        let d = decide(&[head(5, 0), finished(), head(4, 0)], now, IDLE);
        assert_eq!(
            d,
            Decision::Emit {
                stream: 2,
                passed_idle: false
            }
        );
    }

    #[test]
    fn lagging_stream_is_always_waited_for() {
        let now = Instant::now();
        assert_eq!(
            decide(&[head(1, 0), lagging()], now, IDLE),
            Decision::Wait { until: None }
        );
        let long_ago = now - Duration::from_secs(10);
        assert_eq!(
            decide(&[head(1, 0), idle_since(long_ago), lagging()], now, IDLE),
            Decision::Wait { until: None }
        );
    }

    #[test]
    fn idle_stream_blocks_until_timeout_then_is_passed_over() {
        let t0 = Instant::now();
        let gates = [head(1, 0), idle_since(t0)];
        assert_eq!(
            decide(&gates, t0, IDLE),
            Decision::Wait {
                until: Some(t0 + IDLE)
            }
        );
        assert_eq!(
            decide(&gates, t0 + IDLE, IDLE),
            Decision::Emit {
                stream: 0,
                passed_idle: true
            }
        );
    }

    #[test]
    fn waits_for_the_latest_idle_deadline() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(30);
        let gates = [head(1, 0), idle_since(t0), idle_since(t1)];
        assert_eq!(
            decide(&gates, t1, IDLE),
            Decision::Wait {
                until: Some(t1 + IDLE)
            }
        );
    }

    #[test]
    fn end_only_when_everything_finished() {
        let now = Instant::now();
        assert_eq!(decide(&[finished(), finished()], now, IDLE), Decision::End);
        assert_eq!(decide(&[], now, IDLE), Decision::End);
        assert_eq!(
            decide(&[finished(), idle_since(now)], now, IDLE),
            Decision::Wait {
                until: Some(now + IDLE)
            }
        );
    }
}
