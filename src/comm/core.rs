//! The engine behind a communicator, with its transport type erased.

use crate::algo::Schedule;
use crate::engine::{Buffers, CallDesc, Engine};
use crate::error::Result;
use crate::transport::{Tag, Transport};

/// What a communicator needs from its engine, whatever the transport.
pub(crate) trait Core: Send {
    /// Runs one schedule (see [`Engine::run`]).
    ///
    /// # Safety
    /// As [`Engine::run`].
    unsafe fn run(&mut self, desc: &CallDesc, expect: Tag, sched: &Schedule, bufs: Buffers) -> Result<()>;

    /// Closes every connection.
    fn shutdown(&mut self);
}

impl<T: Transport> Core for Engine<T> {
    unsafe fn run(&mut self, desc: &CallDesc, expect: Tag, sched: &Schedule, bufs: Buffers) -> Result<()> {
        // SAFETY: forwarded.
        unsafe { Engine::run(self, desc, expect, sched, bufs) }
    }

    fn shutdown(&mut self) {
        Engine::shutdown(self)
    }
}
