//! One partition's message queue, used through librdkafka's C API so that messages are
//! borrowed in place (no copy, no allocation per message) and end-of-partition events keep
//! the offset at which they fired.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

/// Most messages taken from a partition queue in one call. Taken messages stay in librdkafka's
/// fetch buffers (nothing is copied) but leave its queue accounting, so this is how far a
/// stream may hold messages beyond the prefetch budget.
pub const POLL_BATCH: usize = 64;

/// Something to call when a queue becomes non-empty (librdkafka calls it from its threads).
pub trait Notify: Send + Sync {
    /// Wakes the reader.
    fn notify(&self);
}

/// Events (errors, rebalances, commit results, log lines) waiting on the queue `consumer.poll`
/// serves: the consumer queue with a group, librdkafka's main queue without one.
pub fn main_queue_len<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> usize {
    // SAFETY: live client handle; the queue reference taken here is released before return.
    unsafe {
        let client = consumer.client().native_ptr();
        let mut queue = rd::rd_kafka_queue_get_consumer(client);
        if queue.is_null() {
            queue = rd::rd_kafka_queue_get_main(client);
        }
        if queue.is_null() {
            return 0;
        }
        let len = rd::rd_kafka_queue_length(queue);
        rd::rd_kafka_queue_destroy(queue);
        len
    }
}

/// Errors waiting on the queue `consumer.poll` serves, in order, each with what `describe`
/// returns right after it was served (the context's record of librdkafka's text); other
/// events are served and dropped. (`poll` returns nothing after serving a log line, so
/// "nothing" does not mean empty.)
pub fn pending_errors<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    describe: impl Fn() -> Option<String>,
) -> Vec<(KafkaError, Option<String>)> {
    let mut errors = Vec::new();
    // Bounded: librdkafka's threads may keep adding while we drain.
    for _ in 0..POLL_LIMIT {
        match consumer.poll(Duration::ZERO) {
            Some(Err(e)) => errors.push((e, describe())),
            Some(Ok(_)) => {}
            None if main_queue_len(consumer) == 0 => break,
            None => {}
        }
    }
    errors
}

/// Most events `pending_errors` serves in one call.
const POLL_LIMIT: usize = 10_000;

/// Commits `offsets` for `consumer`'s group and waits at most `wait` for the broker's answer:
/// `Ok` when it confirmed the commit, else the error (`OperationTimedOut` when no answer came
/// in time). (librdkafka's synchronous commit has no deadline: with the coordinator down it
/// waits up to `session.timeout.ms`.)
pub fn commit_within<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &TopicPartitionList,
    wait: Duration,
) -> Result<(), RDKafkaErrorCode> {
    let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: live client handle and list; the reply queue is ours and released here (a late
    // reply to a released queue is dropped by librdkafka).
    unsafe {
        let rk = consumer.client().native_ptr();
        let replies = rd::rd_kafka_queue_new(rk);
        if replies.is_null() {
            return Err(RDKafkaErrorCode::Fail);
        }
        let sent =
            rd::rd_kafka_commit_queue(rk, offsets.ptr(), replies, None, std::ptr::null_mut());
        let result = if sent != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(sent.into())
        } else {
            let event = rd::rd_kafka_queue_poll(replies, wait_ms);
            if event.is_null() {
                Err(RDKafkaErrorCode::OperationTimedOut)
            } else {
                let answer = rd::rd_kafka_event_error(event);
                rd::rd_kafka_event_destroy(event);
                match answer {
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
                    err => Err(err.into()),
                }
            }
        };
        rd::rd_kafka_queue_destroy(replies);
        result
    }
}

/// A message (or a per-partition event) owned from librdkafka until dropped.
pub struct RawMessage(NonNull<rd::rd_kafka_message_t>);

// SAFETY: a librdkafka message is a heap object with no thread affinity; we only read it and
// destroy it once.
unsafe impl Send for RawMessage {}

impl RawMessage {
    fn get(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the pointer is valid until `Drop`.
        unsafe { self.0.as_ref() }
    }

    /// The error carried instead of a message (`None` for a message).
    pub fn error(&self) -> Option<RDKafkaErrorCode> {
        let err = self.get().err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| err.into())
    }

    /// Offset of the message; for an end-of-partition event, the offset the log ends at.
    pub fn offset(&self) -> i64 {
        self.get().offset
    }

    /// Timestamp in ms, or -1 when the message has none.
    pub fn timestamp(&self) -> i64 {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: valid message pointer; `kind` is writable.
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.0.as_ptr(), &mut kind) };
        if kind == rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE {
            -1
        } else {
            ts
        }
    }

    /// The value (`None` for a null payload), borrowed from librdkafka.
    pub fn payload(&self) -> Option<&[u8]> {
        let m = self.get();
        // SAFETY: librdkafka's payload is `len` bytes owned by the message.
        (!m.payload.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) })
    }

    /// The key (`None` for a null key), borrowed from librdkafka.
    pub fn key(&self) -> Option<&[u8]> {
        let m = self.get();
        // SAFETY: librdkafka's key is `key_len` bytes owned by the message.
        (!m.key.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(m.key as *const u8, m.key_len) })
    }
}

/// A message's headers, borrowed from librdkafka: in the order the producer wrote them,
/// duplicates kept.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    /// NULL when the message has no headers.
    list: *const rd::rd_kafka_headers_t,
    _message: std::marker::PhantomData<&'a RawMessage>,
}

impl<'a> Headers<'a> {
    /// Number of headers.
    pub fn len(&self) -> usize {
        if self.list.is_null() {
            0
        } else {
            // SAFETY: a live header list owned by the borrowed message.
            unsafe { rd::rd_kafka_header_cnt(self.list) }
        }
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Header `index`: its name and its value (`None` for a null value, which Kafka tells
    /// apart from an empty one).
    pub fn get(&self, index: usize) -> Option<(&'a [u8], Option<&'a [u8]>)> {
        if self.list.is_null() {
            return None;
        }
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: a live header list; the out-params are locals. The name is NUL-terminated
        // and the value `size` bytes, both owned by the message.
        unsafe {
            let err =
                rd::rd_kafka_header_get_all(self.list, index, &mut name, &mut value, &mut size);
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            let name = std::ffi::CStr::from_ptr(name).to_bytes();
            let value =
                (!value.is_null()).then(|| std::slice::from_raw_parts(value as *const u8, size));
            Some((name, value))
        }
    }
}

impl RawMessage {
    /// The headers (parsed by librdkafka on the first call, then cached in the message).
    /// Read only when asked for: plain reads never pay for them.
    pub fn headers(&self) -> Headers<'_> {
        let mut list: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: valid message pointer; `list` is writable. librdkafka returns _NOENT (and
        // leaves `list` NULL) for a message without headers.
        let err = unsafe { rd::rd_kafka_message_headers(self.0.as_ptr(), &mut list) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            list = std::ptr::null_mut();
        }
        Headers {
            list,
            _message: std::marker::PhantomData,
        }
    }
}

impl Drop for RawMessage {
    fn drop(&mut self) {
        // SAFETY: owned since `rd_kafka_consume_queue` returned it; destroyed once.
        unsafe { rd::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

/// The fetch queue of one partition, detached from the consumer's main queue.
pub struct PartitionQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// The client, for its cached watermarks; it outlives its queues.
    client: NonNull<rd::rd_kafka_t>,
    topic: CString,
    partition: i32,
    // Kept alive while librdkafka may call the non-empty callback with it.
    notify: Box<Arc<dyn Notify>>,
}

// SAFETY: librdkafka queues are thread-safe; the callback target is Send + Sync.
unsafe impl Send for PartitionQueue {}

unsafe extern "C" fn on_nonempty(_: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Box<Arc<dyn Notify>>` of a live queue (the callback is removed
    // before that box is dropped). Never unwind into C.
    let notify = unsafe { &*(opaque as *const Arc<dyn Notify>) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| notify.notify()));
}

impl PartitionQueue {
    /// Detaches the queue of `topic:partition` from `consumer`'s main queue. Call before the
    /// partition is assigned: librdkafka then never forwards its messages elsewhere.
    pub fn new<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
        notify: Arc<dyn Notify>,
    ) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        let client = NonNull::new(consumer.client().native_ptr())?;
        // SAFETY: live client handle; valid C string.
        let raw =
            unsafe { rd::rd_kafka_queue_get_partition(client.as_ptr(), topic.as_ptr(), partition) };
        let queue = NonNull::new(raw)?;
        let notify: Box<Arc<dyn Notify>> = Box::new(notify);
        // SAFETY: `queue` is live; the opaque pointer outlives the registration (see Drop).
        unsafe {
            rd::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut());
            rd::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(on_nonempty),
                &*notify as *const Arc<dyn Notify> as *mut c_void,
            );
        }
        Some(PartitionQueue {
            queue,
            client,
            topic,
            partition,
            notify,
        })
    }

    /// The partition's high watermark as librdkafka last saw it in a fetch response (no
    /// broker request); -1 when not known yet.
    pub fn high_watermark(&self) -> i64 {
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client outlives its queues; valid C string; out-params are locals.
        let err = unsafe {
            rd::rd_kafka_get_watermark_offsets(
                self.client.as_ptr(),
                self.topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            high
        } else {
            -1
        }
    }

    /// Moves the messages and events that are ready (at most [`POLL_BATCH`]) to the back of
    /// `out`, without waiting; returns how many. One call per batch rather than per message:
    /// librdkafka takes its queue lock and reads the clock once per call.
    pub fn poll_into(&self, out: &mut VecDeque<RawMessage>) -> usize {
        let mut taken = [std::ptr::null_mut(); POLL_BATCH];
        // SAFETY: live queue; `taken` has room for POLL_BATCH pointers; each returned message
        // is owned by us from here on.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, taken.as_mut_ptr(), POLL_BATCH)
        };
        let n = usize::try_from(n).unwrap_or(0).min(POLL_BATCH);
        out.extend(
            taken[..n]
                .iter()
                .filter_map(|&m| NonNull::new(m))
                .map(RawMessage),
        );
        n
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: unregister the callback before its target goes away, then release the queue.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
        let _ = &self.notify;
    }
}
