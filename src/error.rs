//! Error kinds of the core, one per failure class. The C ABI gives each its status code
//! (`ffi::kd_code`).

use std::fmt;

/// Failure classes of the core. Each maps to exactly one status code (`ffi::kd_code`).
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
