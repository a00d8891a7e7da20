//! Borrowed `{data,len}` views across the ABI, and owned text (`kd_text`).

use std::os::raw::c_char;

use super::{free_handle, null_argument};
use crate::error::Error;
use crate::reader::Message;
use crate::spec::StreamSpec;

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

/// One message header. Every view is borrowed from the reader and valid until the next call
/// that reads or moves it.
#[repr(C)]
pub struct kd_header_view {
    /// Header name (bytes as the producer wrote them; Kafka clients write UTF-8).
    pub name: kd_bytes,
    /// Header value (`len` 0 for a null or an empty value; `value_is_null` tells them apart).
    pub value: kd_bytes,
    /// The value is null (Kafka's "no value"), not merely empty.
    pub value_is_null: bool,
}

/// Owned text (UTF-8) returned by the library, e.g. a stats snapshot. Read it with
/// [`kd_text_view`], free it with [`kd_text_free`].
pub struct kd_text {
    pub(super) text: String,
}

/// The empty view (NULL data), for a NULL handle.
pub(super) const EMPTY_STR: kd_str = kd_str {
    data: std::ptr::null(),
    len: 0,
};

/// A view of `s`, borrowed for as long as `s` lives.
pub(super) fn view_str(s: &str) -> kd_str {
    kd_str {
        data: s.as_ptr() as *const c_char,
        len: s.len(),
    }
}

/// A view of `b` (NULL data for `None`).
pub(super) fn view_bytes(b: Option<&[u8]>) -> kd_bytes {
    b.map_or(
        kd_bytes {
            data: std::ptr::null(),
            len: 0,
        },
        |v| kd_bytes {
            data: v.as_ptr(),
            len: v.len(),
        },
    )
}

/// The view of one element and the partition it came from.
pub(super) fn message_view(m: &Message, stream: &StreamSpec) -> kd_message_view {
    kd_message_view {
        value: view_bytes(m.value()),
        key: view_bytes(m.key()),
        topic: view_str(&stream.topic),
        partition: stream.partition,
        offset: m.offset,
        timestamp: m.timestamp,
    }
}

/// The view of one header (`value` `None` = a null value).
pub(super) fn header_view(name: &[u8], value: Option<&[u8]>) -> kd_header_view {
    kd_header_view {
        name: view_bytes(Some(name)),
        value: view_bytes(value),
        value_is_null: value.is_none(),
    }
}

/// Borrows `len` bytes at `data` (an empty slice for `len` 0), naming `what` when NULL.
///
/// # Safety
/// `data` must point to `len` readable bytes unless `len` is 0.
pub(super) unsafe fn read_bytes<'a>(
    data: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], Error> {
    if len == 0 {
        Ok(&[])
    } else if data.is_null() {
        Err(null_argument(what))
    } else {
        Ok(std::slice::from_raw_parts(data, len))
    }
}

/// Copies a borrowed string, naming `what` when it is NULL or not UTF-8.
///
/// # Safety
/// `s.data` must point to `s.len` readable bytes unless `s.len` is 0.
pub(super) unsafe fn read_str(s: kd_str, what: &str) -> Result<String, Error> {
    let bytes = read_bytes(s.data as *const u8, s.len, what)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// Copies a borrowed array of strings, naming `what[i]` for a bad one.
///
/// # Safety
/// `items` must point to `len` valid `kd_str` unless `len` is 0.
pub(super) unsafe fn read_strs(
    items: *const kd_str,
    len: usize,
    what: &str,
) -> Result<Vec<String>, Error> {
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

/// The contents of `text`, borrowed until [`kd_text_free`] (empty for NULL).
///
/// # Safety
/// `text` must be NULL or a live text from this library.
#[no_mangle]
pub unsafe extern "C" fn kd_text_view(text: *const kd_text) -> kd_str {
    text.as_ref().map_or(EMPTY_STR, |t| view_str(&t.text))
}

/// Frees a text. NULL is ignored.
///
/// # Safety
/// `text` must be NULL or a text from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kd_text_free(text: *mut kd_text) {
    free_handle(text)
}
