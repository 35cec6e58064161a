//! PLACEHOLDER (to be replaced): bootstrap.
use crate::error::{Error, Result};
/// A 128-byte unique id.
#[derive(Clone)]
pub struct UniqueId {
    bytes: [u8; 128],
}
impl UniqueId {
    /// Creates an id and starts the store server.
    pub fn new() -> Result<Self> {
        Err(Error::internal("bootstrap not written yet"))
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 128] {
        &self.bytes
    }
}
