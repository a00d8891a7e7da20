//! A validated dataset definition: everything the op's inputs say, checked without a broker.

use std::time::Duration;

use crate::config::{last_value, Settings};
use crate::error::{Error, Result};
use crate::spec::{parse_entries, Assignment, Entry, Start};

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
        if timeout_ms <= 0 {
            return Err(Error::invalid(format!(
                "timeout must be > 0 milliseconds, got {timeout_ms}"
            )));
        }
        let entries = parse_entries(topics)?;
        let settings = Settings::new(servers, group, config_global, config_topic)?;
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
        })
    }

    /// The same dataset reading only `assignment`'s share of the partitions.
    pub fn with_assignment(self, assignment: Assignment) -> Self {
        DatasetSpec { assignment, ..self }
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

    /// Deadline for metadata requests at iterator start, after which brokers count as
    /// unreachable.
    pub fn metadata_deadline(&self) -> Duration {
        (self.timeout * 2).max(Duration::from_secs(10))
    }
}
