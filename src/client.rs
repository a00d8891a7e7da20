//! The Kafka client side: creating the consumer, its context (the events librdkafka reports
//! beside requests, the rebalances it announces), look-ups against the live cluster with
//! retries, and the one table that classifies librdkafka's error codes (DESIGN.md §2.7).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::dataset::DatasetSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::queue::pending_errors;
use crate::spec::{last_before, Cluster, Start, UNLIMITED};

/// The consumer every reader (and its metadata probe) uses.
pub(crate) type Consumer = BaseConsumer<ReaderContext>;

/// What an error code means to a read: the status it becomes, and whether it ends the read
/// when it comes while consuming (otherwise librdkafka retries and reconnects by itself).
///
/// The one place codes are classified. TLS failures (`SSL`) are Unauthenticated but not
/// fatal while consuming: librdkafka reports a failed handshake for each connection attempt
/// and keeps retrying, and a broker whose certificate is being rotated recovers; a TLS
/// failure before anything was read surfaces as Unauthenticated through the look-ups
/// (see [`LiveCluster::cause_on_queue`]), so a misconfigured client still fails fast. SASL
/// failures are fatal: the credentials do not change by retrying.
pub(crate) fn classify(code: RDKafkaErrorCode) -> (ErrorKind, bool) {
    use RDKafkaErrorCode as C;
    match code {
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => {
            (ErrorKind::NotFound, true)
        }
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed => (ErrorKind::PermissionDenied, true),
        C::Authentication | C::SaslAuthenticationFailed => (ErrorKind::Unauthenticated, true),
        C::SSL => (ErrorKind::Unauthenticated, false),
        C::RequestTimedOut
        | C::NetworkException
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::CoordinatorNotAvailable
        | C::OperationTimedOut
        | C::AllBrokersDown
        | C::BrokerTransportFailure
        | C::Resolve => (ErrorKind::Unavailable, false),
        // The position is outside the log: the reader decides (DataLoss, the reset policy, or
        // the end of the read).
        C::AutoOffsetReset => (ErrorKind::Internal, true),
        C::Fatal => (ErrorKind::Internal, true),
        _ => (ErrorKind::Internal, false),
    }
}

/// `err` as an error with the kind [`classify`] gives its code, prefixed by `context`.
pub(crate) fn kafka_error(context: &str, err: &KafkaError) -> Error {
    let (kind, what) = match err.rdkafka_error_code() {
        Some(code) => (classify(code).0, code.to_string()),
        None => (ErrorKind::Internal, err.to_string()),
    };
    Error::new(kind, format!("{context}: {what}"))
}

/// Whether a consumption error ends the read (otherwise librdkafka retries by itself).
pub(crate) fn is_fatal(err: &KafkaError) -> bool {
    err.rdkafka_error_code().is_some_and(is_fatal_code)
        || matches!(err, KafkaError::MessageConsumptionFatal(_))
}

/// Whether an error code ends the read (otherwise librdkafka retries by itself).
pub(crate) fn is_fatal_code(code: RDKafkaErrorCode) -> bool {
    classify(code).1
}

/// Creates a consumer; `with_group` sets `group.id` (needed to assign and to commit; a
/// metadata-only probe goes without, so it closes at once), `on_main_queue` is called when its
/// main queue becomes non-empty.
pub(crate) fn create_consumer(
    spec: &DatasetSpec,
    streams: usize,
    with_group: bool,
    on_main_queue: Option<impl Fn() + Send + Sync + 'static>,
) -> Result<Consumer> {
    let mut config = spec.settings.client_config(streams, with_group)?;
    if spec.subscribe {
        // The reader acts on rebalances incrementally (group.rs).
        config.set("partition.assignment.strategy", "cooperative-sticky");
    }
    #[cfg(feature = "test-hooks")]
    CONSUMERS_CREATED.with(|n| n.set(n.get() + 1));
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
    if let Some(callback) = on_main_queue {
        consumer.set_nonempty_callback(callback);
    }
    Ok(consumer)
}

#[cfg(feature = "test-hooks")]
thread_local! {
    static CONSUMERS_CREATED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Test-only (feature `test-hooks`): how many Kafka consumers (readers' and probes') this
/// thread created, so a test can count the clients an iterator's life costs.
#[cfg(feature = "test-hooks")]
pub fn consumers_created_on_this_thread() -> u64 {
    CONSUMERS_CREATED.with(std::cell::Cell::get)
}

/// Runs `request` (given how long it may wait) until it succeeds, fails for good, or
/// `deadline` has passed: Unavailable errors (a leader moving, a broker restarting, a request
/// timing out) are retried with a growing pause first (DESIGN §2.7). Each attempt may wait
/// a growing slice of the time left, so that a cause found between attempts (an
/// authentication failure, which librdkafka reports beside the request, not to it) ends the
/// wait early.
pub(crate) fn with_retries<T>(
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
pub(crate) struct LiveCluster<'a> {
    pub(crate) consumer: &'a Consumer,
    pub(crate) deadline: Duration,
    /// The user's consumer group ("" without one), named by an authorization failure.
    pub(crate) group: &'a str,
    /// The bootstrap servers, named when none answers.
    pub(crate) servers: &'a str,
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

    pub(crate) fn partition_count_once(&self, topic: &str, wait: Duration) -> Result<i32> {
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
            Start::Timestamp(ms) => match self.offset_for_time(topic, partition, ms, wait)? {
                Some(o) => Ok(o),
                // No message at or after the time: start at the end of the log.
                None => Ok(watermarks(self.consumer)?.1),
            },
        }
    }

    /// The first offset of `topic:partition` whose timestamp is >= `ms`, if any.
    pub(crate) fn offset_for_time(
        &self,
        topic: &str,
        partition: i32,
        ms: i64,
        wait: Duration,
    ) -> Result<Option<i64>> {
        let what = || format!("offsets for time @{ms} of {topic}:{partition}");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
            .map_err(|e| kafka_error(&what(), &e))?;
        let found = self
            .consumer
            .offsets_for_times(tpl, wait)
            .map_err(|e| kafka_error(&what(), &e))?;
        let element = found.find_partition(topic, partition);
        match element.map(|e| (e.offset(), e.error())) {
            Some((_, Err(e))) => Err(kafka_error(&what(), &e)),
            Some((Offset::Offset(o), Ok(()))) if o >= 0 => Ok(Some(o)),
            _ => Ok(None),
        }
    }

    fn resolve_end_once(
        &self,
        topic: &str,
        partition: i32,
        start: i64,
        until: i64,
        wait: Duration,
    ) -> Result<i64> {
        // The log end first: when no message has reached `until`, one appended between the two
        // requests lies past the end taken.
        let (_, high) = self
            .consumer
            .fetch_watermarks(topic, partition, wait)
            .map_err(|e| kafka_error(&format!("watermarks of {topic}:{partition}"), &e))?;
        Ok(match self.offset_for_time(topic, partition, until, wait)? {
            Some(o) => last_before(start, o),
            None if until <= epoch_ms_now() => last_before(start, high),
            None => UNLIMITED,
        })
    }
}

impl LiveCluster<'_> {
    /// The end of the log (next offset) of each of `partitions`, in one request per leader.
    pub(crate) fn log_ends(&self, partitions: &[(&str, i32)]) -> Result<Vec<i64>> {
        with_retries(self.deadline, |wait| {
            let mut tpl = TopicPartitionList::new();
            for &(topic, partition) in partitions {
                // ListOffsets "latest": the offsets-for-times request with the special time.
                tpl.add_partition_offset(topic, partition, Offset::End)
                    .map_err(|e| kafka_error(&format!("{topic}:{partition}"), &e))?;
            }
            let found = self
                .consumer
                .offsets_for_times(tpl, wait)
                .map_err(|e| kafka_error("the ends of the logs", &e))?;
            partitions
                .iter()
                .map(|&(topic, partition)| {
                    let what = || format!("the end of the log of {topic}:{partition}");
                    match found
                        .find_partition(topic, partition)
                        .map(|e| (e.offset(), e.error()))
                    {
                        Some((_, Err(e))) => Err(kafka_error(&what(), &e)),
                        Some((Offset::Offset(o), Ok(()))) if o >= 0 => Ok(o),
                        other => Err(Error::new(
                            ErrorKind::Unavailable,
                            format!("{}: no answer ({other:?})", what()),
                        )),
                    }
                })
                .collect()
        })
    }

    /// The start of the log (its first offset) of `topic:partition`.
    pub(crate) fn log_start(&self, topic: &str, partition: i32) -> Result<i64> {
        with_retries(self.deadline, |wait| {
            self.log_start_once(topic, partition, wait)
        })
    }

    /// [`LiveCluster::log_start`], one request waited for at most `wait`.
    pub(crate) fn log_start_once(
        &self,
        topic: &str,
        partition: i32,
        wait: Duration,
    ) -> Result<i64> {
        self.consumer
            .fetch_watermarks(topic, partition, wait)
            .map(|(low, _)| low)
            .map_err(|e| kafka_error(&format!("watermarks of {topic}:{partition}"), &e))
    }
}

/// The wall clock in ms since the epoch (a clock before 1970 reads as 0).
pub(crate) fn epoch_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Cluster for LiveCluster<'_> {
    fn partition_count(&mut self, topic: &str) -> Result<i32> {
        with_retries(self.deadline, |wait| self.partition_count_once(topic, wait))
    }

    fn resolve_start(
        &mut self,
        topic: &str,
        partition: i32,
        start: Start,
        _: i64,
        _: Option<i64>,
    ) -> Result<i64> {
        if let Start::Offset(o) = start {
            return Ok(o);
        }
        with_retries(self.deadline, |wait| {
            self.resolve_start_once(topic, partition, start, wait)
        })
    }

    fn resolve_end(&mut self, topic: &str, partition: i32, start: i64, until: i64) -> Result<i64> {
        with_retries(self.deadline, |wait| {
            self.resolve_end_once(topic, partition, start, until, wait)
        })
    }
}

/// A rebalance as librdkafka announced it, waiting for the reader to act on it.
#[derive(Debug)]
pub(crate) enum Rebalance {
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
    pub(crate) fn close(&self, consumer: &BaseConsumer<Self>) {
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
    pub(crate) fn take_last_error(&self) -> Option<String> {
        self.last_error.lock().take()
    }

    pub(crate) fn take(&self) -> Vec<Rebalance> {
        std::mem::take(&mut *self.pending.lock())
    }

    /// Returns rebalances not yet acted on, ahead of any that arrived since.
    pub(crate) fn put_back(&self, rebalances: Vec<Rebalance>) {
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
