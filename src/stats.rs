//! Per-iterator counters, in a process-wide registry where anyone can read a snapshot of
//! every live iterator as JSON; and, on request, one log line per interval.
//!
//! The reader is the only writer of its counters and positions: it updates them per element
//! with plain (unlocked) atomic stores, so a snapshot is exact up to the last emitted
//! element; watermarks when it takes fetched messages; the partition list (and whether each
//! finished) from its slow path, at most every 0.5 s.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Environment variable: seconds between the periodic log line of each iterator (unset or 0:
/// no line).
pub const LOG_INTERVAL_ENV: &str = "KAFKA_DATASET_STATS_LOG_SECONDS";

/// What a reader counts, since it started (restoring a position into the same reader does
/// not reset them; TensorFlow restores into a new iterator, which starts from zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Elements emitted.
    pub messages: u64,
    /// Key and value bytes of the emitted elements.
    pub bytes: u64,
    /// Elements emitted after an idle partition was passed over that were older than the last
    /// emitted timestamp.
    pub late: u64,
    /// Elements emitted while an idle partition (caught up for `timeout`) was passed over.
    pub idle_passes: u64,
    /// Offsets the entries wanted that the opt-in reset policy skipped because the position
    /// was below the log start (with `latest`, also those still in the log).
    pub skipped: u64,
    /// How far the opt-in reset policy moved positions back because they lay beyond the end
    /// of the log (a start offset past it, a log that was truncated or recreated).
    pub rewound: u64,
    /// Offsets the freshness policy (`max_lag_ms`) skipped because their messages were older
    /// than the window.
    pub stale: u64,
    /// Rebalances a consumer-group member acted on (assignments and revocations).
    pub rebalances: u64,
}

/// What a reader's stream updates as it reads, for the stats to show at any time.
#[derive(Debug)]
pub struct SharedPosition {
    /// Next offset not yet emitted (stored on every element).
    pub next_offset: AtomicI64,
    /// The partition's high watermark as librdkafka last saw it in a fetch response, stored
    /// whenever the stream takes fetched messages (-1: not yet known).
    pub high_watermark: AtomicI64,
    /// Offsets of this partition skipped by the reset policy (see [`Counters::skipped`]).
    pub skipped: AtomicU64,
    /// How far the reset policy moved this partition back (see [`Counters::rewound`]).
    pub rewound: AtomicU64,
    /// Offsets of this partition skipped as stale (see [`Counters::stale`]).
    pub stale: AtomicU64,
}

impl SharedPosition {
    /// A position at `next_offset`, watermark unknown.
    pub fn new(next_offset: i64) -> Self {
        SharedPosition {
            next_offset: AtomicI64::new(next_offset),
            high_watermark: AtomicI64::new(-1),
            skipped: AtomicU64::new(0),
            rewound: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }
}

/// One partition as last published.
#[derive(Clone, Debug)]
pub struct PartitionStats {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Position and watermark, as the reader's stream keeps them.
    pub position: Arc<SharedPosition>,
    /// The stream emitted its last element.
    pub finished: bool,
}

impl PartitionStats {
    /// Messages in the log not yet emitted; `None` before the high watermark is known, 0 once
    /// the stream finished.
    pub fn lag(&self) -> Option<i64> {
        let high = self.high_watermark();
        if self.finished {
            Some(0)
        } else if high < 0 {
            None
        } else {
            Some((high - self.next_offset()).max(0))
        }
    }

    /// Next offset not yet emitted.
    pub fn next_offset(&self) -> i64 {
        self.position.next_offset.load(Ordering::Relaxed)
    }

    /// The high watermark last seen (-1: not known).
    pub fn high_watermark(&self) -> i64 {
        self.position.high_watermark.load(Ordering::Relaxed)
    }

    /// Offsets of this partition skipped by the reset policy, rewound by it, and skipped as
    /// stale, counted as they happen.
    pub fn moved(&self) -> (u64, u64, u64) {
        let p = &self.position;
        (
            p.skipped.load(Ordering::Relaxed),
            p.rewound.load(Ordering::Relaxed),
            p.stale.load(Ordering::Relaxed),
        )
    }
}

/// The lag over `partitions`; unknown while any partition's is.
fn total_lag(partitions: &[PartitionStats]) -> Option<i64> {
    partitions.iter().map(PartitionStats::lag).sum()
}

/// Adds to a counter that has one writer: a plain load and store, no locked instruction.
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// A reader's entry in the registry; it leaves the registry when the reader drops it.
pub struct Published {
    id: u64,
    /// Topics and group, to tell iterators apart.
    topics: Vec<String>,
    group: String,
    messages: AtomicU64,
    bytes: AtomicU64,
    late: AtomicU64,
    idle_passes: AtomicU64,
    skipped: AtomicU64,
    rewound: AtomicU64,
    stale: AtomicU64,
    rebalances: AtomicU64,
    partitions: Mutex<Vec<PartitionStats>>,
}

struct Registry {
    next_id: u64,
    readers: Vec<Weak<Published>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_id: 1,
    readers: Vec::new(),
});

/// Registers a new reader reading `topics` (for group `group`, may be empty).
pub fn register(topics: Vec<String>, group: String) -> Arc<Published> {
    let mut registry = REGISTRY.lock();
    registry.readers.retain(|r| r.strong_count() > 0);
    let published = Arc::new(Published {
        id: registry.next_id,
        topics,
        group,
        messages: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        late: AtomicU64::new(0),
        idle_passes: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        rewound: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        rebalances: AtomicU64::new(0),
        partitions: Mutex::default(),
    });
    registry.next_id += 1;
    registry.readers.push(Arc::downgrade(&published));
    published
}

impl Published {
    /// The reader's number, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Counts one emitted element of `bytes` key and value bytes. Only the owning reader
    /// calls this (see [`bump`]).
    pub fn count_element(&self, bytes: u64, idle_pass: bool, late: bool) {
        bump(&self.messages, 1);
        bump(&self.bytes, bytes);
        if idle_pass {
            bump(&self.idle_passes, 1);
        }
        if late {
            bump(&self.late, 1);
        }
    }

    /// Counts offsets of `partition` skipped by the reset policy. Only the owning reader calls
    /// this (as for every `count_` method).
    pub fn count_skipped(&self, partition: &SharedPosition, offsets: u64) {
        bump(&self.skipped, offsets);
        bump(&partition.skipped, offsets);
    }

    /// Counts offsets a position of `partition` moved back by the reset policy.
    pub fn count_rewound(&self, partition: &SharedPosition, offsets: u64) {
        bump(&self.rewound, offsets);
        bump(&partition.rewound, offsets);
    }

    /// Counts offsets of `partition` skipped as stale by the freshness policy.
    pub fn count_stale(&self, partition: &SharedPosition, offsets: u64) {
        bump(&self.stale, offsets);
        bump(&partition.stale, offsets);
    }

    /// Counts one rebalance acted on. Only the owning reader calls this.
    pub fn count_rebalance(&self) {
        bump(&self.rebalances, 1);
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            idle_passes: self.idle_passes.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            rewound: self.rewound.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            rebalances: self.rebalances.load(Ordering::Relaxed),
        }
    }

    /// Replaces the published partitions (reusing their storage).
    pub fn set_partitions(&self, fill: impl FnOnce(&mut Vec<PartitionStats>)) {
        fill(&mut self.partitions.lock());
    }

    fn write_json(&self, out: &mut String) {
        let c = &self.counters();
        let partitions = self.partitions.lock();
        let _ = write!(out, "{{\"id\":{},\"topics\":[", self.id);
        for (i, topic) in self.topics.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(out, topic);
        }
        out.push_str("],\"group\":");
        json_string(out, &self.group);
        let _ = write!(
            out,
            ",\"messages\":{},\"bytes\":{},\"late_elements\":{},\"idle_passes\":{},\"skipped_offsets\":{},\"rewound_offsets\":{},\"stale_offsets\":{},\"rebalances\":{},\"lag\":",
            c.messages, c.bytes, c.late, c.idle_passes, c.skipped, c.rewound, c.stale, c.rebalances
        );
        json_optional(out, total_lag(&partitions));
        out.push_str(",\"partitions\":[");
        for (i, p) in partitions.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"topic\":");
            json_string(out, &p.topic);
            let _ = write!(
                out,
                ",\"partition\":{},\"next_offset\":{},\"high_watermark\":",
                p.partition,
                p.next_offset()
            );
            let high = p.high_watermark();
            json_optional(out, (high >= 0).then_some(high));
            out.push_str(",\"lag\":");
            json_optional(out, p.lag());
            let (skipped, rewound, stale) = p.moved();
            let _ = write!(
                out,
                ",\"finished\":{},\"skipped_offsets\":{skipped},\"rewound_offsets\":{rewound},\"stale_offsets\":{stale}}}",
                p.finished
            );
        }
        out.push_str("]}");
    }

    /// One log line: counters, rates since `previous` (`elapsed` ago), and lag.
    fn log_line(&self, previous: &Counters, elapsed: Duration) -> String {
        let c = &self.counters();
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let lag = total_lag(&self.partitions.lock());
        format!(
            "kafka-dataset: iterator {} ({}): {} messages ({:.0}/s), {:.1} MiB ({:.2} MiB/s), lag {}, late {}, idle passes {}, skipped {}, rewound {}, stale {}",
            self.id,
            self.topics.join(","),
            c.messages,
            (c.messages - previous.messages) as f64 / seconds,
            c.bytes as f64 / f64::from(1 << 20),
            (c.bytes - previous.bytes) as f64 / f64::from(1 << 20) / seconds,
            lag.map_or_else(|| "unknown".to_string(), |l| l.to_string()),
            c.late,
            c.idle_passes,
            c.skipped,
            c.rewound,
            c.stale
        )
    }
}

/// Every live reader's published counters and partitions, as a JSON document:
/// `{"iterators": [{"id", "topics", "group", "messages", "bytes", "late_elements",
/// "idle_passes", "skipped_offsets", "rewound_offsets", "stale_offsets", "rebalances", "lag",
/// "partitions":
/// [{"topic", "partition", "next_offset", "high_watermark", "lag", "finished",
/// "skipped_offsets", "rewound_offsets", "stale_offsets"}]}]}`; unknown
/// values are `null`.
pub fn snapshot_json() -> String {
    let readers: Vec<Arc<Published>> = REGISTRY
        .lock()
        .readers
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let mut out = String::from("{\"iterators\":[");
    for (i, reader) in readers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        reader.write_json(&mut out);
    }
    out.push_str("]}");
    out
}

/// The periodic log line of one reader (when [`LOG_INTERVAL_ENV`] asks for it).
pub struct LogSchedule {
    interval: Duration,
    due: Instant,
    since: Instant,
    previous: Counters,
}

impl LogSchedule {
    /// From the environment; `None` when no line is wanted (unset, 0, or not a number).
    pub fn from_env() -> Option<Self> {
        let seconds: f64 = std::env::var(LOG_INTERVAL_ENV).ok()?.trim().parse().ok()?;
        let interval = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())?;
        let now = Instant::now();
        Some(LogSchedule {
            interval,
            due: now + interval,
            since: now,
            previous: Counters::default(),
        })
    }

    /// Writes the line to stderr when it is due at `now`.
    pub fn maybe_log(&mut self, now: Instant, published: &Published) {
        if now < self.due {
            return;
        }
        eprintln!("{}", published.log_line(&self.previous, now - self.since));
        self.previous = published.counters();
        self.since = now;
        self.due = now + self.interval;
    }
}

fn json_optional(out: &mut String, value: Option<i64>) {
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

/// Appends `text` as a JSON string.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(next_offset: i64, high_watermark: i64, finished: bool) -> PartitionStats {
        let position = SharedPosition::new(next_offset);
        position
            .high_watermark
            .store(high_watermark, Ordering::Relaxed);
        PartitionStats {
            topic: "t".into(),
            partition: 0,
            position: Arc::new(position),
            finished,
        }
    }

    #[test]
    fn lag_is_unknown_until_a_watermark_is_seen_and_zero_once_finished() {
        assert_eq!(partition(5, -1, false).lag(), None);
        assert_eq!(partition(5, 12, false).lag(), Some(7));
        assert_eq!(partition(15, 12, false).lag(), Some(0));
        assert_eq!(partition(5, 12, true).lag(), Some(0));
    }

    #[test]
    fn snapshot_lists_live_readers_only_and_escapes_names() {
        let published = register(vec!["a\"b".into()], "g\\1\n".into());
        published.count_element(10, false, false);
        published.count_element(10, true, false);
        published.count_element(10, true, true);
        published.count_skipped(&SharedPosition::new(0), 4);
        published.count_rewound(&SharedPosition::new(0), 6);
        published.set_partitions(|p| {
            p.push(partition(3, 10, false));
            p.push(partition(2, -1, false));
        });
        let id = published.id();
        let json = snapshot_json();
        let mine = format!("{{\"id\":{id},\"topics\":[\"a\\\"b\"],\"group\":\"g\\\\1\\u000a\",\"messages\":3,\"bytes\":30,\"late_elements\":1,\"idle_passes\":2,\"skipped_offsets\":4,\"rewound_offsets\":6,\"stale_offsets\":0,\"rebalances\":0,\"lag\":null,");
        assert!(json.contains(&mine), "{json}");
        assert!(
            json.contains("\"high_watermark\":10,\"lag\":7,")
                && json.contains("\"high_watermark\":null,\"lag\":null,"),
            "{json}"
        );
        drop(published);
        assert!(!snapshot_json().contains(&format!("\"id\":{id},")));
    }
}
