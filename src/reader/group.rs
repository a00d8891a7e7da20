//! Consumer-group membership (`subscribe=True`): what a member remembers beyond its streams,
//! and where a newly assigned partition starts. The group assigns the reader its partitions
//! and moves them on rebalances (cooperative-sticky, so a rebalance only touches the
//! partitions that move); the reader acts on each rebalance between elements
//! (`Reader::serve_group`): a revoked partition's emitted position is committed before it is
//! released, and an assigned partition starts at the group's committed offset, never below a
//! restored checkpoint's position for it.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{kafka_error, Consumer};
use crate::error::Result;
use crate::spec::{Range, StreamSpec, UNLIMITED};
use crate::state::StreamState;

/// A group member's own state.
pub(super) struct Membership {
    /// Subscribed topics, in entry order (also the order of streams: by topic, then partition).
    topics: Vec<String>,
    /// Left the group after reading everything it owned (`eof`).
    left: bool,
    /// Positions from a restored checkpoint: an assigned partition never starts below them.
    floors: HashMap<(String, i32), StreamState>,
}

impl Membership {
    /// A member of `topics`' group; `restored` are the positions of a checkpoint (none for a
    /// fresh iterator).
    pub(super) fn new(topics: Vec<String>, restored: Vec<StreamState>) -> Self {
        Membership {
            topics,
            left: false,
            floors: restored
                .into_iter()
                .map(|s| ((s.spec.topic.clone(), s.spec.partition), s))
                .collect(),
        }
    }

    /// The subscribed topics.
    pub(super) fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Whether the member left the group (its final commit is done).
    pub(super) fn has_left(&self) -> bool {
        self.left
    }

    /// Records that the member left the group.
    pub(super) fn set_left(&mut self) {
        self.left = true;
    }

    /// Where a stream of `topic:partition` sorts among the member's streams.
    pub(super) fn order(&self, stream: &StreamSpec) -> (usize, i32) {
        let topic = self.topics.iter().position(|t| *t == stream.topic);
        (topic.unwrap_or(usize::MAX), stream.partition)
    }

    /// The positions newly assigned `partitions` start at: the group's committed offset, or
    /// the restored checkpoint's position if that is further, or else the log start.
    pub(super) fn start_positions(
        &self,
        consumer: &Consumer,
        partitions: &[(String, i32)],
        deadline: Duration,
    ) -> Result<Vec<StreamState>> {
        let mut asked = TopicPartitionList::new();
        for (topic, partition) in partitions {
            asked.add_partition(topic, *partition);
        }
        let committed = consumer
            .committed_offsets(asked, deadline)
            .map_err(|e| kafka_error("committed offsets of newly assigned partitions", &e))?;
        partitions
            .iter()
            .map(|(topic, partition)| {
                let (topic, partition) = (topic.clone(), *partition);
                let stored = match committed
                    .find_partition(&topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) if o >= 0 => Some(o),
                    _ => None,
                };
                let floor = self.floors.get(&(topic.clone(), partition));
                let start = match stored.max(floor.map(|f| f.next_offset)) {
                    Some(offset) => offset,
                    None => {
                        consumer
                            .fetch_watermarks(&topic, partition, deadline)
                            .map_err(|e| {
                                kafka_error(&format!("watermarks of {topic}:{partition}"), &e)
                            })?
                            .0
                    }
                };
                Ok(StreamState {
                    spec: StreamSpec {
                        topic,
                        partition,
                        ranges: vec![Range::new(start, UNLIMITED)],
                    },
                    next_offset: start,
                    finished: false,
                    partition_time: floor.map_or(-1, |f| f.partition_time),
                })
            })
            .collect()
    }
}
