//! Keeps a consumer-group member in its group while its iterator is not being read.
//!
//! librdkafka takes a member out of its group when the application has not polled for
//! `max.poll.interval.ms`; a training loop that stops pulling elements for a long evaluation
//! or a slow checkpoint would then be evicted, and its partitions rebalanced twice (away and
//! back). While the reader is idle, a service thread serves the consumer's event queue
//! instead: that counts as polling. It emits nothing and commits nothing: rebalances it
//! receives are recorded by the consumer's context and acted on by the reader's next read, and
//! a fatal error it receives is handed to that read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::client::{is_fatal, kafka_error, Consumer};
use crate::error::{Error, ErrorKind};

/// What the reader and the service thread share.
struct Shared {
    consumer: Arc<Consumer>,
    /// The reader is using the consumer (set for the whole of a read or commit).
    reading: AtomicBool,
    /// The service thread is polling the consumer.
    serving: AtomicBool,
    /// Milliseconds since `epoch` when the reader last finished using the consumer.
    last_read_ms: AtomicU64,
    epoch: Instant,
    stop: AtomicBool,
    /// A fatal error the service thread received, for the reader's next read.
    error: Mutex<Option<Error>>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The service thread of one connected group member; stopped (and joined) when dropped.
pub(crate) struct Keeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The reader's claim on the consumer while it reads; released when dropped.
pub(crate) struct Reading(Arc<Shared>);

impl Drop for Reading {
    fn drop(&mut self) {
        let shared = &self.0;
        shared
            .last_read_ms
            .store(shared.now_ms(), Ordering::Relaxed);
        shared.reading.store(false, Ordering::SeqCst);
    }
}

impl Keeper {
    /// Starts serving `consumer` whenever the reader has been idle for `idle_after`.
    pub(crate) fn start(consumer: Arc<Consumer>, idle_after: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            consumer,
            reading: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            last_read_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let thread = std::thread::Builder::new()
            .name("kafka-dataset-keeper".into())
            .spawn({
                let shared = shared.clone();
                move || serve(&shared, idle_after)
            })?;
        Ok(Keeper {
            shared,
            thread: Some(thread),
        })
    }

    /// Claims the consumer for the reader: waits for a poll the service thread is serving to
    /// end (a non-blocking poll: microseconds), then keeps the thread off until released.
    pub(crate) fn reading(&self) -> Reading {
        let shared = &self.shared;
        // With `serving` below, a Dekker-style handshake (SeqCst on both sides): the thread
        // sets `serving` then checks `reading`; the reader sets `reading` then checks
        // `serving`. At least one of them sees the other.
        shared.reading.store(true, Ordering::SeqCst);
        while shared.serving.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        Reading(shared.clone())
    }

    /// A fatal error the service thread received since the last call, if any.
    pub(crate) fn take_error(&self) -> Option<Error> {
        self.shared.error.lock().take()
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The service thread: every `idle_after / 4`, when the reader has been idle for `idle_after`,
/// serves the consumer's event queue without blocking.
fn serve(shared: &Shared, idle_after: Duration) {
    let tick = (idle_after / 4).max(Duration::from_millis(10));
    let idle_ms = u64::try_from(idle_after.as_millis()).unwrap_or(u64::MAX);
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::park_timeout(tick);
        let idle = shared
            .now_ms()
            .saturating_sub(shared.last_read_ms.load(Ordering::Relaxed));
        if idle < idle_ms || shared.stop.load(Ordering::SeqCst) {
            continue;
        }
        shared.serving.store(true, Ordering::SeqCst);
        if !shared.reading.load(Ordering::SeqCst) {
            poll_events(shared);
        }
        shared.serving.store(false, Ordering::SeqCst);
    }
}

/// Serves what waits on the consumer's event queue: rebalances go to the consumer's context
/// (the reader acts on them), the first fatal error is kept for the reader.
fn poll_events(shared: &Shared) {
    // One poll even when empty: it is what tells librdkafka the application is alive.
    while let Some(event) = shared.consumer.poll(Duration::ZERO) {
        let error = match event {
            // Each partition has its own queue; a message here would be lost to the merge.
            Ok(_) => Error::new(
                ErrorKind::Internal,
                "a message arrived on the consumer's main queue while the iterator was idle",
            ),
            Err(e) if is_fatal(&e) => kafka_error("Kafka consumer", &e),
            Err(_) => continue, // transient: librdkafka retries and reconnects by itself
        };
        shared.error.lock().get_or_insert(error);
    }
}
