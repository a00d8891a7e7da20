//! Consumer-group membership (`subscribe=True`): the group assigns the reader its partitions
//! and moves them on rebalances (cooperative-sticky, so a rebalance only touches the
//! partitions that move). The reader handles each rebalance itself, between elements:
//! a revoked partition's emitted position is committed before it is released, and an
//! assigned partition starts at the group's committed offset (never below a restored
//! checkpoint's position for it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{kafka_error, Reader, Stream, CLOSE_WAIT};
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
    /// librdkafka's text for the last client error (e.g. why a TLS handshake failed); the
    /// error event itself carries only a code.
    last_error: Mutex<Option<String>>,
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

    /// librdkafka's description of the last client error, if one came since the last call.
    pub(super) fn take_last_error(&self) -> Option<String> {
        self.last_error.lock().take()
    }

    fn take(&self) -> Vec<Rebalance> {
        std::mem::take(&mut *self.pending.lock())
    }

    /// Returns rebalances not yet acted on, ahead of any that arrived since.
    fn put_back(&self, rebalances: Vec<Rebalance>) {
        let mut pending = self.pending.lock();
        let newer = std::mem::replace(&mut *pending, rebalances);
        pending.extend(newer);
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

impl ClientContext for ReaderContext {
    fn error(&self, _: rdkafka::error::KafkaError, reason: &str) {
        // librdkafka's own text: broker name and cause. It may quote configuration (SASL
        // errors can), so the reader shows it only for TLS failures.
        *self.last_error.lock() = Some(reason.to_string());
    }
}

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
    /// Left the group after reading everything it owned (`eof`).
    left: bool,
    /// Positions from a restored checkpoint: an assigned partition never starts below them.
    floors: HashMap<(String, i32), StreamState>,
}

impl Membership {
    pub(super) fn new(topics: Vec<String>, restored: Vec<StreamState>) -> Self {
        Membership {
            topics,
            subscribed: false,
            left: false,
            floors: restored
                .into_iter()
                .map(|s| ((s.spec.topic.clone(), s.spec.partition), s))
                .collect(),
        }
    }

    /// Whether the member left the group (its final commit is done).
    pub(super) fn has_left(&self) -> bool {
        self.left
    }

    /// Where a stream of `topic:partition` sorts among the member's streams.
    fn order(&self, topic: &str, partition: i32) -> (usize, i32) {
        let topic = self.topics.iter().position(|t| t == topic);
        (topic.unwrap_or(usize::MAX), partition)
    }
}

impl Reader {
    /// Joins the group on the first call, then acts on the rebalances librdkafka announced.
    /// A rebalance that fails (e.g. the committed offsets cannot be read) is kept, with the
    /// ones after it, and retried on the next call; the error is returned.
    pub(super) fn serve_group(&mut self) -> Result<()> {
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        if group.left {
            return Ok(());
        }
        if !group.subscribed {
            let topics: Vec<&str> = group.topics.iter().map(String::as_str).collect();
            self.consumer
                .subscribe(&topics)
                .map_err(|e| kafka_error("subscribing to the topics", &e))?;
            group.subscribed = true;
        }
        let mut rebalances = self.consumer.context().take().into_iter();
        while let Some(rebalance) = rebalances.next() {
            let done = match &rebalance {
                Rebalance::Assign(partitions) => self.take_partitions(partitions),
                Rebalance::Revoke { partitions, lost } => {
                    self.release_partitions(partitions, *lost)
                }
            };
            if let Err(e) = done {
                self.consumer
                    .context()
                    .put_back(std::iter::once(rebalance).chain(rebalances).collect());
                self.wake
                    .main_ready
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Starts reading newly assigned partitions at the group's committed offset, or the
    /// restored checkpoint's position if that is further, or else the log start. Nothing
    /// changes unless every step succeeds.
    fn take_partitions(&mut self, partitions: &[(String, i32)]) -> Result<()> {
        let deadline = self.spec.metadata_deadline();
        let mut asked = TopicPartitionList::new();
        for (topic, partition) in partitions {
            asked.add_partition(topic, *partition);
        }
        let committed = self
            .consumer
            .committed_offsets(asked, deadline)
            .map_err(|e| kafka_error("committed offsets of newly assigned partitions", &e))?;
        let group = self.group.as_ref().expect("a group member");
        let mut assignment = TopicPartitionList::new();
        let mut taken = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let (topic, partition) = (topic.clone(), *partition);
            let name = format!("{topic}:{partition}");
            let stored = match committed
                .find_partition(&topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => Some(o),
                _ => None,
            };
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
            // Split the queue before assigning, so no message reaches the main queue.
            let queue = PartitionQueue::new(&self.consumer, &topic, partition, self.wake.clone())
                .ok_or_else(|| {
                Error::new(ErrorKind::Internal, format!("no queue for {name}"))
            })?;
            assignment
                .add_partition_offset(&topic, partition, Offset::Offset(start))
                .map_err(|e| kafka_error(&name, &e))?;
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
                partition_time: floor.map_or(-1, |f| f.partition_time),
            });
            stream.queue = Some(queue);
            taken.push(stream);
        }
        // A partition this member read to its end before (eof) was paused; it fetches again.
        self.consumer
            .resume(&assignment)
            .map_err(|e| kafka_error("resuming the partitions the group assigned", &e))?;
        self.consumer
            .incremental_assign(&assignment)
            .map_err(|e| kafka_error("taking the partitions the group assigned", &e))?;
        for stream in taken {
            let order = group.order(&stream.spec.topic, stream.spec.partition);
            let at = self
                .streams
                .partition_point(|s| group.order(&s.spec.topic, s.spec.partition) < order);
            self.streams.insert(at, stream);
        }
        self.renumber_heads();
        Ok(())
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
            // Waited for (briefly): the next owner starts where this commit says. Should it
            // fail or time out, the next owner starts at the last successful commit: the
            // documented duplicates.
            self.commit_and_wait(leaving);
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

    /// With `eof`, a member whose partitions all ended leaves the group (after committing),
    /// so that its partitions, and any the group would hand it later, go to members that
    /// still read: an ended iterator is never polled again.
    pub(super) fn leave_group(&mut self) {
        let Some(group) = self.group.as_mut() else {
            return;
        };
        if group.left || !group.subscribed {
            return;
        }
        group.left = true;
        let deadline = Instant::now() + CLOSE_WAIT;
        self.commit_and_wait(|_| true);
        // The revocation that unsubscribing starts completes on its own from here.
        self.consumer.context().close(&self.consumer);
        self.consumer.unsubscribe();
        while self.consumer.assignment().is_ok_and(|a| a.count() > 0) && Instant::now() < deadline {
            self.consumer.poll(Duration::from_millis(5));
        }
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
