//! The progress engine: the only code that drives a transport.
//!
//! Owns: connections to peers (opened lazily, greeted with a proof of the job secret), running a
//! [`Schedule`](crate::algo::Schedule) over them — posting sends and receives as their
//! dependencies allow, keeping several chunks in flight per connection, reducing received
//! chunks on arrival — and turning every failure into an error that names this rank, the
//! peer and the call. Knows nothing of which algorithm produced the schedule.

mod call;
mod connect;
mod drive;
mod exec;
mod greet;
mod news;
mod tag;

pub use exec::{Buffers, Part};
pub use greet::Greeter;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use greet::{fuzz_greeting, fuzz_greeting_seed};
pub use news::News;
pub use tag::{kind_name, CallDesc};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::transport::{Capabilities, ConnectHandle, Transport};

/// Requests in flight per connection when the transport buffers nothing of its own.
const DEPTH: usize = 8;

/// Engine settings (from [`Config`](crate::config::Config)).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Longest time without progress before a wait fails with `Timeout`.
    pub timeout: Duration,
    /// Polls without progress before sleeping in the transport.
    pub spin: u32,
    /// Whether each of those polls first yields the CPU (ranks outnumber CPUs, so the
    /// peer being waited for may need this one).
    pub yield_when_idle: bool,
    /// Most requests in flight per connection ([`in_flight_depth`]).
    pub max_in_flight: usize,
}

/// Requests to keep in flight per connection of a transport with `caps`, sending messages of
/// at most `chunk_bytes`: eight, or enough chunks to fill what each connection buffers of
/// its own (a socket's send buffer), so that buffer never runs dry while the engine looks
/// elsewhere; never more than the transport accepts. Over tcp loopback (2 ranks, 128 KiB
/// chunks, 1 MiB socket buffers, which the kernel allots twice over) sixteen rather than
/// eight took 16 MiB allreduce from 6.9 to 5.8 ms and allgather from 2.9 to 2.7 ms;
/// 4 MiB in flight (sixteen chunks of 256 KiB) was slower than 1 MiB (docs/performance.md).
pub fn in_flight_depth(caps: &Capabilities, chunk_bytes: usize) -> usize {
    let fill = caps.buffered_bytes.div_ceil(chunk_bytes.max(1));
    caps.max_requests.min(fill.max(DEPTH)).max(1)
}

/// One rank's engine over transport `T`.
pub struct Engine<T: Transport> {
    transport: T,
    rank: usize,
    size: usize,
    /// Every rank's connect handle, in rank order.
    handles: Vec<ConnectHandle>,
    listener: Option<T::Listener>,
    /// Proves to peers that a connection belongs to this communicator, and checks theirs.
    greeter: Greeter,
    cfg: EngineConfig,
    abort: Arc<AtomicBool>,
    conns: connect::Conns<T>,
    scratch: Vec<u8>,
    staging: Vec<Vec<u8>>,
    /// A run's working memory, kept between calls so that a warm call allocates nothing.
    work: exec::Work<T::Request>,
    /// The job's news (failures other ranks posted, departed ranks), if a channel feeds it.
    news: Arc<News>,
}

impl<T: Transport> Engine<T> {
    /// An engine for `rank` of `size`, listening with `listener`, reaching peers through
    /// `handles` (indexed by rank).
    #[allow(clippy::too_many_arguments)] // each is a distinct fact of the rank's setup
    pub fn new(
        transport: T,
        rank: usize,
        size: usize,
        handles: Vec<ConnectHandle>,
        listener: T::Listener,
        greeter: Greeter,
        cfg: EngineConfig,
        abort: Arc<AtomicBool>,
    ) -> Self {
        Engine {
            transport,
            rank,
            size,
            handles,
            listener: Some(listener),
            greeter,
            cfg,
            abort,
            conns: connect::Conns::default(),
            scratch: Vec::new(),
            staging: Vec::new(),
            work: exec::Work::default(),
            news: Arc::new(News::default()),
        }
    }

    /// Reads the job's news from `news` (see [`News`]).
    pub fn set_news(&mut self, news: Arc<News>) {
        news.set_shared_locks(self.transport.shared_locks());
        self.news = news;
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The transport's name.
    pub fn transport_name(&self) -> &'static str {
        self.transport.name()
    }

    /// Closes every connection and the listener, so that peers blocked on this rank fail
    /// promptly with a Remote error. Errors while closing are ignored: this runs on the way
    /// out of a failure or from `Drop`.
    pub fn shutdown(&mut self) {
        for (_, c) in std::mem::take(&mut self.conns.send) {
            let _ = self.transport.close_send(c);
        }
        for (_, c) in std::mem::take(&mut self.conns.recv) {
            let _ = self.transport.close_recv(c);
        }
        for p in std::mem::take(&mut self.conns.pending) {
            p.close(&mut self.transport);
        }
        if let Some(l) = self.listener.take() {
            let _ = self.transport.close_listen(l);
        }
    }
}

impl<T: Transport> Drop for Engine<T> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A hasher for the small integer keys of the connection maps (SipHash's defence against
/// chosen keys buys nothing here and costs on every post).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(17) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by (peer, channel).
pub(crate) type ConnMap<V> =
    std::collections::HashMap<(usize, u16), V, std::hash::BuildHasherDefault<IdHasher>>;

/// Error for a call on an engine that was shut down.
fn closed(rank: usize) -> crate::Error {
    crate::Error::invalid_usage(format!("rank {rank}: the communicator was shut down"))
}

impl<T: Transport> Engine<T> {
    fn check_open(&self) -> Result<()> {
        if self.listener.is_none() {
            return Err(closed(self.rank));
        }
        Ok(())
    }

    fn check_abort(&self, what: &dyn std::fmt::Display) -> Result<()> {
        if self.abort.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(crate::Error::invalid_usage(format!(
                "rank {}: {what}: the communicator was aborted",
                self.rank
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::in_flight_depth;
    use crate::transport::Capabilities;

    #[test]
    fn depth_fills_the_connection_buffer_within_the_transport_limit() {
        let caps = |max_requests, buffered_bytes| Capabilities {
            max_requests,
            buffered_bytes,
            ..Capabilities::default()
        };
        // tcp's defaults: 2 MiB allotted, 128 KiB chunks, 16 requests accepted.
        assert_eq!(in_flight_depth(&caps(16, 2 << 20), 128 << 10), 16);
        // Larger chunks fill it with fewer; never below eight.
        assert_eq!(in_flight_depth(&caps(16, 2 << 20), 256 << 10), 8);
        assert_eq!(in_flight_depth(&caps(16, 2 << 20), 4 << 20), 8);
        // Small chunks: as many as the transport takes.
        assert_eq!(in_flight_depth(&caps(16, 2 << 20), 64), 16);
        // Nothing buffered (shm, verbs, fabric): eight, or fewer if that is the limit.
        assert_eq!(in_flight_depth(&caps(16, 0), 128 << 10), 8);
        assert_eq!(in_flight_depth(&caps(3, 0), 128 << 10), 3);
        assert_eq!(in_flight_depth(&caps(0, 0), 0), 1);
    }
}
