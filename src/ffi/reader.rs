//! `kd_reader`: one iterator (consumer, merge and position): next, save, restore, positions.

use std::time::Duration;

use super::dataset::kd_dataset;
use super::error::kd_error;
use super::views::{
    header_view, kd_bytes, kd_header_view, kd_message_view, kd_str, message_view, read_bytes,
    view_str,
};
use super::{arg, arg_mut, boundary, free_handle};
use crate::error::Error;
use crate::reader::{Next, Reader};

/// One iterator: consumer, merge and position. Calls on one reader must be serialized.
pub struct kd_reader {
    reader: Reader,
}

/// What [`kd_reader_next_batch`] produced.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kd_next_status {
    /// The next elements are ready to read with [`kd_reader_batch_messages`].
    KD_NEXT_ELEMENT = 0,
    /// Nothing within `max_wait_ms`; check for cancellation and call again.
    KD_NEXT_PENDING = 1,
    /// End of sequence; further calls keep returning it.
    KD_NEXT_END = 2,
}

impl From<Next> for kd_next_status {
    fn from(next: Next) -> Self {
        match next {
            Next::Element => kd_next_status::KD_NEXT_ELEMENT,
            Next::Pending => kd_next_status::KD_NEXT_PENDING,
            Next::End => kd_next_status::KD_NEXT_END,
        }
    }
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

/// # Safety
/// `reader` must be NULL or a live reader not used concurrently.
unsafe fn reader_mut<'a>(reader: *mut kd_reader) -> Result<&'a mut Reader, Error> {
    Ok(&mut arg_mut(reader, "reader")?.reader)
}

/// # Safety
/// `reader` must be NULL or a live reader.
unsafe fn reader_ref<'a>(reader: *const kd_reader) -> Result<&'a Reader, Error> {
    Ok(&arg(reader, "reader")?.reader)
}

fn wait(max_wait_ms: u32) -> Duration {
    Duration::from_millis(u64::from(max_wait_ms))
}

/// Resolves the dataset's streams against the cluster (all-partitions form, named starts:
/// errors such as an unknown topic surface here) and positions them at their starts; the
/// reader's consumer is created by its first read. On success writes a new reader to
/// `*out_reader`.
///
/// # Safety
/// `dataset` must be a live dataset; `out_reader` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_new(
    dataset: *const kd_dataset,
    out_reader: *mut *mut kd_reader,
) -> *mut kd_error {
    boundary(|| {
        let dataset = arg(dataset, "dataset")?;
        let out_reader = arg_mut(out_reader, "out_reader")?;
        let reader = Reader::new(&dataset.spec)?;
        *out_reader = Box::into_raw(Box::new(kd_reader { reader }));
        Ok(())
    })
}

/// The one read call. Waits at most `max_wait_ms` for the next element, then takes up to
/// `max_elements - 1` more that are ready without waiting (`max_elements` 1 reads one
/// element). On success writes `*out_status` and, for `KD_NEXT_ELEMENT`, the batch size
/// (1..=`max_elements`) to `*out_count`; read the elements with [`kd_reader_batch_messages`]
/// until the next call on `reader`. After an error the reader may be called again.
/// `max_elements` 0 is InvalidArgument.
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
        let out_status = arg_mut(out_status, "out_status")?;
        let out_count = arg_mut(out_count, "out_count")?;
        if max_elements == 0 {
            return Err(Error::invalid("`max_elements` must be at least 1"));
        }
        let next = reader.next_batch(max_elements, wait(max_wait_ms))?;
        *out_count = match next {
            Next::Element => reader.batch().len(),
            _ => 0,
        };
        *out_status = next.into();
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
        arg_mut(out_messages, "out_messages")?;
        // SAFETY: the caller provides `count` writable views.
        let out = std::slice::from_raw_parts_mut(out_messages, count);
        for (slot, (m, stream)) in out.iter_mut().zip(batch) {
            *slot = message_view(m, stream);
        }
        Ok(())
    })
}

/// The headers of the first `count` elements of the last batch, for callers that want them
/// (they are read from librdkafka only here). Writes each element's number of headers to
/// `out_header_counts[0..count]` and their sum to `*out_total`; when the sum is at most
/// `capacity`, also writes every header, element after element and in each element's order
/// (duplicates kept), to `out_headers[0..sum]` (views valid until the next call that reads or
/// moves `reader`). When the sum exceeds `capacity`, `out_headers` is left alone: call again
/// with room for `*out_total` headers. `out_headers` may be NULL when `capacity` is 0.
///
/// # Safety
/// `reader` must be a live reader; `out_header_counts` must point to `count` writable sizes,
/// `out_headers` to `capacity` writable views, `out_total` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_batch_headers(
    reader: *const kd_reader,
    count: usize,
    out_header_counts: *mut usize,
    out_headers: *mut kd_header_view,
    capacity: usize,
    out_total: *mut usize,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_ref(reader)?;
        let out_total = arg_mut(out_total, "out_total")?;
        let batch = reader.batch();
        if count > batch.len() {
            return Err(Error::invalid(format!(
                "asked for the headers of {count} batch elements, the batch has {}",
                batch.len()
            )));
        }
        let counts: &mut [usize] = if count == 0 {
            &mut []
        } else {
            arg_mut(out_header_counts, "out_header_counts")?;
            // SAFETY: the caller provides `count` writable sizes.
            std::slice::from_raw_parts_mut(out_header_counts, count)
        };
        let messages: Vec<_> = batch.take(count).map(|(m, _)| m.headers()).collect();
        let total: usize = messages.iter().map(|h| h.len()).sum();
        if total > 0 && total <= capacity {
            arg_mut(out_headers, "out_headers")?;
            // SAFETY: the caller provides `capacity` writable views.
            let out = std::slice::from_raw_parts_mut(out_headers, total);
            let mut slots = out.iter_mut();
            for headers in &messages {
                for i in 0..headers.len() {
                    let (name, value) = headers.get(i).ok_or_else(|| {
                        Error::new(
                            crate::error::ErrorKind::Internal,
                            format!("header {i} of {} vanished", headers.len()),
                        )
                    })?;
                    if let Some(slot) = slots.next() {
                        *slot = header_view(name, value);
                    }
                }
            }
        }
        for (slot, headers) in counts.iter_mut().zip(&messages) {
            *slot = headers.len();
        }
        *out_total = total;
        Ok(())
    })
}

/// Serializes the reader's position (next unemitted offset per stream). On success writes a
/// view valid until the next call on `reader`. No side effects (TF may save after every
/// element); commit a position for a group with [`kd_reader_commit`].
///
/// # Safety
/// `reader` must be a live reader not used concurrently; `out_state` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_save(
    reader: *mut kd_reader,
    out_state: *mut kd_bytes,
) -> *mut kd_error {
    boundary(|| {
        let reader = reader_mut(reader)?;
        let out_state = arg_mut(out_state, "out_state")?;
        let bytes = reader.save();
        *out_state = kd_bytes {
            data: bytes.as_ptr(),
            len: bytes.len(),
        };
        Ok(())
    })
}

/// Commits the reader's current position (next unemitted offset per stream) for the dataset's
/// consumer group, asynchronously, so broker-side lag tools show it; a no-op without a group
/// or before the first element. Besides these explicit commits, a reader with a group commits
/// its emitted position periodically while reading.
///
/// # Safety
/// `reader` must be a live reader not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_commit(reader: *mut kd_reader) -> *mut kd_error {
    boundary(|| {
        reader_mut(reader)?.commit_position();
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
        reader.restore(read_bytes(state, state_len, "state")?)
    })
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
        *arg_mut(out_count, "out_count")? = reader.stream_count();
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
        let out_position = arg_mut(out_position, "out_position")?;
        let p = reader.position(index).ok_or_else(|| {
            Error::invalid(format!(
                "stream index {index} is out of range ({} streams)",
                reader.stream_count()
            ))
        })?;
        *out_position = kd_stream_position {
            topic: view_str(&p.stream.topic),
            partition: p.stream.partition,
            next_offset: p.next_offset,
            finished: p.finished,
        };
        Ok(())
    })
}

/// Frees a reader (closes its consumer). NULL is ignored.
///
/// # Safety
/// `reader` must be NULL or a reader from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kd_reader_free(reader: *mut kd_reader) {
    free_handle(reader)
}
