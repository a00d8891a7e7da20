//! The C ABI (conventions of rustls-ffi): `kd_<object>_<verb>`, opaque handles with
//! `_new`/`_free`, every fallible call returns an owned `kd_error*` (NULL = ok), out-params are
//! written only on success, NULL arguments are errors, and one `catch_unwind` boundary turns a
//! panic into an Internal error. Borrowed views stay valid until the next call on the same
//! handle.

#![allow(non_camel_case_types)]

use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::dataset::DatasetSpec;
use crate::error::{kd_code, Error, ErrorKind};
use crate::reader::{Message, Next, Reader};
use crate::spec::{Assignment, StreamSpec};

/// An owned error: a status code and a message. Free with [`kd_error_free`].
pub struct kd_error {
    code: kd_code,
    message: String,
}

/// A validated, immutable dataset definition; safe to share between threads.
pub struct kd_dataset {
    spec: DatasetSpec,
}

/// One iterator: consumer, merge and position. Calls on one reader must be serialized.
pub struct kd_reader {
    reader: Reader,
}

/// Owned text (UTF-8) returned by the library, e.g. a stats snapshot. Read it with
/// [`kd_text_view`], free it with [`kd_text_free`].
pub struct kd_text {
    text: String,
}

/// Borrowed bytes; `data` may be NULL when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kd_bytes {
    /// First byte.
    pub data: *const u8,
    /// Number of bytes.
    pub len: usize,
}

/// Borrowed UTF-8 text, not NUL-terminated; `data` may be NULL when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kd_str {
    /// First byte.
    pub data: *const c_char,
    /// Number of bytes.
    pub len: usize,
}

/// The constructor arguments of a dataset, all borrowed for the duration of
/// [`kd_dataset_new`]. Arrays may be NULL when their length is 0.
#[repr(C)]
pub struct kd_dataset_options {
    /// Subscription entries `topic:partition:offset:last`.
    pub topics: *const kd_str,
    /// Number of entries.
    pub topics_len: usize,
    /// Bootstrap servers.
    pub servers: kd_str,
    /// Consumer group id; empty for none.
    pub group: kd_str,
    /// End at the end of each partition's log.
    pub eof: bool,
    /// Wait slice and idle deadline, in ms (> 0).
    pub timeout_ms: i64,
    /// Client properties `Key=Value`.
    pub config_global: *const kd_str,
    /// Number of client properties.
    pub config_global_len: usize,
    /// Topic properties `Key=Value`.
    pub config_topic: *const kd_str,
    /// Number of topic properties.
    pub config_topic_len: usize,
    /// Number of workers splitting the partitions (1 = read them all).
    pub num_workers: i64,
    /// This worker, `0..num_workers`.
    pub worker_index: i64,
    /// Join the consumer group and read the partitions it assigns (entries are topic names).
    pub subscribe: bool,
}

/// What [`kd_reader_next`] produced.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kd_next_status {
    /// `*out_message` holds the next element.
    KD_NEXT_ELEMENT = 0,
    /// Nothing within `max_wait_ms`; check for cancellation and call again.
    KD_NEXT_PENDING = 1,
    /// End of sequence; further calls keep returning it.
    KD_NEXT_END = 2,
}

/// One element. Every view is borrowed from the reader and valid until the next call on it.
#[repr(C)]
pub struct kd_message_view {
    /// Message value (a null payload has `len` 0).
    pub value: kd_bytes,
    /// Message key (a null key has `len` 0).
    pub key: kd_bytes,
    /// Topic name.
    pub topic: kd_str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms used for ordering (the partition time for messages without one).
    pub timestamp: i64,
}

fn new_error(err: Error) -> *mut kd_error {
    Box::into_raw(Box::new(kd_error {
        code: err.kind.code(),
        message: err.message,
    }))
}

fn null_argument(name: &str) -> Error {
    Error::invalid(format!("kafka-dataset C API: argument `{name}` is NULL"))
}

/// # Safety
/// `reader` must be NULL or a live reader not used concurrently.
unsafe fn reader_mut<'a>(reader: *mut kd_reader) -> Result<&'a mut Reader, Error> {
    Ok(&mut reader
        .as_mut()
        .ok_or_else(|| null_argument("reader"))?
        .reader)
}

/// # Safety
/// `reader` must be NULL or a live reader.
unsafe fn reader_ref<'a>(reader: *const kd_reader) -> Result<&'a Reader, Error> {
    Ok(&reader
        .as_ref()
        .ok_or_else(|| null_argument("reader"))?
        .reader)
}

/// # Safety
/// `out` must be NULL or writable.
unsafe fn out_param<'a, T>(out: *mut T, name: &str) -> Result<&'a mut T, Error> {
    out.as_mut().ok_or_else(|| null_argument(name))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Test-only (feature `test-hooks`, never in a release build of the library): panics inside
/// the panic boundary with `message`, so a test can check that a Rust panic reaches C as an
/// Internal error and the process lives on.
///
/// # Safety
/// `message` must be a valid view.
#[cfg(feature = "test-hooks")]
#[no_mangle]
pub unsafe extern "C" fn kd_test_panic(message: kd_str) -> *mut kd_error {
    boundary(|| {
        let message = read_str(message, "message")?;
        panic!("{message}")
    })
}

/// The one panic boundary: runs `f`, turning an `Err` or a panic into an owned `kd_error*`.
fn boundary(f: impl FnOnce() -> Result<(), Error>) -> *mut kd_error {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(err)) => new_error(err),
        Err(payload) => new_error(Error::new(
            ErrorKind::Internal,
            format!(
                "kafka-dataset bug (Rust panic): {}",
                panic_message(payload.as_ref())
            ),
        )),
    }
}

/// Copies a borrowed string, naming `what` when it is not UTF-8.
///
/// # Safety
/// `s.data` must point to `s.len` readable bytes unless `s.len` is 0.
unsafe fn read_str(s: kd_str, what: &str) -> Result<String, Error> {
    if s.len == 0 {
        return Ok(String::new());
    }
    if s.data.is_null() {
        return Err(null_argument(what));
    }
    let bytes = std::slice::from_raw_parts(s.data as *const u8, s.len);
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// # Safety
/// `items` must point to `len` valid `kd_str` unless `len` is 0.
unsafe fn read_strs(items: *const kd_str, len: usize, what: &str) -> Result<Vec<String>, Error> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if items.is_null() {
        return Err(null_argument(what));
    }
    std::slice::from_raw_parts(items, len)
        .iter()
        .enumerate()
        .map(|(i, s)| read_str(*s, &format!("{what}[{i}]")))
        .collect()
}

fn status_of(next: Next) -> kd_next_status {
    match next {
        Next::Element => kd_next_status::KD_NEXT_ELEMENT,
        Next::Pending => kd_next_status::KD_NEXT_PENDING,
        Next::End => kd_next_status::KD_NEXT_END,
    }
}

fn message_view(m: &Message, stream: &StreamSpec) -> kd_message_view {
    kd_message_view {
        value: view_bytes(m.value()),
        key: view_bytes(m.key()),
        topic: kd_str {
            data: stream.topic.as_ptr() as *const c_char,
            len: stream.topic.len(),
        },
        partition: stream.partition,
        offset: m.offset,
        timestamp: m.timestamp,
    }
}

fn view_bytes(b: Option<&[u8]>) -> kd_bytes {
    match b {
        Some(v) => kd_bytes {
            data: v.as_ptr(),
            len: v.len(),
        },
        None => kd_bytes {
            data: std::ptr::null(),
            len: 0,
        },
    }
}

/// The status code of `error` (`KD_CODE_INTERNAL` for NULL).
///
/// # Safety
/// `error` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn kd_error_code(error: *const kd_error) -> kd_code {
    match error.as_ref() {
        Some(e) => e.code,
        None => kd_code::KD_CODE_INTERNAL,
    }
}

/// The message of `error`, borrowed until [`kd_error_free`].
///
/// # Safety
/// `error` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn kd_error_message(error: *const kd_error) -> kd_str {
    match error.as_ref() {
        Some(e) => kd_str {
            data: e.message.as_ptr() as *const c_char,
            len: e.message.len(),
        },
        None => kd_str {
            data: std::ptr::null(),
            len: 0,
        },
    }
}

/// Frees an error. NULL is ignored.
///
/// # Safety
/// `error` must be NULL or an error from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kd_error_free(error: *mut kd_error) {
    if !error.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(error))));
    }
}

/// Parses and validates everything that can be checked without a broker: entries, config,
/// timeout, servers. On success writes a new dataset to `*out_dataset`.
///
/// # Safety
/// `options` must point to valid options whose views are readable for this call; `out_dataset`
/// must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_dataset_new(
    options: *const kd_dataset_options,
    out_dataset: *mut *mut kd_dataset,
) -> *mut kd_error {
    boundary(|| {
        let options = options.as_ref().ok_or_else(|| null_argument("options"))?;
        if out_dataset.is_null() {
            return Err(null_argument("out_dataset"));
        }
        let spec = DatasetSpec::new(
            &read_strs(options.topics, options.topics_len, "topics")?,
            &read_str(options.servers, "servers")?,
            &read_str(options.group, "group")?,
            options.eof,
            options.timeout_ms,
            &read_strs(
                options.config_global,
                options.config_global_len,
                "config_global",
            )?,
            &read_strs(
                options.config_topic,
                options.config_topic_len,
                "config_topic",
            )?,
        )?
        .with_assignment(Assignment::new(options.num_workers, options.worker_index)?);
        let spec = if options.subscribe {
            spec.with_subscription()?
        } else {
            spec
        };
        *out_dataset = Box::into_raw(Box::new(kd_dataset { spec }));
        Ok(())
    })
}

/// Frees a dataset. NULL is ignored. Readers created from it stay valid.
///
/// # Safety
/// `dataset` must be NULL or a dataset from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kd_dataset_free(dataset: *mut kd_dataset) {
    if !dataset.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(dataset))));
    }
}

/// Connects, resolves the dataset's streams (all-partitions form, named starts) and starts
/// reading. On success writes a new reader to `*out_reader`.
///
/// # Safety
/// `dataset` must be a live dataset; `out_reader` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_new(
    dataset: *const kd_dataset,
    out_reader: *mut *mut kd_reader,
) -> *mut kd_error {
    boundary(|| {
        let dataset = dataset.as_ref().ok_or_else(|| null_argument("dataset"))?;
        if out_reader.is_null() {
            return Err(null_argument("out_reader"));
        }
        let reader = Reader::new(&dataset.spec)?;
        *out_reader = Box::into_raw(Box::new(kd_reader { reader }));
        Ok(())
    })
}

/// Waits at most `max_wait_ms` for the next element. On success writes `*out_status` and, for
/// `KD_NEXT_ELEMENT`, `*out_message` (borrowed until the next call on `reader`). After an
/// error the reader may be called again.
///
/// # Safety
/// `reader` must be a live reader not used concurrently; the out-params must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_next(
    reader: *mut kd_reader,
    max_wait_ms: u32,
    out_status: *mut kd_next_status,
    out_message: *mut kd_message_view,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_mut(reader)?;
        if out_status.is_null() {
            return Err(null_argument("out_status"));
        }
        if out_message.is_null() {
            return Err(null_argument("out_message"));
        }
        let next = reader.next(Duration::from_millis(max_wait_ms as u64))?;
        let status = match next {
            Next::Element => {
                let (m, stream) = reader.current();
                *out_message = message_view(m, stream);
                kd_next_status::KD_NEXT_ELEMENT
            }
            other => status_of(other),
        };
        *out_status = status;
        Ok(())
    })
}

/// Serializes the reader's position (next unemitted offset per stream). On success writes a
/// view valid until the next call on `reader`. `commit` also commits the position for a
/// user-given group (pass false when saving after every element, e.g. symbolic checkpoints:
/// commits then follow the periodic interval).
///
/// # Safety
/// `reader` must be a live reader not used concurrently; `out_state` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_save(
    reader: *mut kd_reader,
    commit: bool,
    out_state: *mut kd_bytes,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_mut(reader)?;
        if out_state.is_null() {
            return Err(null_argument("out_state"));
        }
        let bytes = reader.save(commit);
        *out_state = kd_bytes {
            data: bytes.as_ptr(),
            len: bytes.len(),
        };
        Ok(())
    })
}

/// Waits at most `max_wait_ms` for the next element, then takes up to `max_elements - 1` more
/// that are ready without waiting. On success writes `*out_status` and, for `KD_NEXT_ELEMENT`,
/// the batch size (1..=`max_elements`) to `*out_count`; read the elements with
/// [`kd_reader_batch_messages`] until the next call on `reader`. `max_elements` 0 is
/// InvalidArgument.
///
/// # Safety
/// `reader` must be a live reader not used concurrently; the out-params must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_next_batch(
    reader: *mut kd_reader,
    max_elements: usize,
    max_wait_ms: u32,
    out_status: *mut kd_next_status,
    out_count: *mut usize,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_mut(reader)?;
        let out_status = out_param(out_status, "out_status")?;
        let out_count = out_param(out_count, "out_count")?;
        if max_elements == 0 {
            return Err(Error::invalid("`max_elements` must be at least 1"));
        }
        let next = reader.next_batch(max_elements, Duration::from_millis(max_wait_ms as u64))?;
        *out_count = match next {
            Next::Element => reader.batch().len(),
            _ => 0,
        };
        *out_status = status_of(next);
        Ok(())
    })
}

/// Writes the first `count` elements of the last batch to `out_messages[0..count]` (views
/// valid until the next call that reads or moves `reader`). One call per batch.
///
/// # Safety
/// `reader` must be a live reader; `out_messages` must point to `count` writable views.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_batch_messages(
    reader: *const kd_reader,
    out_messages: *mut kd_message_view,
    count: usize,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_ref(reader)?;
        let batch = reader.batch();
        if count > batch.len() {
            return Err(Error::invalid(format!(
                "asked for {count} batch elements, the batch has {}",
                batch.len()
            )));
        }
        if count == 0 {
            return Ok(());
        }
        if out_messages.is_null() {
            return Err(null_argument("out_messages"));
        }
        // SAFETY: the caller provides `count` writable views.
        let out = std::slice::from_raw_parts_mut(out_messages, count);
        for (slot, (m, stream)) in out.iter_mut().zip(batch) {
            *slot = message_view(m, stream);
        }
        Ok(())
    })
}

/// The saved position of one stream, for readable checkpoint keys and tools.
#[repr(C)]
pub struct kd_stream_position {
    /// Topic name, borrowed from the reader until its next mutating call.
    pub topic: kd_str,
    /// Partition.
    pub partition: i32,
    /// Next offset not yet emitted.
    pub next_offset: i64,
    /// The stream produced its last element.
    pub finished: bool,
}

/// Writes the number of streams (partitions being read) to `*out_count`.
///
/// # Safety
/// `reader` must be a live reader; `out_count` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_stream_count(
    reader: *const kd_reader,
    out_count: *mut usize,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_ref(reader)?;
        let out_count = out_param(out_count, "out_count")?;
        *out_count = reader.stream_count();
        Ok(())
    })
}

/// Writes the position of stream `index` (0-based, stream order) to `*out_position`.
///
/// # Safety
/// `reader` must be a live reader; `out_position` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_stream_position(
    reader: *const kd_reader,
    index: usize,
    out_position: *mut kd_stream_position,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_ref(reader)?;
        let out_position = out_param(out_position, "out_position")?;
        let p = reader.position(index).ok_or_else(|| {
            Error::invalid(format!(
                "stream index {index} is out of range ({} streams)",
                reader.stream_count()
            ))
        })?;
        *out_position = kd_stream_position {
            topic: kd_str {
                data: p.stream.topic.as_ptr() as *const c_char,
                len: p.stream.topic.len(),
            },
            partition: p.stream.partition,
            next_offset: p.next_offset,
            finished: p.finished,
        };
        Ok(())
    })
}

/// Checks a saved state against the dataset (FailedPrecondition naming the difference) and
/// moves the reader to it.
///
/// # Safety
/// `reader` must be a live reader not used concurrently; `state` must point to `state_len`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_restore(
    reader: *mut kd_reader,
    state: *const u8,
    state_len: usize,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_mut(reader)?;
        let bytes = if state_len == 0 {
            &[][..]
        } else if state.is_null() {
            return Err(null_argument("state"));
        } else {
            std::slice::from_raw_parts(state, state_len)
        };
        reader.restore(bytes)
    })
}

/// Frees a reader (closes its consumer). NULL is ignored.
///
/// # Safety
/// `reader` must be NULL or a reader from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_free(reader: *mut kd_reader) {
    if !reader.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(reader))));
    }
}

/// Writes a snapshot of every live reader's counters and partition positions, as a JSON
/// document (see the README's "Observability"), to `*out_text` (a new text to free with
/// [`kd_text_free`]). Counters and positions are exact up to each reader's last emitted
/// element; watermarks are the ones librdkafka saw when the reader last took fetched
/// messages; which partitions a reader has, and whether they finished, may lag by up to
/// 0.5 s of reading.
///
/// # Safety
/// `out_text` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_stats_json(out_text: *mut *mut kd_text) -> *mut kd_error {
    boundary(|| {
        let out_text = out_param(out_text, "out_text")?;
        *out_text = Box::into_raw(Box::new(kd_text {
            text: crate::stats::snapshot_json(),
        }));
        Ok(())
    })
}

/// The contents of `text`, borrowed until [`kd_text_free`] (empty for NULL).
///
/// # Safety
/// `text` must be NULL or a live text from this library.
#[no_mangle]
pub unsafe extern "C" fn kd_text_view(text: *const kd_text) -> kd_str {
    match text.as_ref() {
        Some(t) => kd_str {
            data: t.text.as_ptr() as *const c_char,
            len: t.text.len(),
        },
        None => kd_str {
            data: std::ptr::null(),
            len: 0,
        },
    }
}

/// Frees a text. NULL is ignored.
///
/// # Safety
/// `text` must be NULL or a text from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kd_text_free(text: *mut kd_text) {
    if !text.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(text))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> kd_str {
        kd_str {
            data: text.as_ptr() as *const c_char,
            len: text.len(),
        }
    }

    unsafe fn take(err: *mut kd_error) -> (kd_code, String) {
        assert!(!err.is_null(), "expected an error");
        let view = kd_error_message(err);
        let message =
            String::from_utf8_lossy(std::slice::from_raw_parts(view.data as *const u8, view.len))
                .into_owned();
        let code = kd_error_code(err);
        kd_error_free(err);
        (code, message)
    }

    fn options(topics: &[kd_str], timeout_ms: i64) -> kd_dataset_options {
        kd_dataset_options {
            topics: topics.as_ptr(),
            topics_len: topics.len(),
            servers: s("localhost:9092"),
            group: s(""),
            eof: true,
            timeout_ms,
            config_global: std::ptr::null(),
            config_global_len: 0,
            config_topic: std::ptr::null(),
            config_topic_len: 0,
            num_workers: 1,
            worker_index: 0,
            subscribe: false,
        }
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let err = boundary(|| panic!("boom {}", 42));
        let (code, message) = unsafe { take(err) };
        assert_eq!(code, kd_code::KD_CODE_INTERNAL);
        assert!(message.contains("boom 42"), "{message}");
    }

    #[test]
    fn dataset_new_validates_and_writes_out_param_only_on_success() {
        unsafe {
            let topics = [s("t:0:5:3")];
            let mut out: *mut kd_dataset = std::ptr::null_mut();
            let (code, message) = take(kd_dataset_new(&options(&topics, 100), &mut out));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            assert!(message.contains("t:0:5:3"), "{message}");
            assert!(out.is_null());
            let (code, _) = take(kd_dataset_new(&options(&[s("t")], 0), &mut out));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            assert!(kd_dataset_new(&options(&[s("t:0")], 100), &mut out).is_null());
            assert!(!out.is_null());
            kd_dataset_free(out);
        }
    }

    #[test]
    fn null_arguments_are_errors_not_crashes() {
        unsafe {
            let (code, _) = take(kd_dataset_new(std::ptr::null(), std::ptr::null_mut()));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            let mut status = kd_next_status::KD_NEXT_END;
            let mut view = std::mem::zeroed::<kd_message_view>();
            let (code, _) = take(kd_reader_next(
                std::ptr::null_mut(),
                1,
                &mut status,
                &mut view,
            ));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            let (code, _) = take(kd_reader_new(std::ptr::null(), std::ptr::null_mut()));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            let bad_utf8 = [0xffu8, 0xfe];
            let topics = [kd_str {
                data: bad_utf8.as_ptr() as *const c_char,
                len: 2,
            }];
            let mut out: *mut kd_dataset = std::ptr::null_mut();
            let (code, message) = take(kd_dataset_new(&options(&topics, 100), &mut out));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            assert!(message.contains("topics[0]"), "{message}");
            kd_error_free(std::ptr::null_mut());
            kd_dataset_free(std::ptr::null_mut());
            kd_reader_free(std::ptr::null_mut());
        }
    }
}
