//! The one error type of oxccl.
//!
//! Kinds follow NCCL's small set (`ncclResult_t`), each with one meaning. Every message says
//! which rank, which peer and which operation, so that a failure in a 1,000-rank job can be
//! read without a debugger.

use std::fmt;

/// What went wrong, in NCCL's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The operating system, network or hardware failed (a socket call, a missing library).
    System,
    /// A remote peer failed, closed its connection or aborted.
    Remote,
    /// An argument is wrong (bad rank, buffer too small, unknown data type).
    InvalidArgument,
    /// The library was used wrongly (ranks called different collectives, use after abort).
    InvalidUsage,
    /// A wait ran past its deadline (`OXCCL_TIMEOUT`).
    Timeout,
    /// A bug in oxccl itself.
    Internal,
}

impl ErrorKind {
    /// A short lowercase name, as printed in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::System => "system error",
            ErrorKind::Remote => "remote error",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::InvalidUsage => "invalid usage",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of every fallible oxccl call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of `kind` with a message that should name rank, peer and operation.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The NCCL-style kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context` put in front of its message ("rank 3: allreduce #7: ...").
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }

    /// A `System` error from an OS error, with what was being done.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        Error::new(ErrorKind::System, format!("{what}: {err}"))
    }
}

/// Shorthand constructors, one per kind.
macro_rules! ctor {
    ($name:ident, $kind:ident) => {
        #[doc = concat!("An error of kind `", stringify!($kind), "`.")]
        pub fn $name(message: impl Into<String>) -> Self {
            Error::new(ErrorKind::$kind, message)
        }
    };
}

impl Error {
    ctor!(system, System);
    ctor!(remote, Remote);
    ctor!(invalid_argument, InvalidArgument);
    ctor!(invalid_usage, InvalidUsage);
    ctor!(timeout, Timeout);
    ctor!(internal, Internal);
}

/// `Result` with oxccl's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
