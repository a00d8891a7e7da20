//! `kd_error`: an owned error (status code and message), and the status codes.

use super::free_handle;
use super::views::{kd_str, view_str, EMPTY_STR};
use crate::error::{Error, ErrorKind};

/// Canonical status code (the numbering shared by gRPC and `absl::StatusCode`).
///
/// The core picks the failure class; this layer gives it its number; the TensorFlow shim only
/// translates the number into a `Status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kd_code {
    /// Success (never carried by an error).
    KD_CODE_OK = 0,
    /// The operation was cancelled by the caller.
    KD_CODE_CANCELLED = 1,
    /// An error with no better class.
    KD_CODE_UNKNOWN = 2,
    /// Bad entry, bad config key or value, bad argument.
    KD_CODE_INVALID_ARGUMENT = 3,
    /// A deadline passed.
    KD_CODE_DEADLINE_EXCEEDED = 4,
    /// Unknown topic or partition.
    KD_CODE_NOT_FOUND = 5,
    /// Authorization failure.
    KD_CODE_PERMISSION_DENIED = 7,
    /// A checkpoint that does not belong to this dataset.
    KD_CODE_FAILED_PRECONDITION = 9,
    /// Normal end of data.
    KD_CODE_OUT_OF_RANGE = 11,
    /// A bug (for example a Rust panic caught at the C ABI).
    KD_CODE_INTERNAL = 13,
    /// Brokers unreachable past the deadline.
    KD_CODE_UNAVAILABLE = 14,
    /// Data the position needs was deleted (retention).
    KD_CODE_DATA_LOSS = 15,
    /// Authentication failure.
    KD_CODE_UNAUTHENTICATED = 16,
}

impl From<ErrorKind> for kd_code {
    /// The one mapping from a failure class to its status code.
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => kd_code::KD_CODE_INVALID_ARGUMENT,
            ErrorKind::NotFound => kd_code::KD_CODE_NOT_FOUND,
            ErrorKind::Unavailable => kd_code::KD_CODE_UNAVAILABLE,
            ErrorKind::Unauthenticated => kd_code::KD_CODE_UNAUTHENTICATED,
            ErrorKind::PermissionDenied => kd_code::KD_CODE_PERMISSION_DENIED,
            ErrorKind::DataLoss => kd_code::KD_CODE_DATA_LOSS,
            ErrorKind::FailedPrecondition => kd_code::KD_CODE_FAILED_PRECONDITION,
            ErrorKind::Internal => kd_code::KD_CODE_INTERNAL,
        }
    }
}

/// An owned error: a status code and a message. Free with [`kd_error_free`].
pub struct kd_error {
    code: kd_code,
    message: String,
}

pub(super) fn new_error(err: Error) -> *mut kd_error {
    Box::into_raw(Box::new(kd_error {
        code: err.kind.into(),
        message: err.message,
    }))
}

/// The status code of `error` (`KD_CODE_INTERNAL` for NULL).
///
/// # Safety
/// `error` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn kd_error_code(error: *const kd_error) -> kd_code {
    error.as_ref().map_or(kd_code::KD_CODE_INTERNAL, |e| e.code)
}

/// The message of `error`, borrowed until [`kd_error_free`] (empty for NULL).
///
/// # Safety
/// `error` must be NULL or a live error from this library.
#[no_mangle]
pub unsafe extern "C" fn kd_error_message(error: *const kd_error) -> kd_str {
    error.as_ref().map_or(EMPTY_STR, |e| view_str(&e.message))
}

/// Frees an error. NULL is ignored.
///
/// # Safety
/// `error` must be NULL or an error from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kd_error_free(error: *mut kd_error) {
    free_handle(error)
}
