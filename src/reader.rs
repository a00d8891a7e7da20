//! One iterator's reader: a single rdkafka `BaseConsumer` with one queue per partition, the
//! time-ordered merge on top, and the position it saves and restores.

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::ResetPolicy;
use crate::dataset::DatasetSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::merge::{decide, Decision, Gate};
use crate::queue::{
    commit_within, main_queue_len, pending_errors, Notify, PartitionQueue, RawMessage,
};
use crate::spec::{resolve_streams, Cluster, Start, StreamSpec, UNLIMITED};
use crate::state::{check_group_identity, check_identity, decode, encode, State, StreamState};
use crate::stats::{self, Counters, LogSchedule, PartitionStats, Published, SharedPosition};

mod group;

use group::{Membership, ReaderContext};

/// The consumer every reader (and its metadata probe) uses.
type Consumer = BaseConsumer<ReaderContext>;

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
    spec: StreamSpec,
    /// Index of the range being read.
    range: usize,
    /// Next offset not yet emitted.
    next_offset: i64,
    finished: bool,
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
    /// Offsets skipped by the reset policy (the log no longer held them).
    skipped: u64,
    /// Position and watermark as the stats show them: the position stored on every emitted
    /// element and whenever the partitions are published, the watermark whenever fetched
    /// messages are taken.
    shared: Arc<SharedPosition>,
}

impl Stream {
    fn from_state(state: StreamState) -> Self {
        let range = state
            .spec
            .ranges
            .iter()
            .position(|r| !r.is_past(state.next_offset))
            .unwrap_or(state.spec.ranges.len());
        let mut stream = Stream {
            range,
            next_offset: state.next_offset,
            finished: state.finished || range == state.spec.ranges.len(),
            emitted_time: state.partition_time,
            fetched_time: state.partition_time,
            head: None,
            pending: VecDeque::new(),
            caught_up_since: None,
            queue: None,
            committed: -1,
            skipped: 0,
            shared: Arc::new(SharedPosition::new(state.next_offset)),
            spec: state.spec,
        };
        if let Some(r) = stream.spec.ranges.get(stream.range) {
            stream.next_offset = stream.next_offset.max(r.start);
        }
        stream
    }

    /// The shared position, brought up to date (a restore or a skip moves `next_offset`
    /// without an element).
    fn shared_position(&self) -> Arc<SharedPosition> {
        self.shared
            .next_offset
            .store(self.next_offset, Ordering::Relaxed);
        self.shared.clone()
    }

    fn gate(&self) -> Gate {
        Gate {
            head: self.head.as_ref().map(|m| (m.timestamp, m.offset)),
            finished: self.finished,
            caught_up_since: self.caught_up_since,
        }
    }

    /// Moves past the current range. Returns the offset to seek to, if the next range does not
    /// start where the previous one ended; marks the stream finished after the last range.
    fn advance_range(&mut self) -> Option<i64> {
        self.range += 1;
        match self.spec.ranges.get(self.range) {
            Some(r) => {
                let seek = (r.start > self.next_offset).then_some(r.start);
                self.next_offset = self.next_offset.max(r.start);
                seek
            }
            None => {
                self.finished = true;
                None
            }
        }
    }
}

/// One iterator's consumer and merge state. Not thread-safe; the caller serializes calls.
pub struct Reader {
    spec: DatasetSpec,
    streams: Vec<Stream>,
    /// The last emitted element.
    current: Option<Message>,
    /// The elements of the last batch (reused: no allocation per batch).
    batch: Vec<Message>,
    // Taken in `Drop`, so the close thread holds the only reference. Declared after the
    // fields holding messages and queues, which must go before the consumer they belong to.
    consumer: ManuallyDrop<Arc<Consumer>>,
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
}

/// Commits the offsets of emitted messages for a user-given group, so broker-side lag shows
/// training progress. Only emitted positions are ever committed.
struct Commits {
    interval: Duration,
    due: Instant,
}

fn kafka_error(context: &str, err: &KafkaError) -> Error {
    let kind = match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
        | Some(RDKafkaErrorCode::UnknownTopic)
        | Some(RDKafkaErrorCode::UnknownPartition) => ErrorKind::NotFound,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        | Some(RDKafkaErrorCode::GroupAuthorizationFailed)
        | Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => ErrorKind::PermissionDenied,
        Some(RDKafkaErrorCode::Authentication)
        | Some(RDKafkaErrorCode::SaslAuthenticationFailed)
        | Some(RDKafkaErrorCode::SSL) => ErrorKind::Unauthenticated,
        Some(RDKafkaErrorCode::RequestTimedOut)
        | Some(RDKafkaErrorCode::NetworkException)
        | Some(RDKafkaErrorCode::LeaderNotAvailable)
        | Some(RDKafkaErrorCode::NotLeaderForPartition)
        | Some(RDKafkaErrorCode::CoordinatorNotAvailable)
        | Some(RDKafkaErrorCode::OperationTimedOut)
        | Some(RDKafkaErrorCode::AllBrokersDown)
        | Some(RDKafkaErrorCode::BrokerTransportFailure)
        | Some(RDKafkaErrorCode::Resolve) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    let what = match err.rdkafka_error_code() {
        Some(code) => code.to_string(),
        None => err.to_string(),
    };
    Error::new(kind, format!("{context}: {what}"))
}

/// Whether a consumption error ends the read (otherwise librdkafka retries by itself).
fn is_fatal(err: &KafkaError) -> bool {
    is_fatal_code(err.rdkafka_error_code()) || matches!(err, KafkaError::MessageConsumptionFatal(_))
}

/// Whether an error code ends the read (otherwise librdkafka retries by itself).
fn is_fatal_code(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Some(RDKafkaErrorCode::UnknownTopic)
            | Some(RDKafkaErrorCode::UnknownPartition)
            | Some(RDKafkaErrorCode::TopicAuthorizationFailed)
            | Some(RDKafkaErrorCode::GroupAuthorizationFailed)
            | Some(RDKafkaErrorCode::ClusterAuthorizationFailed)
            | Some(RDKafkaErrorCode::Authentication)
            | Some(RDKafkaErrorCode::SaslAuthenticationFailed)
            | Some(RDKafkaErrorCode::AutoOffsetReset)
            | Some(RDKafkaErrorCode::Fatal)
    )
}

/// Creates a consumer; `with_group` sets `group.id` (needed to assign and to commit; a
/// metadata-only probe goes without, so it closes at once), `wake` is notified when its main
/// queue becomes non-empty.
fn create_consumer(
    spec: &DatasetSpec,
    streams: usize,
    with_group: bool,
    wake: Option<Arc<Wake>>,
) -> Result<Consumer> {
    let mut config = spec.settings.client_config(streams, with_group)?;
    if spec.subscribe {
        // The reader acts on rebalances incrementally (group.rs).
        config.set("partition.assignment.strategy", "cooperative-sticky");
    }
    let mut consumer: Consumer = config
        .create_with_context(ReaderContext::default())
        .map_err(|e| match e {
            // The configuration was validated when the dataset was built; what is left is, e.g., an
            // unreadable certificate file. librdkafka's text names the property, not secret values.
            KafkaError::ClientCreation(why) => {
                Error::invalid(format!("cannot create the Kafka consumer: {why}"))
            }
            KafkaError::ClientConfig(_, _, key, _) => {
                Error::invalid(format!("config \"{key}\": rejected by librdkafka"))
            }
            other => kafka_error("cannot create the Kafka consumer", &other),
        })?;
    if let Some(wake) = wake {
        consumer.set_nonempty_callback(move || {
            wake.main_ready.store(true, Ordering::Relaxed);
            wake.notify();
        });
    }
    Ok(consumer)
}

/// Runs `request` (given how long it may wait) until it succeeds, fails for good, or
/// `deadline` has passed: Unavailable errors (a leader moving, a broker restarting, a request
/// timing out) are retried with a growing pause first (DESIGN §2.7). Each attempt may wait
/// a growing slice of the time left, so that a cause found between attempts (an
/// authentication failure, which librdkafka reports beside the request, not to it) ends the
/// wait early.
fn with_retries<T>(
    deadline: Duration,
    mut request: impl FnMut(Duration) -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    let mut slice = Duration::from_secs(1);
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match request(left.min(slice).max(Duration::from_millis(1))) {
            Err(e) if e.kind == ErrorKind::Unavailable && start.elapsed() + pause < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
                slice = (slice * 2).min(Duration::from_secs(8));
            }
            result => return result,
        }
    }
}

/// Resolution against the live cluster through a short-lived consumer.
struct LiveCluster<'a> {
    consumer: &'a Consumer,
    deadline: Duration,
    /// The user's consumer group ("" without one), named by an authorization failure.
    group: &'a str,
    /// The bootstrap servers, named when none answers.
    servers: &'a str,
}

impl LiveCluster<'_> {
    /// The reason a request failed when librdkafka reports it beside the request, on the
    /// client's queue, instead of to it: an authentication failure (SASL, an untrusted
    /// certificate) shows as a transport error, a group the ACLs deny as a timeout.
    fn cause_on_queue(&self) -> Option<Error> {
        let context = self.consumer.context();
        for (cause, reason) in pending_errors(self.consumer, || context.take_last_error()) {
            let code = cause.rdkafka_error_code();
            let what = if code == Some(RDKafkaErrorCode::GroupAuthorizationFailed) {
                format!("consumer group \"{}\"", self.group)
            } else {
                "connecting to the brokers".to_string()
            };
            let mut err = kafka_error(&what, &cause);
            match err.kind {
                ErrorKind::Unauthenticated => {
                    // librdkafka's text says why a TLS handshake failed (OpenSSL's reason, the
                    // broker). Only for TLS: a SASL failure's text may quote configuration (an
                    // unparsable sasl.oauthbearer.config is echoed).
                    if code == Some(RDKafkaErrorCode::SSL) {
                        if let Some(reason) = reason {
                            err.message = format!("{}: {reason}", err.message);
                        }
                    }
                    return Some(err);
                }
                ErrorKind::PermissionDenied => return Some(err),
                _ => {}
            }
        }
        None
    }

    fn partition_count_once(&self, topic: &str, wait: Duration) -> Result<i32> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), wait)
            .map_err(|e| {
                // An authentication failure (SASL, an untrusted certificate) only shows as a
                // transport error here; the real cause waits on the client's main queue.
                if let Some(cause) = self.cause_on_queue() {
                    return cause;
                }
                let mut err = kafka_error(&format!("metadata for topic \"{topic}\""), &e);
                if err.kind == ErrorKind::Unavailable {
                    err.message = format!(
                        "brokers unreachable ({}): no metadata for topic \"{topic}\" within {} ms ({})",
                        self.servers,
                        self.deadline.as_millis(),
                        err.message
                    );
                }
                err
            })?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("topic \"{topic}\" does not exist"),
            ));
        };
        if let Some(err) = t.error() {
            let code = RDKafkaErrorCode::from(err);
            let mut e = kafka_error(
                &format!("topic \"{topic}\""),
                &KafkaError::MetadataFetch(code),
            );
            if e.kind == ErrorKind::NotFound {
                e.message = format!("topic \"{topic}\" does not exist");
            }
            return Err(e);
        }
        if t.partitions().is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("topic \"{topic}\" does not exist (no partitions)"),
            ));
        }
        Ok(t.partitions().len() as i32)
    }

    fn resolve_start_once(
        &self,
        topic: &str,
        partition: i32,
        start: Start,
        wait: Duration,
    ) -> Result<i64> {
        let name = format!("{topic}:{partition}");
        let watermarks = |c: &Consumer| {
            c.fetch_watermarks(topic, partition, wait)
                .map_err(|e| kafka_error(&format!("watermarks of {name}"), &e))
        };
        match start {
            Start::Offset(o) => Ok(o),
            Start::Beginning => Ok(watermarks(self.consumer)?.0),
            Start::End => Ok(watermarks(self.consumer)?.1),
            Start::Stored => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                let committed = self.consumer.committed_offsets(tpl, wait).map_err(|e| {
                    self.cause_on_queue()
                        .unwrap_or_else(|| kafka_error(&format!("committed offset of {name}"), &e))
                })?;
                match committed
                    .find_partition(topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) if o >= 0 => Ok(o),
                    // Nothing committed yet: start at the log start.
                    _ => Ok(watermarks(self.consumer)?.0),
                }
            }
            Start::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
                    .map_err(|e| kafka_error(&name, &e))?;
                let found = self
                    .consumer
                    .offsets_for_times(tpl, wait)
                    .map_err(|e| kafka_error(&format!("offsets for time @{ms} of {name}"), &e))?;
                let element = found.find_partition(topic, partition);
                match element.map(|e| (e.offset(), e.error())) {
                    Some((_, Err(e))) => Err(kafka_error(
                        &format!("offsets for time @{ms} of {name}"),
                        &e,
                    )),
                    Some((Offset::Offset(o), Ok(()))) if o >= 0 => Ok(o),
                    // No message at or after the time: start at the end of the log.
                    _ => Ok(watermarks(self.consumer)?.1),
                }
            }
        }
    }
}

impl Cluster for LiveCluster<'_> {
    fn partition_count(&mut self, topic: &str) -> Result<i32> {
        with_retries(self.deadline, |wait| self.partition_count_once(topic, wait))
    }

    fn resolve_start(&mut self, topic: &str, partition: i32, start: Start, _: i64) -> Result<i64> {
        with_retries(self.deadline, |wait| {
            self.resolve_start_once(topic, partition, start, wait)
        })
    }
}

impl Reader {
    /// Connects, resolves the dataset's entries into streams and starts reading at their
    /// start offsets. A group member (`subscribe`) only checks that its topics exist: the
    /// group assigns its partitions on the first read.
    pub fn new(spec: &DatasetSpec) -> Result<Self> {
        let resolved = {
            // Only the `stored` start needs the group (committed offsets); without it the probe
            // closes at once.
            let probe =
                create_consumer(spec, spec.entries.len(), spec.uses_stored_offsets(), None)?;
            let mut cluster = LiveCluster {
                consumer: &probe,
                deadline: spec.metadata_deadline(),
                group: &spec.settings.group,
                servers: &spec.settings.servers,
            };
            resolve_streams(&spec.entries, &mut cluster, spec.assignment)?
        };
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
        let state = State {
            group: spec.subscribe.then(|| spec.settings.group.clone()),
            assignment: spec.assignment,
            partitions: resolved.partitions,
            streams,
        };
        Self::start(spec.clone(), state)
    }

    fn start(spec: DatasetSpec, state: State) -> Result<Self> {
        let wake = Arc::new(Wake::default());
        let partitions = state.partitions;
        let (mut streams, group) = if spec.subscribe {
            let topics = spec.entries.iter().map(|e| e.topic.clone()).collect();
            (Vec::new(), Some(Membership::new(topics, state.streams)))
        } else {
            let streams: Vec<Stream> = state.streams.into_iter().map(Stream::from_state).collect();
            (streams, None)
        };
        // A member shares the budget as if it owned every subscribed partition.
        let budget_share = streams.len().max(partitions.len());
        let consumer = Arc::new(create_consumer(
            &spec,
            budget_share,
            true,
            Some(wake.clone()),
        )?);
        // Split each partition's queue before assigning, so the fetcher never forwards its
        // messages to the consumer's main queue.
        let mut assignment = TopicPartitionList::new();
        for s in streams.iter_mut().filter(|s| !s.finished) {
            let queue =
                PartitionQueue::new(&consumer, &s.spec.topic, s.spec.partition, wake.clone())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Internal,
                            format!("no queue for {}", s.spec.name()),
                        )
                    })?;
            s.queue = Some(queue);
            assignment
                .add_partition_offset(
                    &s.spec.topic,
                    s.spec.partition,
                    Offset::Offset(s.next_offset),
                )
                .map_err(|e| kafka_error(&s.spec.name(), &e))?;
        }
        if group.is_none() {
            consumer
                .assign(&assignment)
                .map_err(|e| kafka_error("assigning partitions", &e))?;
        }
        Ok(Reader {
            gates: Vec::with_capacity(streams.len()),
            streams,
            consumer: ManuallyDrop::new(consumer),
            wake,
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
            partitions,
            clock: Instant::now(),
            fast_steps: 0,
            commits: (!spec.settings.group.is_empty()).then(|| Commits {
                interval: spec.commit_interval(),
                due: Instant::now() + spec.commit_interval(),
            }),
            group,
            spec,
        })
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
                    topic: s.spec.topic.clone(),
                    partition: s.spec.partition,
                    position: s.shared_position(),
                    finished: s.finished,
                    skipped: s.skipped,
                }));
            });
        }
        if let Some(log) = self.log.as_mut() {
            log.maybe_log(now, &self.published);
        }
    }

    /// Waits at most `max_wait` for the next element, then takes up to `max_elements - 1`
    /// more that are ready without waiting: a batch of 1..=`max_elements` elements in merge
    /// order, held (see [`Reader::batch`]) until the next call. Nothing is held back across
    /// calls, so a save between calls never covers elements the caller has not received.
    pub fn next_batch(&mut self, max_elements: usize, max_wait: Duration) -> Result<Next> {
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
        let taken = u32::try_from(self.batch.len()).unwrap_or(u32::MAX);
        self.fast_steps = self.fast_steps.saturating_add(taken);
        Ok(Next::Element)
    }

    /// The elements of the last [`Reader::next_batch`], with their streams.
    pub fn batch(&self) -> impl ExactSizeIterator<Item = (&Message, &StreamSpec)> {
        self.batch.iter().map(|m| (m, &self.streams[m.stream].spec))
    }

    /// Waits at most `max_wait` for the next element in merge order.
    pub fn next(&mut self, max_wait: Duration) -> Result<Next> {
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
            let now = Instant::now();
            self.clock = now;
            let decision = self.step(now)?;
            self.publish(now, decision == Decision::End);
            match decision {
                Decision::Emit { .. } => return Ok(Next::Element),
                Decision::End => return Ok(Next::End),
                Decision::Wait { until } => {
                    if now >= stop {
                        return Ok(Next::Pending);
                    }
                    // Events left on the main queue are served right away.
                    if !self.wake.main_ready.load(Ordering::Relaxed) {
                        self.wake.wait(seen, until.map_or(stop, |u| u.min(stop)));
                    }
                }
            }
        }
    }

    /// One merge decision at `now` over what is fetched; an emitted element becomes
    /// [`Reader::current`].
    fn step(&mut self, now: Instant) -> Result<Decision> {
        self.fill_heads()?;
        if self.commits.as_ref().is_some_and(|c| now >= c.due) {
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
            Decision::End => self.leave_group(),
            Decision::Wait { .. } => {}
        }
        Ok(decision)
    }

    fn emit(&mut self, index: usize, passed_idle: bool) {
        let stream = &mut self.streams[index];
        let message = stream
            .head
            .take()
            .expect("the merge emits only buffered heads");
        stream.next_offset = message.offset + 1;
        stream
            .shared
            .next_offset
            .store(stream.next_offset, Ordering::Relaxed);
        stream.emitted_time = stream.emitted_time.max(message.timestamp);
        let raw = &message.raw;
        let bytes = raw.payload().map_or(0, <[u8]>::len) + raw.key().map_or(0, <[u8]>::len);
        let late = passed_idle && message.timestamp < self.last_emitted_time;
        self.published
            .count_element(bytes as u64, passed_idle, late);
        self.last_emitted_time = self.last_emitted_time.max(message.timestamp);
        if stream.spec.ranges[stream.range].is_past(stream.next_offset) {
            self.finish_range(index);
        }
        // Replacing the previous element hands its buffer back to librdkafka.
        self.current = Some(message);
    }

    /// Commits (asynchronously) the next unemitted offset of every stream that moved since the
    /// last commit, or of every stream when `all` (so a failed commit is retried on save and
    /// close). A no-op without a user-given group.
    fn commit(&mut self, all: bool) {
        if let Some(positions) = self.uncommitted(all) {
            // Best effort: a failed commit only delays what lag tools show; the position that
            // matters is the one in the checkpoint.
            let _ = self
                .consumer
                .commit(&positions, rdkafka::consumer::CommitMode::Async);
        }
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
            if (all || stream.next_offset != stream.committed)
                && tpl
                    .add_partition_offset(
                        &stream.spec.topic,
                        stream.spec.partition,
                        Offset::Offset(stream.next_offset),
                    )
                    .is_ok()
            {
                stream.committed = stream.next_offset;
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }

    /// Commits the position of every stream `which` selects and waits for the broker's answer
    /// (at most [`CLOSE_WAIT`]): before partitions go to another owner or the reader goes away.
    /// A no-op without a user-given group.
    fn commit_and_wait(&mut self, which: impl Fn(&Stream) -> bool) {
        if let Some(positions) = self.uncommitted_of(true, which) {
            commit_within(&self.consumer, &positions, CLOSE_WAIT);
        }
    }

    /// Moves a stream past its current range: seeks over a gap, or stops fetching after the
    /// last range.
    fn finish_range(&mut self, index: usize) {
        let seek = self.streams[index].advance_range();
        self.after_accept(index, seek);
    }

    fn stop_fetching(&mut self, index: usize) {
        let spec = &self.streams[index].spec;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&spec.topic, spec.partition);
        // Best effort: a finished stream's queue is never polled again anyway.
        let _ = self.consumer.pause(&tpl);
    }

    fn serve_main_queue(&mut self) -> Result<()> {
        self.wake.main_ready.store(false, Ordering::Relaxed);
        let anonymous = self.commits.is_none();
        while let Some(event) = self.consumer.poll(Duration::ZERO) {
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
        if main_queue_len(&self.consumer) > 0 {
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
                if stream.finished || stream.head.is_some() {
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
                let seek = match message.error() {
                    None => Self::accept(stream, i, message),
                    Some(RDKafkaErrorCode::PartitionEOF) => {
                        Self::at_end_of_log(stream, message.offset(), self.spec.eof)
                    }
                    Some(code) if is_fatal_code(Some(code)) => {
                        self.consumption_error(i, &KafkaError::MessageConsumption(code))?;
                        None
                    }
                    Some(_) => None, // transient: librdkafka retries by itself
                };
                self.after_accept(i, seek);
            }
        }
        Ok(())
    }

    /// The stream has read everything the log holds below `end`. With `eof` it is finished;
    /// otherwise it is caught up (idle), and a bounded range whose remaining offsets all lie
    /// below `end` is complete even though its last offset never arrived (a compacted record
    /// or a transaction marker). Returns where to seek for the next range, if anywhere.
    fn at_end_of_log(stream: &mut Stream, end: i64, eof: bool) -> Option<i64> {
        if eof {
            stream.finished = true;
            return None;
        }
        stream.caught_up_since.get_or_insert_with(Instant::now);
        let mut seek = None;
        // Every offset below `end` was delivered or does not exist.
        while !stream.finished && stream.spec.ranges[stream.range].is_past(end) {
            seek = stream.advance_range().or(seek);
        }
        seek
    }

    /// Handles a fatal consumption error of stream `index`. The broker refusing the position
    /// means DataLoss below the log start (unless the user's reset policy skips to the log's
    /// start or end); beyond the log end the stream ends with `eof`, and without it the entry
    /// asks for offsets that do not exist yet: InvalidArgument.
    fn consumption_error(&mut self, index: usize, e: &KafkaError) -> Result<()> {
        let stream = &self.streams[index];
        let (name, offset) = (stream.spec.name(), stream.next_offset);
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::AutoOffsetReset) {
            return Err(kafka_error(&name, e));
        }
        // Read once: a `${file:}` reference is a file read.
        let policy = self.spec.settings.reset_policy();
        let watermarks = self.consumer.fetch_watermarks(
            &stream.spec.topic,
            stream.spec.partition,
            Duration::from_secs(5),
        );
        match watermarks {
            Ok((_, high)) if offset >= high && self.spec.eof => {
                self.streams[index].finished = true;
                self.stop_fetching(index);
                Ok(())
            }
            Ok((_, high)) if offset >= high => Err(Error::invalid(format!(
                "{name}: offset {offset} is beyond the end of the log (next offset {high})"
            ))),
            Ok((low, high)) if policy != ResetPolicy::Fail => {
                self.skip_lost(index, policy, low, high);
                Ok(())
            }
            other => {
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
        let from = stream.next_offset;
        let skipped: i64 = stream.spec.ranges[stream.range..]
            .iter()
            .map(|r| {
                let end = if r.last == UNLIMITED {
                    target
                } else {
                    target.min(r.last + 1)
                };
                (end - from.max(r.start)).max(0)
            })
            .sum();
        let skipped = skipped as u64;
        stream.skipped += skipped;
        self.published.count_skipped(skipped);
        stream.next_offset = stream.next_offset.max(target);
        while !stream.finished && stream.spec.ranges[stream.range].is_past(stream.next_offset) {
            stream.advance_range();
        }
        stream.head = None;
        stream.pending.clear();
        eprintln!(
            "kafka-dataset: {}: offsets from {from} are no longer in the log (it holds {low}..{high}); auto.offset.reset={} continues at {}, skipping {skipped} offsets",
            stream.spec.name(),
            if policy == ResetPolicy::Earliest { "earliest" } else { "latest" },
            stream.next_offset,
        );
        if stream.finished {
            self.stop_fetching(index);
        } else {
            // librdkafka stopped this partition's fetcher on the error, and a seek needs a
            // running one: assign the partition again at the new position. Best effort: were
            // it to fail, the read waits (and the stats show the lag) instead of losing more.
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&stream.spec.topic, stream.spec.partition);
            let _ = self.consumer.incremental_unassign(&tpl);
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(
                    &stream.spec.topic,
                    stream.spec.partition,
                    Offset::Offset(stream.next_offset),
                )
                .is_ok()
            {
                let _ = self.consumer.incremental_assign(&tpl);
            }
        }
    }

    /// Takes a fetched message into stream `index`: buffers it as the head, or drops it when
    /// it is stale (before the position). A message past the current range moves the stream to
    /// its next range first (offsets may have gaps: compaction, transaction markers); the
    /// returned offset is where to seek when the message falls before that range.
    fn accept(stream: &mut Stream, index: usize, message: RawMessage) -> Option<i64> {
        let offset = message.offset();
        loop {
            if stream.finished || offset < stream.next_offset {
                return None;
            }
            let range = stream.spec.ranges[stream.range];
            if range.is_past(offset) {
                stream.advance_range();
                let next = stream.spec.ranges.get(stream.range);
                if let Some(r) = next.filter(|r| offset < r.start) {
                    return Some(r.start);
                }
                continue;
            }
            if offset < range.start {
                return None;
            }
            let timestamp = match message.timestamp() {
                ts if ts >= 0 => ts,
                _ => stream.fetched_time,
            };
            stream.fetched_time = stream.fetched_time.max(timestamp);
            stream.caught_up_since = None;
            stream.head = Some(Message {
                stream: index,
                offset,
                timestamp,
                raw: message,
            });
            return None;
        }
    }

    /// Acts on what taking a message asked for: a seek over a gap, or stopping a finished
    /// stream's fetcher.
    fn after_accept(&mut self, index: usize, seek: Option<i64>) {
        if self.streams[index].finished {
            self.streams[index].pending.clear();
            self.stop_fetching(index);
        } else if let Some(offset) = seek {
            // Taken before the seek: what lies below `offset` is skipped; what lies at or past
            // it stays (were the seek to fail, the fetcher would continue after it), and the
            // refetched copies fall below `next_offset` and are dropped.
            self.streams[index].pending.retain(|m| m.offset() >= offset);
            let spec = &self.streams[index].spec;
            let _ = self.consumer.seek(
                &spec.topic,
                spec.partition,
                Offset::Offset(offset),
                Duration::ZERO,
            );
        }
    }

    /// The current position: next unemitted offset per stream (buffered messages are not
    /// consumed). Valid until the next call.
    ///
    /// `commit` also commits the position for a user-given group; without it the commit
    /// happens only when the periodic interval is due (TF may save after every element).
    pub fn save(&mut self, commit: bool) -> &[u8] {
        if commit {
            self.commit(true);
        } else if self
            .commits
            .as_ref()
            .is_some_and(|c| Instant::now() >= c.due)
        {
            self.commit(false);
        }
        let state = State {
            group: self
                .group
                .is_some()
                .then(|| self.spec.settings.group.clone()),
            assignment: self.spec.assignment,
            partitions: self.partitions.clone(),
            streams: self
                .streams
                .iter()
                .map(|s| StreamState {
                    spec: s.spec.clone(),
                    next_offset: s.next_offset,
                    finished: s.finished,
                    partition_time: s.emitted_time,
                })
                .collect(),
        };
        self.saved = encode(&state);
        &self.saved
    }

    /// Replaces this reader's position with a saved one, after checking that the saved
    /// streams are this dataset's.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let state = decode(bytes)?;
        if self.spec.subscribe {
            check_group_identity(&self.spec.entries, &self.spec.settings.group, &state)?;
        } else {
            check_identity(&self.spec.entries, self.spec.assignment, &state)?;
        }
        let mut restored = Self::start(self.spec.clone(), state)?;
        // The same iterator to the stats: its id and counters carry on.
        std::mem::swap(&mut restored.published, &mut self.published);
        std::mem::swap(&mut restored.log, &mut self.log);
        // The replaced reader must not commit its older position on the way out.
        self.commits = None;
        *self = restored;
        self.publish(Instant::now(), true);
        Ok(())
    }
}

/// At most this many elements are emitted in a row at a cached clock before [`Reader::next`]
/// reads the clock and serves the consumer's main queue (errors, commit results) again.
const FAST_STEPS: u32 = 64;

/// How often the partitions' list and ends are published for the stats (counters, positions
/// and watermarks are shared as they change).
const PARTITIONS_PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// How long dropping a reader waits for its final commit and its consumer's close before
/// leaving the rest of the close to a background thread; also how long a group member waits
/// for the commit of partitions it gives up.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl Drop for Reader {
    fn drop(&mut self) {
        // rdkafka's own drop polls in 100 ms steps, without a deadline, until the consumer is
        // closed; closing here with short polls makes teardown prompt in the common case.
        // Without a user group there is no final commit to wait for: close in the background
        // at once (the anonymous group's coordinator lookup held closes for seconds).
        let wait = if self.commits.is_some() {
            CLOSE_WAIT
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + wait;
        // The final commit, waited for (within the same short wait): a group member's
        // partitions go to their next owner, which starts where this commit says.
        if !self.group.as_ref().is_some_and(Membership::has_left) {
            self.commit_and_wait(|_| true);
        }
        // Rebalances from here on (the close revokes everything) need no commit or read.
        self.consumer.context().close(&self.consumer);
        // librdkafka wants every message and queue released before its handle goes.
        self.current = None;
        self.batch.clear();
        for stream in &mut self.streams {
            stream.head = None;
            stream.pending.clear();
            stream.queue = None;
        }
        // Closing (leaving the group, waiting for outstanding requests) could take up to
        // session.timeout.ms with an unreachable coordinator. Past the short wait, finish
        // closing on a background thread so TensorFlow's teardown (which holds its locks)
        // never blocks on the network.
        if !wait.is_zero() && self.consumer.close_queue().is_ok() {
            while !self.consumer.closed() && Instant::now() < deadline {
                self.consumer.poll(Duration::from_millis(5));
            }
        }
        // SAFETY: taken once, here; `self.consumer` is not used after this line.
        let consumer = unsafe { ManuallyDrop::take(&mut self.consumer) };
        if !consumer.closed() {
            // The thread holds the only reference: rdkafka's close-and-destroy (no deadline)
            // runs there, never on TensorFlow's thread.
            let _ = std::thread::Builder::new()
                .name("kafka-dataset-close".into())
                .spawn(move || drop(consumer));
        }
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
            stream: &s.spec,
            next_offset: s.next_offset,
            finished: s.finished,
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
        (message, &self.streams[message.stream].spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Range;

    fn stream(ranges: &[(i64, i64)], next_offset: i64) -> Stream {
        Stream::from_state(StreamState {
            spec: StreamSpec {
                topic: "t".into(),
                partition: 0,
                ranges: ranges
                    .iter()
                    .map(|&(start, last)| Range { start, last })
                    .collect(),
            },
            next_offset,
            finished: false,
            partition_time: -1,
        })
    }

    #[test]
    fn end_of_log_beyond_a_bounded_range_completes_it() {
        // Offset 3 (the range's last) never arrives: a transaction marker or compacted away.
        let mut s = stream(&[(0, 3)], 3);
        assert_eq!(Reader::at_end_of_log(&mut s, 4, false), None);
        assert!(s.finished);
        let mut s = stream(&[(0, 3), (10, -1)], 3);
        assert_eq!(Reader::at_end_of_log(&mut s, 4, false), Some(10));
        assert!(!s.finished && s.next_offset == 10 && s.caught_up_since.is_some());
    }

    #[test]
    fn end_of_log_inside_a_range_only_marks_the_stream_idle() {
        let mut s = stream(&[(0, 3)], 3);
        assert_eq!(Reader::at_end_of_log(&mut s, 3, false), None);
        assert!(!s.finished && s.caught_up_since.is_some());
        let mut s = stream(&[(0, -1)], 7);
        Reader::at_end_of_log(&mut s, 7, true);
        assert!(s.finished, "with eof the stream ends at the end of its log");
    }
}
