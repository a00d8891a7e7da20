//! Consumer-group membership (`subscribe=True`): the group assigns the reader its partitions
//! and moves them on rebalances (cooperative-sticky, so a rebalance only touches the
//! partitions that move). The reader handles each rebalance itself, between elements:
//! a revoked partition's emitted position is committed before it is released, and an
//! assigned partition starts at the group's committed offset (never below a restored
//! checkpoint's position for it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{kafka_error, Reader, Stream};
use crate::error::{Error, ErrorKind, Result};
use crate::queue::PartitionQueue;
use crate::spec::{Range, StreamSpec, UNLIMITED};
use crate::state::StreamState;

/// A rebalance as librdkafka announced it, waiting for the reader to act on it.
#[derive(Debug)]
pub(super) enum Rebalance {
    /// These partitions are now this member's.
    Assign(Vec<(String, i32)>),
    /// These partitions leave this member; `lost` when the group already gave them away
    /// (session timeout), so committing for them would be wrong.
    Revoke {
        partitions: Vec<(String, i32)>,
        lost: bool,
    },
}

/// The consumer's context: records rebalances for the reader instead of acting on them in
/// librdkafka's callback (librdkafka waits until the reader calls incremental
/// assign/unassign), except while closing, when nothing is left to commit or read.
#[derive(Default)]
pub(crate) struct ReaderContext {
    pending: Mutex<Vec<Rebalance>>,
    closing: AtomicBool,
}

impl ReaderContext {
    /// From now on rebalances are acted on in the callback (the reader is going away);
    /// those still waiting are acted on now, so librdkafka's close does not wait for them.
    pub(super) fn close(&self, consumer: &BaseConsumer<Self>) {
        self.closing.store(true, Ordering::SeqCst);
        for rebalance in self.take() {
            let mut tpl = TopicPartitionList::new();
            let (partitions, assign) = match &rebalance {
                Rebalance::Assign(p) => (p, true),
                Rebalance::Revoke { partitions, .. } => (partitions, false),
            };
            for (topic, partition) in partitions {
                tpl.add_partition(topic, *partition);
            }
            act_unattended(consumer, &tpl, assign);
        }
    }

    fn take(&self) -> Vec<Rebalance> {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// Completes a rebalance with nothing to read or commit (the reader is closing).
fn act_unattended(consumer: &BaseConsumer<ReaderContext>, tpl: &TopicPartitionList, assign: bool) {
    // Best effort: a failure here only means the group already moved on.
    let _ = if assign {
        consumer.incremental_assign(tpl)
    } else {
        consumer.incremental_unassign(tpl)
    };
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for ReaderContext {}

impl ConsumerContext for ReaderContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if self.closing.load(Ordering::SeqCst) {
            act_unattended(consumer, tpl, assign);
            return;
        }
        let event = if assign {
            Rebalance::Assign(partitions_of(tpl))
        } else {
            Rebalance::Revoke {
                partitions: partitions_of(tpl),
                lost: consumer.assignment_lost(),
            }
        };
        self.pending.lock().push(event);
    }
}

/// What a group member remembers beyond its streams.
pub(super) struct Membership {
    /// Subscribed topics, in entry order (also the order of streams: by topic, then partition).
    topics: Vec<String>,
    /// `subscribe` is called on the first read, so that a restore right after the iterator
    /// is made does not join the group twice.
    subscribed: bool,
    /// Positions from a restored checkpoint: an assigned partition never starts below them.
    floors: HashMap<(String, i32), StreamState>,
}

impl Membership {
    pub(super) fn new(topics: Vec<String>, restored: Vec<StreamState>) -> Self {
        Membership {
            topics,
            subscribed: false,
            floors: restored
                .into_iter()
                .map(|s| ((s.spec.topic.clone(), s.spec.partition), s))
                .collect(),
        }
    }

    /// Where a stream of `topic:partition` sorts among the member's streams.
    fn order(&self, topic: &str, partition: i32) -> (usize, i32) {
        let topic = self.topics.iter().position(|t| t == topic);
        (topic.unwrap_or(usize::MAX), partition)
    }
}

impl Reader {
    /// Joins the group on the first call, then acts on the rebalances librdkafka announced.
    pub(super) fn serve_group(&mut self) -> Result<()> {
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        if !group.subscribed {
            let topics: Vec<&str> = group.topics.iter().map(String::as_str).collect();
            self.consumer
                .subscribe(&topics)
                .map_err(|e| kafka_error("subscribing to the topics", &e))?;
            group.subscribed = true;
        }
        for rebalance in self.consumer.context().take() {
            match rebalance {
                Rebalance::Assign(partitions) => self.take_partitions(partitions)?,
                Rebalance::Revoke { partitions, lost } => {
                    self.release_partitions(&partitions, lost)?
                }
            }
        }
        Ok(())
    }

    /// Starts reading newly assigned partitions at the group's committed offset, or the
    /// restored checkpoint's position if that is further, or else the log start.
    fn take_partitions(&mut self, partitions: Vec<(String, i32)>) -> Result<()> {
        let deadline = self.spec.metadata_deadline();
        let mut asked = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            asked.add_partition(topic, *partition);
        }
        let committed = self
            .consumer
            .committed_offsets(asked, deadline)
            .map_err(|e| kafka_error("committed offsets of newly assigned partitions", &e))?;
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in partitions {
            let name = format!("{topic}:{partition}");
            let stored = match committed
                .find_partition(&topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => Some(o),
                _ => None,
            };
            let group = self.group.as_ref().expect("a group member");
            let floor = group.floors.get(&(topic.clone(), partition));
            let start = match stored.max(floor.map(|f| f.next_offset)) {
                Some(offset) => offset,
                None => {
                    self.consumer
                        .fetch_watermarks(&topic, partition, deadline)
                        .map_err(|e| kafka_error(&format!("watermarks of {name}"), &e))?
                        .0
                }
            };
            let partition_time = floor.map_or(-1, |f| f.partition_time);
            let order = group.order(&topic, partition);
            let mut stream = Stream::from_state(StreamState {
                spec: StreamSpec {
                    topic,
                    partition,
                    ranges: vec![Range {
                        start,
                        last: UNLIMITED,
                    }],
                },
                next_offset: start,
                finished: false,
                partition_time,
            });
            // Split the queue before assigning, so no message reaches the main queue.
            stream.queue = Some(
                PartitionQueue::new(
                    &self.consumer,
                    &stream.spec.topic,
                    partition,
                    self.wake.clone(),
                )
                .ok_or_else(|| Error::new(ErrorKind::Internal, format!("no queue for {name}")))?,
            );
            assignment
                .add_partition_offset(&stream.spec.topic, partition, Offset::Offset(start))
                .map_err(|e| kafka_error(&name, &e))?;
            let at = self
                .streams
                .partition_point(|s| group.order(&s.spec.topic, s.spec.partition) < order);
            self.streams.insert(at, stream);
        }
        self.renumber_heads();
        self.consumer
            .incremental_assign(&assignment)
            .map_err(|e| kafka_error("taking the partitions the group assigned", &e))
    }

    /// Stops reading revoked partitions: commits what was emitted from them (unless the
    /// group already gave them away), so their next owner starts right after it.
    fn release_partitions(&mut self, partitions: &[(String, i32)], lost: bool) -> Result<()> {
        let leaving = |s: &Stream| {
            partitions
                .iter()
                .any(|(t, p)| *t == s.spec.topic && *p == s.spec.partition)
        };
        if !lost {
            let mut positions = TopicPartitionList::new();
            for s in self.streams.iter().filter(|s| leaving(s)) {
                positions
                    .add_partition_offset(
                        &s.spec.topic,
                        s.spec.partition,
                        Offset::Offset(s.next_offset),
                    )
                    .map_err(|e| kafka_error(&s.spec.name(), &e))?;
            }
            // Synchronous: the next owner reads this commit as its start. Should it fail, the
            // next owner starts at the last successful commit: the documented duplicates.
            if positions.count() > 0 {
                let _ = self.consumer.commit(&positions, CommitMode::Sync);
            }
        }
        // Messages of released partitions go back to librdkafka before the unassign.
        self.current = None;
        self.batch.clear();
        self.streams.retain(|s| !leaving(s));
        self.renumber_heads();
        let mut released = TopicPartitionList::new();
        for (topic, partition) in partitions {
            released.add_partition(topic, *partition);
        }
        self.consumer
            .incremental_unassign(&released)
            .map_err(|e| kafka_error("releasing the partitions the group revoked", &e))
    }

    /// Buffered heads name their stream by index; streams moved.
    fn renumber_heads(&mut self) {
        for (index, stream) in self.streams.iter_mut().enumerate() {
            if let Some(head) = stream.head.as_mut() {
                head.stream = index;
            }
        }
    }
}
