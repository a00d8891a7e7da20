//! One iterator's reader: a single rdkafka `BaseConsumer` with one queue per partition, the
//! time-ordered merge on top, and the position it saves and restores.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{
    create_consumer, epoch_ms_now, is_fatal, is_fatal_code, kafka_error, Consumer, LiveCluster,
    Rebalance,
};
use crate::config::{CommitMode, ResetPolicy};
use crate::cursor::{Action, Cursor};
use crate::dataset::DatasetSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::merge::{decide, Decision, Gate};
use crate::queue::{commit_within, main_queue_len, Notify, PartitionQueue, RawMessage};
use crate::spec::{
    resolve_streams, Cluster as _, Entry, Partitions, Range, Start, StreamSpec, EMPTY, UNLIMITED,
};
use crate::state::{check_group_identity, check_identity, decode, encode, State, StreamState};
use crate::stats::{self, Counters, LogSchedule, PartitionStats, Published, SharedPosition};

mod group;
mod keeper;

use group::Membership;
use keeper::Keeper;

/// One element, held by the reader until the next call; its bytes stay in librdkafka's
/// buffer (never copied in Rust).
pub struct Message {
    /// Index of the stream it came from.
    pub stream: usize,
    /// Offset in its partition.
    pub offset: i64,
    /// Timestamp used for ordering (ms; the partition time when the message had none).
    pub timestamp: i64,
    raw: RawMessage,
}

impl Message {
    /// Key bytes (`None` for a null key).
    pub fn key(&self) -> Option<&[u8]> {
        self.raw.key()
    }

    /// Value bytes (`None` for a null payload).
    pub fn value(&self) -> Option<&[u8]> {
        self.raw.payload()
    }

    /// Headers, in order (read from librdkafka only when called).
    pub fn headers(&self) -> crate::queue::Headers<'_> {
        self.raw.headers()
    }
}

/// Result of [`Reader::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The next element in merge order is [`Reader::current`].
    Element,
    /// Nothing yet within the wait; call again.
    Pending,
    /// Every stream has ended.
    End,
}

/// Wakes a waiting reader when any of its queues becomes non-empty.
#[derive(Default)]
struct Wake {
    generation: Mutex<u64>,
    cond: Condvar,
    /// The consumer's main queue has events (errors, rebalances, commit results): the next
    /// call serves it instead of taking the fast path.
    main_ready: AtomicBool,
}

impl Notify for Wake {
    fn notify(&self) {
        *self.generation.lock() += 1;
        self.cond.notify_all();
    }
}

impl Wake {
    fn generation(&self) -> u64 {
        *self.generation.lock()
    }
    /// Waits until the generation moves past `seen` or `until` passes.
    fn wait(&self, seen: u64, until: Instant) {
        let mut generation = self.generation.lock();
        while *generation == seen {
            if self.cond.wait_until(&mut generation, until).timed_out() {
                return;
            }
        }
    }
}

struct Stream {
    /// The partition, its ranges and the position in them.
    cursor: Cursor,
    /// Largest timestamp emitted (saved).
    emitted_time: i64,
    /// Largest timestamp fetched (gives messages without a timestamp their time).
    fetched_time: i64,
    head: Option<Message>,
    /// Taken from the partition queue, not yet looked at (on a seek, those below its target
    /// are dropped).
    pending: VecDeque<RawMessage>,
    caught_up_since: Option<Instant>,
    /// Its own queue, split from the consumer's (none once finished).
    queue: Option<PartitionQueue>,
    /// Last committed next-offset (-1 before any).
    committed: i64,
    /// When the freshness policy may next look up where the window starts.
    stale_check_due: Instant,
    /// Position and watermark as the stats show them: the position stored on every emitted
    /// element and whenever the partitions are published, the watermark whenever fetched
    /// messages are taken.
    shared: Arc<SharedPosition>,
}

impl Stream {
    fn from_state(state: StreamState) -> Self {
        Stream {
            cursor: Cursor::restore(state.spec, state.next_offset, state.finished),
            emitted_time: state.partition_time,
            fetched_time: state.partition_time,
            head: None,
            pending: VecDeque::new(),
            caught_up_since: None,
            queue: None,
            committed: -1,
            stale_check_due: Instant::now(),
            shared: Arc::new(SharedPosition::new(state.next_offset)),
        }
    }

    #[inline]
    fn spec(&self) -> &StreamSpec {
        self.cursor.spec()
    }

    #[inline]
    fn next_offset(&self) -> i64 {
        self.cursor.next_offset()
    }

    #[inline]
    fn finished(&self) -> bool {
        self.cursor.is_finished()
    }

    /// The shared position, brought up to date (a restore or a skip moves the position
    /// without an element).
    fn shared_position(&self) -> Arc<SharedPosition> {
        self.shared
            .next_offset
            .store(self.next_offset(), Ordering::Relaxed);
        self.shared.clone()
    }

    #[inline]
    fn gate(&self) -> Gate {
        Gate {
            head: self.head.as_ref().map(|m| (m.timestamp, m.offset)),
            finished: self.finished(),
            caught_up_since: self.caught_up_since,
        }
    }

    /// Starts fetching this partition from `consumer` at `from`: splits its queue from the
    /// consumer's main queue (before it is assigned, so the fetcher never forwards its messages
    /// there) and adds it to `assignment`. Shared by the first read and by group rebalances.
    fn open(
        &mut self,
        consumer: &Consumer,
        wake: &Arc<Wake>,
        from: i64,
        assignment: &mut TopicPartitionList,
    ) -> Result<()> {
        let spec = self.cursor.spec();
        let queue = PartitionQueue::new(consumer, &spec.topic, spec.partition, wake.clone())
            .ok_or_else(|| {
                Error::new(ErrorKind::Internal, format!("no queue for {}", spec.name()))
            })?;
        assignment
            .add_partition_offset(&spec.topic, spec.partition, Offset::Offset(from))
            .map_err(|e| kafka_error(&spec.name(), &e))?;
        self.queue = Some(queue);
        Ok(())
    }

    /// Releases what belongs to the consumer: the head, fetched messages and the queue.
    fn close(&mut self) {
        self.head = None;
        self.pending.clear();
        self.queue = None;
    }

    /// The saved form of this stream.
    fn state(&self) -> StreamState {
        StreamState {
            spec: self.spec().clone(),
            next_offset: self.next_offset(),
            finished: self.finished(),
            partition_time: self.emitted_time,
        }
    }
}

/// One iterator: its position (the streams' cursors, saved and restored) and, once it reads,
/// its connection (one consumer, a queue per partition) and the merge. Not thread-safe; the
/// caller serializes calls.
///
/// Position apart from connection: [`Reader::new`] resolves the streams (errors such as an
/// unknown topic surface there) without keeping a consumer; the consumer is created by the
/// first read, and [`Reader::restore`] only replaces the position.
pub struct Reader {
    spec: DatasetSpec,
    streams: Vec<Stream>,
    /// The last emitted element.
    current: Option<Message>,
    /// The elements of the last batch (reused: no allocation per batch).
    batch: Vec<Message>,
    /// None until the first read. Taken when disconnecting, after every message and queue
    /// that belongs to it was released.
    consumer: Option<Arc<Consumer>>,
    /// A group member's service thread, serving the consumer while the iterator is idle.
    keeper: Option<Keeper>,
    wake: Arc<Wake>,
    last_emitted_time: i64,
    /// The counters, and the partitions as published for readers of the stats.
    published: Arc<Published>,
    /// When the partitions (list, ends) are published next.
    partitions_due: Instant,
    /// The periodic log line, if asked for.
    log: Option<LogSchedule>,
    saved: Vec<u8>,
    /// Reused for every decision (no allocation per element).
    gates: Vec<Gate>,
    /// Every subscribed partition (sorted), saved with the position.
    partitions: Vec<(String, i32)>,
    /// The clock as last read by [`Reader::next`]'s slow path.
    clock: Instant,
    /// Fast-path calls since the clock was last read.
    fast_steps: u32,
    commits: Option<Commits>,
    /// Consumer-group membership (`subscribe`): streams come and go with rebalances.
    group: Option<Membership>,
    /// Partition discovery for whole-topic entries (`eof=False`); `None` when off.
    discovery: Option<Periodic>,
    /// Returning free memory to the system; `None` when off.
    memory_trim: Option<Periodic>,
    /// The position came from a checkpoint: the first read checks that its partitions still
    /// exist (a topic deleted and recreated with fewer).
    restored: bool,
    /// Some stream may still have an open time end (the slow path looks for passed ones).
    has_open_time_ends: bool,
    /// The freshness policy: messages older than this many ms are skipped.
    max_lag_ms: Option<i64>,
}

/// Something the reader does every `interval` (partition discovery, returning free memory):
/// when it is due next.
struct Periodic {
    interval: Duration,
    due: Instant,
}

impl Periodic {
    /// First due one interval from now.
    fn new(interval: Duration) -> Self {
        Periodic {
            interval,
            due: Instant::now() + interval,
        }
    }

    fn is_due(&self, now: Instant) -> bool {
        now >= self.due
    }

    /// Schedules the next time from `now`.
    fn rearm(&mut self, now: Instant) {
        self.due = now + self.interval;
    }
}

/// Returns the C allocator's free memory to the system
/// ([`crate::config::MEMORY_TRIM_INTERVAL_KEY`]). librdkafka's threads allocate the fetch
/// buffers that the reading thread frees; glibc keeps such memory in its arenas (RSS). Other
/// allocators ignore glibc's call.
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Commits the offsets of emitted messages for a user-given group, so broker-side lag shows
/// training progress. Only emitted positions are ever committed.
struct Commits {
    interval: Duration,
    due: Instant,
    /// `CommitMode::Checkpoint`: commits happen only on an explicit commit (every save), so
    /// the committed offsets are the last checkpoint's positions.
    on_save_only: bool,
}

impl Reader {
    /// Resolves the dataset's entries into streams against the cluster (through a short-lived
    /// probe consumer) and positions each at its start offset. Nothing is fetched until the
    /// first read. A group member (`subscribe`) only checks that its topics exist: the group
    /// assigns its partitions once it reads.
    pub fn new(spec: &DatasetSpec) -> Result<Self> {
        // Only the `stored` start needs the group (committed offsets); without it the probe
        // closes at once.
        let probe = create_consumer(
            spec,
            spec.entries.len(),
            spec.uses_stored_offsets(),
            None::<fn()>,
        )?;
        let mut cluster = LiveCluster {
            consumer: &probe,
            deadline: spec.metadata_deadline(),
            group: &spec.settings.group,
            servers: &spec.settings.servers,
        };
        let resolved = resolve_streams(&spec.entries, &mut cluster, spec.assignment)?;
        let streams = if spec.subscribe {
            Vec::new()
        } else {
            resolved
                .streams
                .into_iter()
                .map(|spec| StreamState {
                    next_offset: spec.ranges[0].start,
                    spec,
                    finished: false,
                    partition_time: -1,
                })
                .collect()
        };
        let mut reader = Reader {
            gates: Vec::new(),
            streams: Vec::new(),
            consumer: None,
            keeper: None,
            wake: Arc::new(Wake::default()),
            current: None,
            batch: Vec::new(),
            last_emitted_time: i64::MIN,
            published: stats::register(
                spec.entries.iter().map(|e| e.topic.clone()).collect(),
                spec.settings.group.clone(),
            ),
            partitions_due: Instant::now(),
            log: LogSchedule::from_env(),
            saved: Vec::new(),
            partitions: Vec::new(),
            clock: Instant::now(),
            fast_steps: 0,
            commits: (!spec.settings.group.is_empty()).then(|| Commits {
                interval: spec.commit_interval(),
                due: Instant::now() + spec.commit_interval(),
                on_save_only: spec.settings.commit_mode == CommitMode::Checkpoint,
            }),
            group: None,
            discovery: spec.discovery_interval().map(Periodic::new),
            memory_trim: spec.settings.memory_trim_interval.map(Periodic::new),
            restored: false,
            has_open_time_ends: false,
            max_lag_ms: spec
                .settings
                .max_lag
                .map(|lag| i64::try_from(lag.as_millis()).unwrap_or(i64::MAX)),
            spec: spec.clone(),
        };
        reader.set_position(State {
            group: spec.subscribe.then(|| spec.settings.group.clone()),
            assignment: spec.assignment,
            partitions: resolved.partitions,
            streams,
        });
        reader.check_starts(&cluster)?;
        Ok(reader)
    }

    /// Applies the reset policy to starts beyond the end of the log, found now, when the
    /// iterator starts (the broker's answer to the first fetch would depend on what was
    /// produced meanwhile): an explicit earliest/latest moves the start back (counted as
    /// rewound, logged); without a policy the partition ends there with eof; otherwise
    /// InvalidArgument naming the entry.
    fn check_starts(&mut self, cluster: &LiveCluster) -> Result<()> {
        // A start at 0 is never beyond the end: no request for the common whole-topic read.
        let candidates: Vec<usize> = (0..self.streams.len())
            .filter(|&i| !self.streams[i].finished() && self.streams[i].next_offset() > 0)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let partitions: Vec<(&str, i32)> = candidates
            .iter()
            .map(|&i| {
                let spec = self.streams[i].spec();
                (spec.topic.as_str(), spec.partition)
            })
            .collect();
        let ends = cluster.log_ends(&partitions)?;
        for (&index, high) in candidates.iter().zip(ends) {
            if self.streams[index].next_offset() <= high {
                continue;
            }
            let (topic, partition) = {
                let spec = self.streams[index].spec();
                (spec.topic.clone(), spec.partition)
            };
            let log_start = || cluster.log_start(&topic, partition);
            let entry_name = |reader: &Self| {
                let entry = reader
                    .spec
                    .entries
                    .iter()
                    .find(|e| e.topic == topic && e.names(partition))
                    .map_or(String::new(), |e| format!("topics entry \"{}\": ", e.text));
                format!("{entry}{}", reader.streams[index].spec().name())
            };
            // Not connected yet: the new position is where the first fetch starts.
            self.reset_beyond_end(index, high, log_start, entry_name)?;
        }
        Ok(())
    }

    /// The one rule for stream `index`'s position beyond the log end `high`, found when the
    /// iterator starts or by the fetcher: `auto.offset.reset=earliest`/`latest` moves it back
    /// to the log start (`log_start` is asked only then) or to `high`, counted as rewound and
    /// logged; a position the policy cannot move (no policy, `error`, or a later range of
    /// chained entries, which never goes back before its start) ends the stream when eof is
    /// set and no `error` policy says otherwise, and is InvalidArgument naming `name`
    /// otherwise. The caller tells the fetcher.
    fn reset_beyond_end(
        &mut self,
        index: usize,
        high: i64,
        log_start: impl FnOnce() -> Result<i64>,
        name: impl FnOnce(&Self) -> String,
    ) -> Result<BeyondEnd> {
        // Read once: a `${file:}` reference is a file read.
        let policy = self.spec.settings.reset_policy();
        let offset = self.streams[index].next_offset();
        let target = match policy {
            Some(ResetPolicy::Earliest) => Some(log_start()?),
            Some(ResetPolicy::Latest) => Some(high),
            _ => None,
        };
        if target == Some(offset) {
            // The log grew back to the position meanwhile.
            return Ok(BeyondEnd::Unchanged);
        }
        let stream = &mut self.streams[index];
        let Some((rewound, _)) = target.and_then(|target| stream.cursor.rewind_to(target)) else {
            if self.spec.eof && policy != Some(ResetPolicy::Fail) {
                stream.cursor.finish();
                return Ok(BeyondEnd::Finished);
            }
            return Err(beyond_end_error(&name(self), offset, high, policy));
        };
        self.published.count_rewound(&stream.shared, rewound);
        stream.head = None;
        stream.pending.clear();
        eprintln!(
            "kafka-dataset: {}: offset {offset} is beyond the end of the log (next offset {high}); auto.offset.reset={} continues at {}, {rewound} offsets back",
            stream.spec().name(),
            policy_name(policy),
            stream.next_offset(),
        );
        Ok(BeyondEnd::Rewound(stream.next_offset()))
    }

    /// Makes `state` the position (the reader is not connected).
    fn set_position(&mut self, state: State) {
        self.partitions = state.partitions;
        if self.spec.subscribe {
            let topics = self.spec.entries.iter().map(|e| e.topic.clone()).collect();
            self.streams = Vec::new();
            self.group = Some(Membership::new(topics, state.streams));
        } else {
            self.streams = state.streams.into_iter().map(Stream::from_state).collect();
        }
        self.gates = Vec::with_capacity(self.streams.len());
        self.last_emitted_time = i64::MIN;
        self.has_open_time_ends = self.spec.entries.iter().any(|e| e.until.is_some());
    }

    /// Creates the consumer and starts fetching every unfinished stream at its position (a
    /// group member joins its group). Called by the first read.
    fn connect(&mut self) -> Result<()> {
        // A member shares the budget as if it owned every subscribed partition.
        let budget_share = self.streams.len().max(self.partitions.len());
        let on_main_queue = {
            let wake = self.wake.clone();
            move || {
                wake.main_ready.store(true, Ordering::Relaxed);
                wake.notify();
            }
        };
        let consumer = Arc::new(create_consumer(
            &self.spec,
            budget_share,
            true,
            Some(on_main_queue),
        )?);
        if self.group.is_some() {
            self.keeper = Some(
                Keeper::start(consumer.clone(), self.spec.keep_alive_after()).map_err(|e| {
                    Error::new(
                        ErrorKind::Internal,
                        format!("cannot start the group member's service thread: {e}"),
                    )
                })?,
            );
        }
        self.consumer = Some(consumer);
        let started = self
            .check_restored_partitions()
            .and_then(|()| self.start_fetching())
            .and_then(|()| {
                // A restored position looks for partitions added since the save before the
                // first element, so they take part in the merge from its start.
                let now = Instant::now();
                match &self.discovery {
                    Some(d) if d.is_due(now) => self.discover_partitions(now),
                    _ => Ok(()),
                }
            });
        if started.is_err() {
            // Queues split from this consumer go with it; the next read tries again.
            self.disconnect(false);
        }
        started
    }

    /// After a restore, before fetching: every partition the checkpoint holds must still
    /// exist (FailedPrecondition naming the first that does not; a topic that grew is fine).
    fn check_restored_partitions(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.restored) || self.group.is_some() {
            return Ok(());
        }
        let mut cluster = self.cluster(self.spec.metadata_deadline());
        let mut topics: Vec<&(String, i32)> = self.partitions.iter().collect();
        // The highest partition of each topic, once.
        topics.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        topics.dedup_by(|a, b| a.0 == b.0);
        for (topic, highest) in topics {
            let count = cluster.partition_count(topic)?;
            if count <= *highest {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "checkpoint does not match the topic: it holds partition {topic}:{highest}, but topic \"{topic}\" has {count} partitions now (deleted and recreated with fewer?)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The cluster as the connected consumer sees it, each request retried until `deadline`.
    fn cluster(&self, deadline: Duration) -> LiveCluster<'_> {
        LiveCluster {
            consumer: self.consumer(),
            deadline,
            group: &self.spec.settings.group,
            servers: &self.spec.settings.servers,
        }
    }

    /// Reads the partition counts of the whole-topic entries' topics and starts reading the
    /// partitions added since (DESIGN.md §2.1): from their log start (an explicit offset as
    /// written), merged like the others, owned by the worker the assignment names. A topic
    /// with fewer partitions than read is an error; a request that fails is tried again at
    /// the next interval.
    fn discover_partitions(&mut self, now: Instant) -> Result<()> {
        let Some(discovery) = self.discovery.as_mut() else {
            return Ok(());
        };
        discovery.rearm(now);
        let mut added = Vec::new();
        {
            let cluster = self.cluster(DISCOVERY_WAIT);
            for (index, entry) in self.spec.entries.iter().enumerate() {
                if entry.partitions != Partitions::All {
                    continue;
                }
                let Ok(count) = cluster.partition_count_once(&entry.topic, DISCOVERY_WAIT) else {
                    continue;
                };
                let known = self
                    .partitions
                    .iter()
                    .filter(|(t, _)| *t == entry.topic)
                    .count() as i32;
                if count < known {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        format!(
                            "topic \"{}\" has {count} partitions now, fewer than the {known} this iterator reads (deleted and recreated?)",
                            entry.topic
                        ),
                    ));
                }
                for partition in known..count {
                    let owned = self.spec.assignment.owns(&entry.topic, partition);
                    let start = match entry.start {
                        Start::Offset(o) => o,
                        _ if !owned => 0, // not read here: no request
                        _ => {
                            match cluster.log_start_once(&entry.topic, partition, DISCOVERY_WAIT) {
                                Ok(low) => low,
                                Err(_) => break, // asked again at the next interval
                            }
                        }
                    };
                    added.push((index, partition, start));
                }
            }
        }
        for (index, partition, start) in added {
            self.add_partition(index, partition, start)?;
        }
        Ok(())
    }

    /// Adds partition `partition` of entry `index`'s topic, discovered while reading: to the
    /// subscribed partitions, and, when this worker owns it, as a stream reading from
    /// `start`, placed where resolving the entries would place it (its stream index orders
    /// the merge's ties and is what a checkpoint's identity check expects).
    fn add_partition(&mut self, index: usize, partition: i32, start: i64) -> Result<()> {
        let entry = &self.spec.entries[index];
        let topic = entry.topic.clone();
        if !self.spec.assignment.owns(&topic, partition) {
            self.partitions.push((topic, partition));
            self.partitions.sort();
            return Ok(());
        }
        let last = match entry.last {
            UNLIMITED => UNLIMITED,
            last if last < start => EMPTY,
            last => last,
        };
        let mut stream = Stream::from_state(StreamState {
            spec: StreamSpec {
                topic: topic.clone(),
                partition,
                ranges: vec![Range {
                    start,
                    last,
                    until: entry.until,
                }],
            },
            next_offset: start,
            finished: false,
            partition_time: -1,
        });
        if let Some(from) = stream.cursor.fetch_from() {
            let consumer = self.consumer.as_ref().expect("connected");
            let mut assignment = TopicPartitionList::new();
            stream.open(consumer, &self.wake, from, &mut assignment)?;
            consumer.incremental_assign(&assignment).map_err(|e| {
                kafka_error(&format!("reading new partition {topic}:{partition}"), &e)
            })?;
        }
        // Elements in hand name their streams by index, which move: hand them back first.
        self.current = None;
        self.batch.clear();
        let order = |s: &StreamSpec| resolution_order(&self.spec.entries, s);
        let key = order(stream.spec());
        let at = self.streams.partition_point(|s| order(s.spec()) < key);
        self.streams.insert(at, stream);
        self.renumber_heads();
        self.gates = Vec::with_capacity(self.streams.len());
        // Only now: a partition whose stream failed to open is found again next time.
        self.partitions.push((topic.clone(), partition));
        self.partitions.sort();
        self.has_open_time_ends |= self.spec.entries[index].until.is_some();
        eprintln!(
            "kafka-dataset: {topic}:{partition}: a partition added to topic \"{topic}\"; reading it from offset {start}"
        );
        Ok(())
    }

    /// Splits the queue of every unfinished stream and assigns them at their positions, or
    /// subscribes a group member to its topics.
    fn start_fetching(&mut self) -> Result<()> {
        let consumer = self.consumer.as_ref().expect("connected");
        let mut assignment = TopicPartitionList::new();
        for stream in &mut self.streams {
            if let Some(from) = stream.cursor.fetch_from() {
                stream.open(consumer, &self.wake, from, &mut assignment)?;
            }
        }
        if let Some(group) = &self.group {
            let topics: Vec<&str> = group.topics().iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(|e| kafka_error("subscribing to the topics", &e))
        } else {
            consumer
                .assign(&assignment)
                .map_err(|e| kafka_error("assigning partitions", &e))
        }
    }

    /// The consumer of a connected reader.
    fn consumer(&self) -> &Consumer {
        self.consumer
            .as_ref()
            .expect("only a connected reader fetches, seeks or commits")
    }

    /// Elements emitted after an idle partition was passed over that were older than the
    /// last emitted timestamp.
    pub fn late_elements(&self) -> u64 {
        self.published.counters().late
    }

    /// What this reader counted so far.
    pub fn counters(&self) -> Counters {
        self.published.counters()
    }

    /// Publishes the partitions (their list and whether each finished; positions and
    /// watermarks are shared as they change) at most every [`PARTITIONS_PUBLISH_INTERVAL`], or
    /// now when `all`, for
    /// [`stats::snapshot_json`]; writes the periodic log line when due. Slow path only.
    fn publish(&mut self, now: Instant, all: bool) {
        if all || now >= self.partitions_due {
            self.partitions_due = now + PARTITIONS_PUBLISH_INTERVAL;
            let streams = &self.streams;
            self.published.set_partitions(|partitions| {
                partitions.clear();
                partitions.extend(streams.iter().map(|s| PartitionStats {
                    topic: s.spec().topic.clone(),
                    partition: s.spec().partition,
                    position: s.shared_position(),
                    finished: s.finished(),
                }));
            });
        }
        if let Some(log) = self.log.as_mut() {
            log.maybe_log(now, &self.published);
        }
        if let Some(trim) = self.memory_trim.as_mut().filter(|t| t.is_due(now)) {
            trim.rearm(now);
            return_free_memory();
        }
    }

    /// Waits at most `max_wait` for the next element, then takes up to `max_elements - 1`
    /// more that are ready without waiting: a batch of 1..=`max_elements` elements in merge
    /// order, held (see [`Reader::batch`]) until the next call. Nothing is held back across
    /// calls, so a save between calls never covers elements the caller has not received.
    pub fn next_batch(&mut self, max_elements: usize, max_wait: Duration) -> Result<Next> {
        // A group member's service thread stays off the consumer while the reader reads.
        let _reading = self.keeper.as_ref().map(Keeper::reading);
        self.batch.clear();
        match self.next(max_wait)? {
            Next::Element => {}
            other => return Ok(other),
        }
        self.batch.extend(self.current.take());
        // What is ready now, at the clock `next` last read; the elements count toward its next
        // reading, so commits and errors are seen every FAST_STEPS elements, not batches.
        while self.batch.len() < max_elements {
            match self.step(self.clock)? {
                Decision::Emit { .. } => self.batch.extend(self.current.take()),
                Decision::End | Decision::Wait { .. } => break,
            }
        }
        // The first element was counted by `next`.
        let taken = u32::try_from(self.batch.len() - 1).unwrap_or(u32::MAX);
        self.fast_steps = self.fast_steps.saturating_add(taken);
        Ok(Next::Element)
    }

    /// The elements of the last [`Reader::next_batch`], with their streams.
    pub fn batch(&self) -> impl ExactSizeIterator<Item = (&Message, &StreamSpec)> {
        self.batch
            .iter()
            .map(|m| (m, self.streams[m.stream].spec()))
    }

    /// Waits at most `max_wait` for the next element in merge order.
    pub fn next(&mut self, max_wait: Duration) -> Result<Next> {
        if self.group.as_ref().is_some_and(Membership::has_left) {
            // A member that left the group at its end reads nothing more.
            return Ok(Next::End);
        }
        if self.consumer.is_none() {
            self.connect()?;
        }
        // Fast path while elements are ready: neither the clock nor the main queue per
        // element (both showed up in profiles). A stale clock only delays passing over an idle
        // stream, and a Wait re-decides below with a fresh one.
        self.fast_steps += 1;
        if self.fast_steps < FAST_STEPS && !self.wake.main_ready.load(Ordering::Relaxed) {
            // The end and a wait go through the slow path (which also publishes the stats).
            if let Decision::Emit { .. } = self.step(self.clock)? {
                return Ok(Next::Element);
            }
        }
        self.fast_steps = 0;
        let stop = Instant::now() + max_wait;
        loop {
            let seen = self.wake.generation();
            self.serve_main_queue()?;
            if self.has_open_time_ends {
                // What is fetched first: a window never closes over fetched messages.
                self.fill_heads()?;
                self.end_passed_time_windows();
            }
            let now = Instant::now();
            if self.discovery.as_ref().is_some_and(|d| d.is_due(now)) {
                self.discover_partitions(now)?;
            }
            self.clock = now;
            let decision = self.step(now)?;
            self.publish(now, decision == Decision::End);
            match decision {
                Decision::Emit { .. } => return Ok(Next::Element),
                Decision::End => {
                    // Here, not in `step`: no batch is in hand while the member leaves (its
                    // final commit may act on rebalances, which move streams).
                    self.leave_group();
                    return Ok(Next::End);
                }
                Decision::Wait { until } => {
                    if now >= stop {
                        return Ok(Next::Pending);
                    }
                    // Events left on the main queue are served right away; a discovery that
                    // falls due ends the wait.
                    if !self.wake.main_ready.load(Ordering::Relaxed) {
                        let discovery = self.discovery.as_ref().map(|d| d.due);
                        let until = [until, discovery]
                            .into_iter()
                            .flatten()
                            .fold(stop, Instant::min);
                        self.wake.wait(seen, until);
                    }
                }
            }
        }
    }

    /// Completes the ranges whose open time end the wall clock has passed while their stream
    /// sits at the end of its log with nothing fetched left to emit (see
    /// [`Cursor::time_passed`]). Called after [`Reader::fill_heads`].
    fn end_passed_time_windows(&mut self) {
        let mut now_ms = None;
        let mut open = false;
        for index in 0..self.streams.len() {
            let stream = &mut self.streams[index];
            if stream.finished() {
                continue;
            }
            open |= stream
                .spec()
                .ranges
                .iter()
                .any(|r| r.open_until().is_some());
            if stream.cursor.current_open_until().is_none() {
                continue;
            }
            let high = stream.shared.high_watermark.load(Ordering::Relaxed);
            if stream.caught_up_since.is_none()
                || stream.head.is_some()
                || !stream.pending.is_empty()
                || stream.next_offset() < high
            {
                continue;
            }
            let now_ms = *now_ms.get_or_insert_with(epoch_ms_now);
            let action = stream.cursor.time_passed(now_ms);
            self.act(index, action);
        }
        // Streams only close their windows (or come and go by discovery, which re-arms this).
        self.has_open_time_ends = open;
    }

    /// One merge decision at `now` over what is fetched; an emitted element becomes
    /// [`Reader::current`].
    fn step(&mut self, now: Instant) -> Result<Decision> {
        self.fill_heads()?;
        if self
            .commits
            .as_ref()
            .is_some_and(|c| now >= c.due && !c.on_save_only)
        {
            self.commit(false);
        }
        if self.streams.is_empty() && (!self.spec.eof || self.group.is_some()) {
            // A worker that owns no partition: an unlimited read never ends (DESIGN §2.3). A
            // group member without partitions waits for the group to give it some (an empty
            // share is often only the first step of a cooperative rebalance).
            return Ok(Decision::Wait { until: None });
        }
        self.gates.clear();
        self.gates.extend(self.streams.iter().map(Stream::gate));
        let decision = decide(&self.gates, now, self.spec.timeout);
        match decision {
            Decision::Emit {
                stream,
                passed_idle,
            } => self.emit(stream, passed_idle),
            Decision::End | Decision::Wait { .. } => {}
        }
        Ok(decision)
    }

    fn emit(&mut self, index: usize, passed_idle: bool) {
        let stream = &mut self.streams[index];
        let message = stream
            .head
            .take()
            .expect("the merge emits only buffered heads");
        let action = stream.cursor.emitted(message.offset);
        stream
            .shared
            .next_offset
            .store(stream.next_offset(), Ordering::Relaxed);
        stream.emitted_time = stream.emitted_time.max(message.timestamp);
        let raw = &message.raw;
        let bytes = raw.payload().map_or(0, <[u8]>::len) + raw.key().map_or(0, <[u8]>::len);
        let late = passed_idle && message.timestamp < self.last_emitted_time;
        self.published
            .count_element(bytes as u64, passed_idle, late);
        self.last_emitted_time = self.last_emitted_time.max(message.timestamp);
        self.act(index, action);
        // Replacing the previous element hands its buffer back to librdkafka.
        self.current = Some(message);
    }

    /// Commits (asynchronously) the next unemitted offset of every stream that moved since the
    /// last commit, or of every stream when `all` (so a failed commit is retried on the next
    /// explicit commit and on close). A no-op without a user-given group, or before the first
    /// read (nothing was emitted).
    fn commit(&mut self, all: bool) {
        if self.consumer.is_none() {
            return;
        }
        if let Some(positions) = self.uncommitted(all) {
            // Best effort: a failed commit only delays what lag tools show; the position that
            // matters is the one in the checkpoint.
            let _ = self
                .consumer()
                .commit(&positions, rdkafka::consumer::CommitMode::Async);
        }
    }

    /// Commits the current position of every stream for a user-given group (asynchronously;
    /// a no-op without one), so broker-side lag shows it. Apart from [`Reader::save`], which
    /// has no side effects: TF may save after every element, while commits are for
    /// checkpoints a user keeps.
    pub fn commit_position(&mut self) {
        let _reading = self.keeper.as_ref().map(Keeper::reading);
        self.commit(true);
    }

    /// The positions a commit should carry (see [`Reader::commit`]), marked as committed; none
    /// without a user-given group or when nothing moved.
    fn uncommitted(&mut self, all: bool) -> Option<TopicPartitionList> {
        self.uncommitted_of(all, |_| true)
    }

    /// [`Reader::uncommitted`] of the streams `which` selects.
    fn uncommitted_of(
        &mut self,
        all: bool,
        which: impl Fn(&Stream) -> bool,
    ) -> Option<TopicPartitionList> {
        let commits = self.commits.as_mut()?;
        commits.due = Instant::now() + commits.interval;
        let mut tpl = TopicPartitionList::new();
        for stream in self.streams.iter_mut().filter(|s| which(s)) {
            let (spec, next_offset) = (stream.cursor.spec(), stream.next_offset());
            if (all || next_offset != stream.committed)
                && tpl
                    .add_partition_offset(&spec.topic, spec.partition, Offset::Offset(next_offset))
                    .is_ok()
            {
                stream.committed = next_offset;
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }

    /// Commits the position of every stream `which` selects and waits for the broker's answer
    /// (at most `wait`): before partitions go to another owner or the reader goes away. A
    /// no-op (`Ok`) without a user-given group.
    fn commit_and_wait(
        &mut self,
        which: impl Fn(&Stream) -> bool,
        wait: Duration,
    ) -> std::result::Result<(), RDKafkaErrorCode> {
        if self.consumer.is_none() {
            return Ok(());
        }
        match self.uncommitted_of(true, which) {
            Some(positions) => commit_within(self.consumer(), &positions, wait),
            None => Ok(()),
        }
    }

    /// The final commit of a reader that stops reading (it leaves its group, or is dropped):
    /// every stream's position, each attempt waited for at most [`CLOSE_WAIT`]. A group
    /// member's commit that the coordinator refuses because the member's generation is stale
    /// (the group completed a rebalance this member has not caught up with) is retried, until
    /// `deadline`, once the member has caught up: its partitions
    /// stay its own until it revokes them, so the retried commit is the offset their next
    /// owner starts at. Meanwhile the member serves the group's rebalances as usual.
    fn final_commit(&mut self, deadline: Instant) {
        loop {
            // Each attempt waits at most CLOSE_WAIT: an unreachable coordinator (no answer)
            // ends the loop; only a refusal for a stale generation is retried.
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(CLOSE_WAIT);
            match self.commit_and_wait(|_| true, left) {
                Err(
                    RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::RebalanceInProgress
                    | RDKafkaErrorCode::UnknownMemberId,
                ) if self.group.is_some() && Instant::now() < deadline => {
                    // Catch up: librdkafka rejoins by itself; the rebalance it announces is
                    // acted on here. Events other than rebalances do not matter any more.
                    let _ = self.consumer().poll(Duration::from_millis(20));
                    let _ = self.serve_group();
                    // A rejoin takes a round trip or more: no commit storm meanwhile.
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return,
            }
        }
    }

    fn stop_fetching(&mut self, index: usize) {
        let spec = self.streams[index].spec();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&spec.topic, spec.partition);
        // Best effort: a finished stream's queue is never polled again anyway.
        let _ = self.consumer().pause(&tpl);
    }

    fn serve_main_queue(&mut self) -> Result<()> {
        self.wake.main_ready.store(false, Ordering::Relaxed);
        if let Some(error) = self.keeper.as_ref().and_then(Keeper::take_error) {
            return Err(error);
        }
        let anonymous = self.commits.is_none();
        while let Some(event) = self.consumer().poll(Duration::ZERO) {
            match event {
                // Each partition has its own queue; a message here would be lost to the merge.
                Ok(message) => {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        format!(
                            "message {}:{}@{} arrived on the consumer's main queue",
                            message.topic(),
                            message.partition(),
                            message.offset()
                        ),
                    ))
                }
                // The internal group id is never joined nor committed to: its coordinator's
                // complaints (e.g. no ACL for it) do not concern this read.
                Err(e)
                    if anonymous
                        && matches!(
                            e.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::GroupAuthorizationFailed)
                                | Some(RDKafkaErrorCode::CoordinatorNotAvailable)
                                | Some(RDKafkaErrorCode::NotCoordinator)
                        ) => {}
                Err(e) if is_fatal(&e) => return Err(kafka_error("Kafka consumer", &e)),
                Err(_) => {} // transient: librdkafka retries and reconnects by itself
            }
        }
        // `poll` also returns nothing after serving a rebalance or commit event: what is
        // left is served on the next call (the callback only fires when the queue was empty).
        if main_queue_len(self.consumer()) > 0 {
            self.wake.main_ready.store(true, Ordering::Relaxed);
        }
        self.serve_group()
    }

    /// Polls the queue of every unfinished stream that has no head, until it has one or its
    /// queue is empty.
    fn fill_heads(&mut self) -> Result<()> {
        for i in 0..self.streams.len() {
            loop {
                let stream = &mut self.streams[i];
                if stream.finished() || stream.head.is_some() {
                    break;
                }
                let Some(message) = stream.pending.pop_front() else {
                    match stream.queue.as_ref() {
                        Some(queue) if queue.poll_into(&mut stream.pending) > 0 => {
                            // Once per batch taken: a lookup in librdkafka's cache.
                            let high = queue.high_watermark();
                            stream.shared.high_watermark.store(high, Ordering::Relaxed);
                            continue;
                        }
                        _ => break,
                    }
                };
                let action = match message.error() {
                    None => Self::accept(stream, i, message),
                    Some(RDKafkaErrorCode::PartitionEOF) => {
                        stream.caught_up_since.get_or_insert_with(Instant::now);
                        stream.cursor.end_of_log(message.offset(), self.spec.eof)
                    }
                    Some(code) if is_fatal_code(code) => {
                        self.consumption_error(i, &KafkaError::MessageConsumption(code))?;
                        Action::Continue
                    }
                    Some(_) => Action::Continue, // transient: librdkafka retries by itself
                };
                self.act(i, action);
                if let Some(max_lag) = self.max_lag_ms {
                    self.skip_if_stale(i, max_lag);
                }
            }
        }
        Ok(())
    }

    /// The freshness policy (`max_lag_ms`, by the wall clock): when stream `index`'s new head
    /// is older than `max_lag` ms, moves the position to the first offset whose timestamp is
    /// within the window (offsets-for-times; the log end when none is), dropping what lies
    /// before it and counting the offsets its ranges wanted as stale. The position moves like
    /// an emit, so a checkpoint after a skip resumes after it. At most one look-up per stream
    /// per [`STALE_CHECK_INTERVAL`] (timestamps need not grow with offsets); a failed look-up
    /// lets the read go on.
    fn skip_if_stale(&mut self, index: usize, max_lag: i64) {
        let stream = &self.streams[index];
        let Some(head) = stream.head.as_ref() else {
            return;
        };
        let since = epoch_ms_now() - max_lag;
        let now = Instant::now();
        if head.timestamp >= since || now < stream.stale_check_due {
            return;
        }
        let head_offset = head.offset;
        let spec = stream.spec();
        let target = {
            let cluster = self.cluster(STALE_LOOKUP_WAIT);
            match cluster.offset_for_time(&spec.topic, spec.partition, since, STALE_LOOKUP_WAIT) {
                Ok(Some(offset)) => Some(offset),
                // Everything in the log is stale: its end.
                Ok(None) => cluster
                    .log_ends(&[(spec.topic.as_str(), spec.partition)])
                    .ok()
                    .and_then(|ends| ends.first().copied()),
                Err(_) => None,
            }
        };
        let stream = &mut self.streams[index];
        stream.stale_check_due = now + STALE_CHECK_INTERVAL;
        let Some(target) = target.filter(|&t| t > head_offset) else {
            return;
        };
        let (stale, action) = stream.cursor.skip_to(target);
        self.published.count_stale(&stream.shared, stale);
        stream.head = None;
        self.act(index, action);
    }

    /// Handles a fatal consumption error of stream `index`. The broker refusing the position
    /// as out of range applies the user's `auto.offset.reset` at either end of the log
    /// (DESIGN.md §2.6): below the log start it skips ahead, beyond the end it moves back.
    /// Without one: DataLoss below the log start; beyond the end the stream ends with eof,
    /// and without it the position asks for offsets that do not exist: InvalidArgument.
    fn consumption_error(&mut self, index: usize, e: &KafkaError) -> Result<()> {
        let stream = &self.streams[index];
        let (name, offset) = (stream.spec().name(), stream.next_offset());
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::AutoOffsetReset) {
            return Err(kafka_error(&name, e));
        }
        let watermarks = self.consumer().fetch_watermarks(
            &stream.spec().topic,
            stream.spec().partition,
            Duration::from_secs(5),
        );
        if let Ok((low, high)) = watermarks {
            if offset >= high {
                return self.beyond_end(index, low, high);
            }
        }
        match (watermarks, self.spec.settings.reset_policy()) {
            (Ok((low, high)), Some(policy @ (ResetPolicy::Earliest | ResetPolicy::Latest))) => {
                self.skip_lost(index, policy, low, high);
                Ok(())
            }
            (other, _) => {
                let range = other
                    .map(|(low, high)| format!(" (the log holds offsets {low}..{high})"))
                    .unwrap_or_default();
                Err(Error::new(
                    ErrorKind::DataLoss,
                    format!(
                        "{name}: offset {offset} is no longer in the log{range}; messages were deleted, e.g. by retention. Set auto.offset.reset=earliest|latest in config_topic to skip instead"
                    ),
                ))
            }
        }
    }

    /// Applies the reset rule to stream `index`, whose position the fetcher found at or
    /// beyond the log end `high` (the log holds `low..high`), and restarts or stops its
    /// fetcher accordingly.
    fn beyond_end(&mut self, index: usize, low: i64, high: i64) -> Result<()> {
        let offset = self.streams[index].next_offset();
        let name = |reader: &Self| reader.streams[index].spec().name();
        match self.reset_beyond_end(index, high, || Ok(low), name)? {
            // A fetcher stopped by the out-of-range error needs a restart, also in place.
            BeyondEnd::Unchanged => self.refetch(index, offset),
            BeyondEnd::Rewound(target) => self.refetch(index, target),
            BeyondEnd::Finished => self.act(index, Action::Finished),
        }
        Ok(())
    }

    /// Applies reset `policy` to stream `index`, whose position is below the log start
    /// `low`: continues at `low` (earliest) or `high` (latest), counting the skipped offsets
    /// that its ranges wanted, and says so on stderr (never silently).
    fn skip_lost(&mut self, index: usize, policy: ResetPolicy, low: i64, high: i64) {
        let target = if policy == ResetPolicy::Earliest {
            low
        } else {
            high
        };
        let stream = &mut self.streams[index];
        let from = stream.next_offset();
        let (skipped, action) = stream.cursor.skip_to(target);
        self.published.count_skipped(&stream.shared, skipped);
        stream.head = None;
        stream.pending.clear();
        eprintln!(
            "kafka-dataset: {}: offsets from {from} are no longer in the log (it holds {low}..{high}); auto.offset.reset={} continues at {}, skipping {skipped} offsets",
            stream.spec().name(),
            policy_name(Some(policy)),
            stream.next_offset(),
        );
        if let Action::Seek(position) = action {
            self.refetch(index, position);
        } else {
            self.act(index, action);
        }
    }

    /// Starts stream `index`'s fetcher again at `position` after an out-of-range error:
    /// librdkafka stopped the partition's fetcher on the error, and a seek needs a running
    /// one, so the partition is assigned again. Best effort: were it to fail, the read waits
    /// (and the stats show the lag) instead of losing more.
    fn refetch(&mut self, index: usize, position: i64) {
        let spec = self.streams[index].spec();
        let consumer = self.consumer.as_ref().expect("connected");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&spec.topic, spec.partition);
        let _ = consumer.incremental_unassign(&tpl);
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&spec.topic, spec.partition, Offset::Offset(position))
            .is_ok()
        {
            let _ = consumer.incremental_assign(&tpl);
        }
    }

    /// Takes a fetched message into stream `index`: buffers it as the head when the cursor
    /// says it is the next element; otherwise returns what the cursor asks for (dropping a
    /// stale message, a seek over a gap, the end of the read).
    fn accept(stream: &mut Stream, index: usize, message: RawMessage) -> Action {
        let offset = message.offset();
        let timestamp = match message.timestamp() {
            ts if ts >= 0 => ts,
            _ => stream.fetched_time,
        };
        match stream.cursor.offer(offset, timestamp) {
            Action::Deliver => {}
            other => return other,
        }
        stream.fetched_time = stream.fetched_time.max(timestamp);
        stream.caught_up_since = None;
        stream.head = Some(Message {
            stream: index,
            offset,
            timestamp,
            raw: message,
        });
        Action::Continue
    }

    /// Carries out what the cursor of stream `index` asked for: a seek over a gap, or
    /// stopping a finished stream's fetcher.
    fn act(&mut self, index: usize, action: Action) {
        match action {
            Action::Finished => {
                self.streams[index].pending.clear();
                self.stop_fetching(index);
            }
            Action::Seek(offset) => {
                // Taken before the seek: what lies below `offset` is skipped; what lies at or
                // past it stays (were the seek to fail, the fetcher would continue after it),
                // and the refetched copies fall below the position and are dropped.
                self.streams[index].pending.retain(|m| m.offset() >= offset);
                let spec = self.streams[index].spec();
                let _ = self.consumer().seek(
                    &spec.topic,
                    spec.partition,
                    Offset::Offset(offset),
                    Duration::ZERO,
                );
            }
            Action::Deliver | Action::Continue => {}
        }
    }

    /// The current position: next unemitted offset per stream (buffered messages are not
    /// consumed). Valid until the next call. No side effects: group commits go through
    /// [`Reader::commit_position`].
    pub fn save(&mut self) -> &[u8] {
        let state = State {
            group: self
                .group
                .is_some()
                .then(|| self.spec.settings.group.clone()),
            assignment: self.spec.assignment,
            partitions: self.partitions.clone(),
            streams: self.streams.iter().map(Stream::state).collect(),
        };
        self.saved = encode(&state);
        &self.saved
    }

    /// Replaces this reader's position with a saved one, after checking that the saved
    /// streams are this dataset's. Only the position changes: a reader that was already
    /// reading drops its consumer (without committing the replaced position), and the next
    /// read connects at the restored position. The counters carry on.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let state = decode(bytes)?;
        if self.spec.subscribe {
            check_group_identity(&self.spec.entries, &self.spec.settings.group, &state)?;
        } else {
            check_identity(&self.spec.entries, self.spec.assignment, &state)?;
        }
        self.disconnect(false);
        self.set_position(state);
        self.restored = true;
        if let Some(discovery) = self.discovery.as_mut() {
            // The topics may have grown since the save: look at the first read.
            discovery.due = Instant::now();
        }
        self.publish(Instant::now(), true);
        Ok(())
    }

    /// Closes the connection, if any: with `final_commit`, commits the emitted position first
    /// (a group member's partitions go to their next owner, which starts where this commit
    /// says) and waits briefly for the close; the rest of the close runs in the background.
    fn disconnect(&mut self, final_commit: bool) {
        if self.consumer.is_none() {
            return;
        }
        // The service thread stops (joined) before anything else touches the consumer.
        self.keeper = None;
        // rdkafka's own drop polls in 100 ms steps, without a deadline, until the consumer is
        // closed; closing here with short polls makes teardown prompt in the common case.
        // Without a final commit there is nothing to wait for: close in the background at
        // once (the anonymous group's coordinator lookup held closes for seconds).
        let final_commit = final_commit && self.commits.as_ref().is_some_and(|c| !c.on_save_only);
        let wait = if final_commit {
            CLOSE_WAIT
        } else {
            Duration::ZERO
        };
        // One budget for the final commit and the close in the common case; a commit that
        // needed retries (see `final_commit`) leaves none for the close, which then finishes in
        // the background.
        let deadline = Instant::now() + wait;
        if final_commit && !self.group.as_ref().is_some_and(Membership::has_left) {
            self.final_commit(Instant::now() + FINAL_COMMIT_WAIT);
        }
        // Rebalances from here on (the close revokes everything) need no commit or read.
        self.consumer().context().close(self.consumer());
        // librdkafka wants every message and queue released before its handle goes.
        self.current = None;
        self.batch.clear();
        self.streams.iter_mut().for_each(Stream::close);
        let consumer = self.consumer.take().expect("connected");
        // Closing (leaving the group, waiting for outstanding requests) could take up to
        // session.timeout.ms with an unreachable coordinator. Past the short wait, finish
        // closing on a background thread so TensorFlow's teardown (which holds its locks)
        // never blocks on the network.
        if !wait.is_zero() && consumer.close_queue().is_ok() {
            while !consumer.closed() && Instant::now() < deadline {
                consumer.poll(Duration::from_millis(5));
            }
        }
        if !consumer.closed() {
            // The thread holds the last reference (the keeper's went with it): rdkafka's
            // close-and-destroy (no deadline) runs there, never on TensorFlow's thread.
            let _ = std::thread::Builder::new()
                .name("kafka-dataset-close".into())
                .spawn(move || drop(consumer));
        }
    }
}

/// Consumer-group mode: acting on the rebalances the group announces.
impl Reader {
    /// Acts on the rebalances librdkafka announced. A rebalance that fails (e.g. the committed
    /// offsets cannot be read) is kept, with the ones after it, and retried on the next call;
    /// the error is returned.
    fn serve_group(&mut self) -> Result<()> {
        if self.group.as_ref().is_none_or(Membership::has_left) {
            return Ok(());
        }
        let mut rebalances = self.consumer().context().take().into_iter();
        while let Some(rebalance) = rebalances.next() {
            let done = match &rebalance {
                Rebalance::Assign(partitions) => self.take_partitions(partitions),
                Rebalance::Revoke { partitions, lost } => {
                    self.release_partitions(partitions, *lost)
                }
            };
            if let Err(e) = done {
                self.consumer()
                    .context()
                    .put_back(std::iter::once(rebalance).chain(rebalances).collect());
                self.wake.main_ready.store(true, Ordering::Relaxed);
                return Err(e);
            }
            self.published.count_rebalance();
        }
        Ok(())
    }

    /// Starts reading newly assigned partitions where the membership says. Nothing changes
    /// unless every step succeeds.
    fn take_partitions(&mut self, partitions: &[(String, i32)]) -> Result<()> {
        let group = self.group.as_ref().expect("a group member");
        let consumer = self.consumer.as_ref().expect("connected");
        let positions =
            group.start_positions(consumer, partitions, self.spec.metadata_deadline())?;
        let mut assignment = TopicPartitionList::new();
        let mut taken = Vec::with_capacity(positions.len());
        for position in positions {
            let from = position.next_offset;
            let mut stream = Stream::from_state(position);
            stream.open(consumer, &self.wake, from, &mut assignment)?;
            taken.push(stream);
        }
        // A partition this member read to its end before (eof) was paused; it fetches again.
        consumer
            .resume(&assignment)
            .map_err(|e| kafka_error("resuming the partitions the group assigned", &e))?;
        consumer
            .incremental_assign(&assignment)
            .map_err(|e| kafka_error("taking the partitions the group assigned", &e))?;
        for stream in taken {
            let order = group.order(stream.spec());
            let at = self
                .streams
                .partition_point(|s| group.order(s.spec()) < order);
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
                .any(|(t, p)| *t == s.spec().topic && *p == s.spec().partition)
        };
        if !lost {
            // Waited for (briefly): the next owner starts where this commit says. Should it
            // fail or time out, the next owner starts at the last successful commit: the
            // documented duplicates.
            let _ = self.commit_and_wait(leaving, CLOSE_WAIT);
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
        self.consumer()
            .incremental_unassign(&released)
            .map_err(|e| kafka_error("releasing the partitions the group revoked", &e))
    }

    /// With `eof`, a member whose partitions all ended leaves the group (after committing),
    /// so that its partitions, and any the group would hand it later, go to members that
    /// still read: an ended iterator is never polled again.
    fn leave_group(&mut self) {
        if self.consumer.is_none() || self.group.as_ref().is_none_or(Membership::has_left) {
            return;
        }
        self.final_commit(Instant::now() + FINAL_COMMIT_WAIT);
        if let Some(group) = self.group.as_mut() {
            group.set_left();
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        // The revocation that unsubscribing starts completes on its own from here.
        let consumer = self.consumer();
        consumer.context().close(consumer);
        consumer.unsubscribe();
        while consumer.assignment().is_ok_and(|a| a.count() > 0) && Instant::now() < deadline {
            consumer.poll(Duration::from_millis(5));
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

/// How often the freshness policy may look up the window's start per stream.
const STALE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long the freshness policy waits for one look-up (on the reading thread).
const STALE_LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// How long partition discovery waits for one metadata answer (it runs on the reading
/// thread; a request that fails is tried again at the next interval).
const DISCOVERY_WAIT: Duration = Duration::from_secs(1);

/// Where resolving `entries` places a stream of `spec`'s partition: the index of the first
/// entry naming it, then the partition (a whole-topic entry expands in partition order).
fn resolution_order(entries: &[Entry], spec: &StreamSpec) -> (usize, i32) {
    let first = entries
        .iter()
        .position(|e| e.topic == spec.topic && e.names(spec.partition))
        .unwrap_or(entries.len());
    (first, spec.partition)
}

/// `auto.offset.reset` as the log lines name it.
/// What the reset rule made of a position beyond the log end.
enum BeyondEnd {
    /// The policy's target is the position itself (the log grew back to it).
    Unchanged,
    /// Moved back to this offset.
    Rewound(i64),
    /// The stream ended there (eof).
    Finished,
}

fn policy_name(policy: Option<ResetPolicy>) -> &'static str {
    match policy {
        Some(ResetPolicy::Earliest) => "earliest",
        Some(ResetPolicy::Latest) => "latest",
        Some(ResetPolicy::Fail) => "error",
        None => "(not set)",
    }
}

/// A position beyond the end of the log that no reset policy moves back.
fn beyond_end_error(name: &str, offset: i64, high: i64, policy: Option<ResetPolicy>) -> Error {
    let why = match policy {
        Some(ResetPolicy::Fail) => "auto.offset.reset=error",
        Some(_) => "auto.offset.reset does not move it back: it lies in a later range of chained entries, which never reads between ranges or again; eof=True ends the partition there",
        None => "set auto.offset.reset=earliest|latest in config_topic to reset the position, or eof=True to end the partition there",
    };
    Error::invalid(format!(
        "{name}: offset {offset} is beyond the end of the log (next offset {high}); {why}"
    ))
}

/// At most this many elements are emitted in a row at a cached clock before [`Reader::next`]
/// reads the clock and serves the consumer's main queue (errors, commit results) again.
const FAST_STEPS: u32 = 64;

/// How often the partitions' list and ends are published for the stats (counters, positions
/// and watermarks are shared as they change).
const PARTITIONS_PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// How long dropping a reader waits for its consumer's close before leaving the rest of the
/// close to a background thread; also how long a group member waits for the commit of
/// partitions it gives up, and for its partitions' revocation when it leaves the group.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How long a reader that stops reading waits for its final commit, including a rebalance the
/// group completes meanwhile (a member's commit is refused until it has caught up).
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(6);

impl Drop for Reader {
    fn drop(&mut self) {
        self.disconnect(true);
    }
}

/// The position of one stream, as saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position<'a> {
    /// The stream.
    pub stream: &'a StreamSpec,
    /// Next offset not yet emitted.
    pub next_offset: i64,
    /// The stream produced its last element.
    pub finished: bool,
}

impl Reader {
    /// Position of stream `index`, if it exists.
    pub fn position(&self, index: usize) -> Option<Position<'_>> {
        self.streams.get(index).map(|s| Position {
            stream: s.spec(),
            next_offset: s.next_offset(),
            finished: s.finished(),
        })
    }

    /// Number of streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The last emitted element and its stream.
    ///
    /// # Panics
    /// Before the first element.
    pub fn current(&self) -> (&Message, &StreamSpec) {
        let message = self.current.as_ref().expect("an element was emitted");
        (message, self.streams[message.stream].spec())
    }
}
