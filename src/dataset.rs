//! A validated dataset definition: everything the op's inputs say, checked without a broker.

use std::time::Duration;

use crate::config::{last_value, CommitMode, Settings};
use crate::error::{Error, Result};
use crate::spec::{parse_entries, Assignment, Entry, Partitions, Start, UNLIMITED};

/// Largest `timeout` (ms): librdkafka's own timeouts are 32-bit milliseconds (~24.8 days).
pub const MAX_TIMEOUT_MS: i64 = i32::MAX as i64;

/// The dataset's inputs, parsed and validated. Immutable and shared by all its iterators.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    /// Subscription entries in the given order.
    pub entries: Vec<Entry>,
    /// Consumer settings.
    pub settings: Settings,
    /// End at the end of each partition's log.
    pub eof: bool,
    /// Wait slice and idle deadline.
    pub timeout: Duration,
    /// Which share of the partitions this dataset's iterators read.
    pub assignment: Assignment,
    /// Each iterator joins the consumer group and reads the partitions the group assigns it
    /// (`subscribe=True`) instead of the partitions the entries name.
    pub subscribe: bool,
}

impl DatasetSpec {
    /// Validates the constructor arguments (DESIGN.md §2.1, §2.6, §2.7).
    pub fn new(
        topics: &[String],
        servers: &str,
        group: &str,
        eof: bool,
        timeout_ms: i64,
        config_global: &[String],
        config_topic: &[String],
    ) -> Result<Self> {
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(Error::invalid(format!(
                "timeout must be in 1..={MAX_TIMEOUT_MS} milliseconds, got {timeout_ms}"
            )));
        }
        let entries = parse_entries(topics)?;
        let settings = Settings::new(servers, group, config_global, config_topic)?;
        if settings.group.is_empty() && settings.commit_mode == CommitMode::Checkpoint {
            return Err(Error::invalid(
                "commit=\"checkpoint\" needs a consumer group (the group argument is empty): it says what the group's committed offsets mean",
            ));
        }
        if settings.group.is_empty() {
            if let Some(e) = entries.iter().find(|e| e.start == Start::Stored) {
                return Err(Error::invalid(format!(
                    "topics entry \"{}\": the \"stored\" start needs a consumer group (the group argument is empty)",
                    e.text
                )));
            }
        }
        Ok(DatasetSpec {
            entries,
            settings,
            eof,
            timeout: Duration::from_millis(timeout_ms as u64),
            assignment: Assignment::SOLE,
            subscribe: false,
        })
    }

    /// The same dataset reading only `assignment`'s share of the partitions.
    pub fn with_assignment(self, assignment: Assignment) -> Self {
        DatasetSpec { assignment, ..self }
    }

    /// The same dataset as a member of its consumer group: the group assigns each iterator
    /// its partitions and moves them on rebalances. Needs a group, whole-topic entries (a
    /// partition without a committed offset starts at its log start) and no worker split
    /// (the group is the split).
    pub fn with_subscription(self) -> Result<Self> {
        if self.settings.group.is_empty() {
            return Err(Error::invalid(
                "subscribe=True needs a consumer group (the group argument is empty)",
            ));
        }
        if self.assignment != Assignment::SOLE {
            return Err(Error::invalid(format!(
                "subscribe=True cannot be combined with num_workers/worker_index (this dataset is {}): the consumer group assigns the partitions",
                self.assignment
            )));
        }
        if self.settings.commit_mode == CommitMode::Checkpoint {
            return Err(Error::invalid(
                "subscribe=True cannot be combined with commit=\"checkpoint\": when the group moves a partition, its next owner starts at the committed offset, so a member commits what it emitted",
            ));
        }
        let whole_topic = |e: &Entry| {
            e.partitions == Partitions::All
                && e.start == Start::Offset(0)
                && e.last == UNLIMITED
                && e.until.is_none()
        };
        if let Some(e) = self.entries.iter().find(|e| !whole_topic(e)) {
            return Err(Error::invalid(format!(
                "topics entry \"{}\": with subscribe=True each entry is a topic name; partitions and offsets come from the consumer group",
                e.text
            )));
        }
        Ok(DatasetSpec {
            subscribe: true,
            ..self
        })
    }

    /// Whether any entry starts at the group's committed offset.
    pub fn uses_stored_offsets(&self) -> bool {
        self.entries.iter().any(|e| e.start == Start::Stored)
    }

    /// How often the offsets of emitted messages are committed when a group is given:
    /// `auto.commit.interval.ms` from `config_global`, else librdkafka's default of 5 s.
    pub fn commit_interval(&self) -> Duration {
        last_value(&self.settings.global, "auto.commit.interval.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(5), Duration::from_millis)
    }

    /// How often an iterator looks for partitions added to the topics of its whole-topic
    /// entries: only for `eof=False` fixed-partition reads (a group member's partitions come
    /// from the group; with `eof` a read ends at the log as seen), `None` otherwise or when
    /// turned off.
    pub fn discovery_interval(&self) -> Option<Duration> {
        let whole_topics = self.entries.iter().any(|e| e.partitions == Partitions::All);
        self.settings
            .discovery_interval
            .filter(|_| whole_topics && !self.eof && !self.subscribe)
    }

    /// After how long without a read a group member's service thread serves its consumer
    /// (see `reader::keeper`): a quarter of `max.poll.interval.ms` (librdkafka's default
    /// 300000), at most 1 s, at least 20 ms.
    pub fn keep_alive_after(&self) -> Duration {
        let max_poll = last_value(&self.settings.global, "max.poll.interval.ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(300_000);
        Duration::from_millis((max_poll / 4).clamp(20, 1000))
    }

    /// Deadline for metadata requests at iterator start, after which brokers count as
    /// unreachable.
    pub fn metadata_deadline(&self) -> Duration {
        (self.timeout * 2).max(Duration::from_secs(10))
    }
}
