//! Error kinds of the core, one per failure class, each mapping to one canonical status code.

use std::fmt;

/// Canonical status code (the numbering shared by gRPC and `absl::StatusCode`).
///
/// The core picks the code; the TensorFlow shim only translates the number.
#[allow(non_camel_case_types)]
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

/// Failure classes of the core. Each maps to exactly one [`kd_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed entry, config, or argument.
    InvalidArgument,
    /// Unknown topic or partition.
    NotFound,
    /// Brokers unreachable past the bounded deadline.
    Unavailable,
    /// SASL/TLS authentication failed.
    Unauthenticated,
    /// Authorization (ACL) failure.
    PermissionDenied,
    /// The saved position is below the log start (retention deleted it).
    DataLoss,
    /// A checkpoint from other streams or an unknown format.
    FailedPrecondition,
    /// A bug; includes panics caught at the C ABI.
    Internal,
}

impl ErrorKind {
    /// The status code for this kind.
    pub fn code(self) -> kd_code {
        match self {
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

/// An error of the core: a kind and a message that names the bad item (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The failure class.
    pub kind: ErrorKind,
    /// Human-readable message naming the bad item.
    pub message: String,
}

impl Error {
    /// Builds an error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Shorthand for [`ErrorKind::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, Error>;
