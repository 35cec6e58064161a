//! The engine behind a communicator, with its transport type erased.

use crate::engine::{Engine, Part};
use crate::error::Result;
use crate::transport::Transport;

/// What a communicator needs from its engine, whatever the transport.
pub(crate) trait Core: Send {
    /// Runs calls together (see [`Engine::run_group`]).
    ///
    /// # Safety
    /// As [`Engine::run_group`].
    unsafe fn run_group(&mut self, parts: &[Part<'_>]) -> Result<()>;

    /// Closes every connection.
    fn shutdown(&mut self);
}

impl<T: Transport> Core for Engine<T> {
    unsafe fn run_group(&mut self, parts: &[Part<'_>]) -> Result<()> {
        // SAFETY: forwarded.
        unsafe { Engine::run_group(self, parts) }
    }

    fn shutdown(&mut self) {
        Engine::shutdown(self)
    }
}
