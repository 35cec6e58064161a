//! Safe wrappers of the OS calls that more than one part of oxccl makes: socket addresses,
//! non-blocking TCP connects, `poll`/`ppoll`, the dynamic loader, other processes, the
//! host's network interfaces and identity.
//!
//! A leaf: it depends on nothing in the crate but [`crate::error`], so the transport
//! backends and the bootstrap both use it without either importing the other. Each helper
//! keeps the errno handling its callers relied on (EINTR retried or read as "not yet",
//! EINPROGRESS as a connect under way) and leaves the wording and kind of an error to the
//! caller where callers differ, by returning the `io::Error` or a small enum.

pub(crate) mod dl;
pub(crate) mod host;
pub(crate) mod ifaddr;
pub(crate) mod poll;
pub(crate) mod process;
pub(crate) mod sockaddr;
pub(crate) mod socket;
