//! The rendezvous store server: a key-value map shared by the ranks of one job.
//!
//! Owns: the listening socket, one thread per connection, the map and its condition
//! variable, and the rules for when the server ends by itself. The wire format is
//! `proto`'s.
//!
//! One accept thread polls the listener; each accepted connection gets its own thread, so a
//! `GET` that waits for a key blocks only its own client. All threads wake at least every
//! [`TICK`] to notice a shutdown, and the accept thread waits (bounded) for its connection
//! threads before it ends.
//!
//! The server ends by itself when every rank of the job has registered and every registered
//! connection has since said goodbye or closed, or when no connection at all has been open
//! for the idle timeout. Keys are never deleted, which lets waiters remember how far they
//! got.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::news::NewsItem;
use super::proto::{
    self, check_preamble, read_frame, read_frame_rest, read_full, ReadFail, Reply, Request,
    ACK_BAD_MAGIC, ACK_BAD_SECRET, ACK_OK, ANSWER_BYTES, CHALLENGE_BYTES, MAX_MISSING_LISTED,
    PREAMBLE_BYTES, TICK,
};
use crate::auth::{self, Key, NONCE_BYTES};
use crate::error::{Error, Result};
use crate::sys::poll;

/// Time a new connection has to send its preamble and hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the rest of a request may take once its first byte arrived.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a single socket write may make no progress before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the accept thread waits for connection threads when it ends.
const CHILD_JOIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `shutdown` waits for the accept thread (which itself waits for its children).
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Stack of a connection thread: a large job has one per rank, and they hold little.
const CONN_STACK_BYTES: usize = 256 << 10;
/// How long a registered rank may send nothing before the store posts it as silent (its
/// communicator's channel asks every few tens of milliseconds: only a stopped or frozen
/// process stays quiet this long).
const SILENT_AFTER: Duration = Duration::from_secs(2);
/// How often a waiting `GET`/`WAIT` checks whether its client hung up.
const HANGUP_CHECK: Duration = Duration::from_millis(500);

/// The key counting the job's news items; item k (from 1) is under `"{NEWS}/{k}"`. Ranks
/// post failures there, and the server posts `D<rank>` when a registered rank's connection
/// ends without a goodbye (see `comm::channel`).
pub const NEWS: &str = "oxccl/news";

/// How many news items there are (the counter under [`NEWS`]).
fn news_count(st: &State) -> u64 {
    st.kv
        .get(NEWS)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Appends a news item (under the state lock, so numbers are never reused).
fn post_news(st: &mut State, item: Vec<u8>) {
    let n = news_count(st) + 1;
    st.kv.insert(NEWS.to_string(), n.to_string().into_bytes());
    st.kv.insert(format!("{NEWS}/{n}"), item);
}

/// Handle to a running store server thread. Dropping it stops the server; [`detach`]
/// leaves it running until it ends by itself.
///
/// [`detach`]: StoreServer::detach
pub struct StoreServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// The store key derived from the job secret (the secret itself is not kept).
    key: Key,
    stop: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    kv: HashMap<String, Vec<u8>>,
    /// The job size and the rank that first announced it.
    size: Option<(usize, usize)>,
    /// Ranks that ever registered.
    seen: HashSet<usize>,
    /// Ranks with a registered connection open now.
    live: HashSet<usize>,
    /// Open connections, registered or not.
    conns: usize,
    /// When `conns` last became zero.
    idle_since: Instant,
}

impl Shared {
    /// The state; a poisoned lock is still used, as no code path leaves the map half-written.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        // Taking the lock orders the flag before any waiter's next check.
        let _st = self.lock();
        self.changed.notify_all();
    }

    /// Appends `item` to the job's news, if any.
    fn post(&self, item: Option<NewsItem>) {
        if let Some(item) = item {
            post_news(&mut self.lock(), item.encode());
            self.changed.notify_all();
        }
    }

    /// Bookkeeping when a connection ends (`rank`: the rank it registered as, if any;
    /// `graceful`: it said goodbye). A registered rank whose connection ends without a
    /// goodbye has died or was killed: that is posted as news (see [`NEWS`]).
    fn closed(&self, rank: Option<usize>, graceful: bool) {
        let mut st = self.lock();
        st.conns = st.conns.saturating_sub(1);
        if let Some(r) = rank {
            if !graceful && !self.stopping() {
                post_news(&mut st, NewsItem::Departed(r).encode());
            }
            st.live.remove(&r);
            if st.size.is_some_and(|(n, _)| st.seen.len() >= n) && st.live.is_empty() {
                self.stop.store(true, Ordering::Release);
            }
        }
        if st.conns == 0 {
            st.idle_since = Instant::now();
        }
        self.changed.notify_all();
    }
}

impl StoreServer {
    /// Binds `addr` (port 0 = any) and serves in a background thread until `shutdown` is called,
    /// or until every rank that registered has said goodbye, or after `idle_timeout` with no client.
    pub fn spawn(
        addr: SocketAddr,
        secret: [u8; 32],
        idle_timeout: Duration,
    ) -> Result<StoreServer> {
        let what = format!("starting the store server on {addr}");
        let listener = TcpListener::bind(addr).map_err(|e| Error::io(&what, e))?;
        let local = listener.local_addr().map_err(|e| Error::io(&what, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(&what, e))?;
        let shared = Arc::new(Shared {
            key: Key::derive(&secret, auth::STORE),
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                kv: HashMap::new(),
                size: None,
                seen: HashSet::new(),
                live: HashSet::new(),
                conns: 0,
                idle_since: Instant::now(),
            }),
            changed: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("oxccl-store".into())
            .spawn(move || accept_loop(listener, s, idle_timeout))
            .map_err(|e| Error::io(&what, e))?;
        Ok(StoreServer {
            shared,
            addr: local,
            thread: Some(thread),
        })
    }

    /// The address the server listens on (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The job's news so far, in order (see [`NEWS`]): what a launcher serving the store
    /// reports about a failed job.
    pub fn news(&self) -> Vec<NewsItem> {
        let st = self.shared.lock();
        (1..=news_count(&st))
            .filter_map(|k| st.kv.get(&format!("{NEWS}/{k}")))
            .filter_map(|v| NewsItem::decode(v))
            .collect()
    }

    /// Whether the server thread has ended (by itself or after [`shutdown`](Self::shutdown)).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, |t| t.is_finished())
    }

    /// Waits up to `timeout` for the server to end by itself; returns whether it did.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let deadline = proto::after(timeout);
        while !self.is_finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stops the server: open connections are closed and blocked requests fail on the
    /// clients' side. Waits a bounded time for the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Lets the server run on without this handle; it ends by itself (see the module docs).
    pub fn detach(mut self) {
        self.thread = None;
    }

    fn stop_and_join(&mut self) {
        self.shared.request_stop();
        if let Some(t) = self.thread.take() {
            let deadline = proto::after(JOIN_TIMEOUT);
            while !t.is_finished() && !deadline.is_some_and(|d| Instant::now() >= d) {
                thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                // The thread never panics; a panic would only be reported, not propagated.
                let _ = t.join();
            }
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_and_join();
        }
    }
}

impl std::fmt::Debug for StoreServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreServer")
            .field("addr", &self.addr)
            .field("finished", &self.is_finished())
            .finish()
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, idle_timeout: Duration) {
    let mut children: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping() && !idle_expired(&shared, idle_timeout) {
        if !wait_readable(listener.as_fd(), TICK) {
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, _peer)) => children.extend(start_conn(&shared, stream)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Out of descriptors or memory: let open connections finish first.
                    thread::sleep(TICK);
                    break;
                }
            }
        }
        children.retain(|h| !h.is_finished());
    }
    shared.request_stop();
    drop(listener);
    let deadline = proto::after(CHILD_JOIN_TIMEOUT);
    while children.iter().any(|h| !h.is_finished())
        && !deadline.is_some_and(|d| Instant::now() >= d)
    {
        thread::sleep(Duration::from_millis(2));
    }
}

fn idle_expired(shared: &Shared, idle_timeout: Duration) -> bool {
    let st = shared.lock();
    st.conns == 0 && st.idle_since.elapsed() >= idle_timeout
}

/// Waits up to `timeout` for `fd` to be readable (for a listener: a connection is pending).
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    poll::revents(fd, libc::POLLIN, timeout).is_ok_and(|r| r != 0)
}

/// Whether the client of `stream` has closed its side (checked without consuming data).
fn peer_gone(stream: &TcpStream) -> bool {
    let mut b = 0u8;
    // SAFETY: reads at most one byte into `b`, which outlives the call; MSG_PEEK leaves any
    // data queued and MSG_DONTWAIT keeps the call from blocking.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

fn start_conn(shared: &Arc<Shared>, stream: TcpStream) -> Option<JoinHandle<()>> {
    shared.lock().conns += 1;
    let s = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("oxccl-store-conn".into())
        .stack_size(CONN_STACK_BYTES)
        .spawn(move || {
            let mut conn = Conn {
                shared: s,
                stream,
                rank: None,
                graceful: false,
            };
            if conn.handshake().is_ok() {
                let _ = conn.serve();
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(_) => {
            // The closure, and the stream in it, are already dropped: the client sees a close.
            shared.closed(None, false);
            None
        }
    }
}

/// The connection is over (closed, failed, refused or said goodbye); nothing to report.
struct End;

impl From<ReadFail> for End {
    fn from(_: ReadFail) -> End {
        End
    }
}

impl From<io::Error> for End {
    fn from(_: io::Error) -> End {
        End
    }
}

enum Waited {
    Ready(Vec<Vec<u8>>),
    Missing { total: usize, first: Vec<String> },
    Stopped,
}

/// One connection's thread state; dropping it does the bookkeeping, whatever ended it.
struct Conn {
    shared: Arc<Shared>,
    stream: TcpStream,
    rank: Option<usize>,
    /// The client said goodbye (a close without one is a death).
    graceful: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.closed(self.rank, self.graceful);
    }
}

impl Conn {
    fn handshake(&mut self) -> Result<(), End> {
        self.stream.set_nonblocking(false)?;
        self.stream.set_nodelay(true)?;
        self.stream.set_read_timeout(Some(TICK))?;
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let shared = Arc::clone(&self.shared);
        let cancel = || shared.stopping();
        let deadline = proto::after(HANDSHAKE_TIMEOUT);
        let mut pre = [0u8; PREAMBLE_BYTES];
        read_full(&mut self.stream, &mut pre, deadline, &cancel)?;
        let Some(client) = check_preamble(&pre) else {
            self.stream.write_all(&[ACK_BAD_MAGIC])?;
            self.reject("not an oxccl store client of this protocol version");
            return Err(End);
        };
        let server = auth::nonce().map_err(|_| End)?;
        let mut challenge = [0u8; 1 + CHALLENGE_BYTES];
        challenge[0] = ACK_OK;
        challenge[1..1 + NONCE_BYTES].copy_from_slice(&server);
        challenge[1 + NONCE_BYTES..].copy_from_slice(&proto::server_proof(
            &self.shared.key,
            &client,
            &server,
        ));
        self.stream.write_all(&challenge)?;
        let mut answer = [0u8; ANSWER_BYTES];
        read_full(&mut self.stream, &mut answer, deadline, &cancel)?;
        let Some(proven) = proto::check_answer(&self.shared.key, &client, &server, &answer) else {
            self.stream.write_all(&[ACK_BAD_SECRET])?;
            self.reject("its proof of the job secret is wrong");
            return Err(End);
        };
        self.stream.write_all(&[ACK_OK])?;
        let body = read_frame(&mut self.stream, deadline, HANDSHAKE_TIMEOUT, &cancel)?;
        let result = match Request::decode(&body) {
            Ok(Request::Hello { rank, size }) if (rank, size) == proven => {
                self.register(rank as usize, size as usize)
            }
            Ok(Request::Hello { .. }) => Err(Error::invalid_usage(
                "HELLO names another rank or size than the handshake proved",
            )),
            Ok(_) => Err(Error::invalid_usage("the first request must be HELLO")),
            Err(m) => Err(Error::invalid_argument(m)),
        };
        match result {
            Ok(()) => self.send(&Reply::Ok),
            Err(e) => {
                self.send(&error_reply(e))?;
                Err(End)
            }
        }
    }

    /// Logs a client the handshake turned away.
    fn reject(&self, why: &str) {
        let from = self.stream.peer_addr().map(|a| a.to_string());
        tracing::warn!(
            target: "oxccl::BOOTSTRAP",
            "store: rejected a connection from {}: {why}",
            from.unwrap_or_else(|_| "an unknown address".into())
        );
    }

    fn register(&mut self, rank: usize, size: usize) -> Result<()> {
        if size == 0 {
            return Err(Error::invalid_argument(format!(
                "rank {rank} says the job has 0 ranks"
            )));
        }
        if rank >= size {
            return Err(Error::invalid_argument(format!(
                "rank {rank} is out of range for a job of {size} ranks"
            )));
        }
        let mut st = self.shared.lock();
        match st.size {
            Some((n, first)) if n != size => {
                return Err(Error::invalid_usage(format!(
                    "rank {rank} says the job has {size} ranks, but rank {first} said {n}"
                )));
            }
            Some(_) => {}
            None => st.size = Some((size, rank)),
        }
        if !st.live.insert(rank) {
            return Err(Error::invalid_usage(format!(
                "rank {rank} is already connected to this store (were two processes given the same rank?)"
            )));
        }
        st.seen.insert(rank);
        self.rank = Some(rank);
        Ok(())
    }

    fn serve(&mut self) -> Result<(), End> {
        let shared = Arc::clone(&self.shared);
        let cancel = || shared.stopping();
        let mut silent = false;
        loop {
            // A registered rank's channel asks many times a second: a long silence means its
            // process is stopped or frozen, which the other ranks' timeouts then name.
            let watch = self.rank.filter(|_| !silent);
            let mut first = [0u8; 1];
            match read_full(
                &mut self.stream,
                &mut first,
                watch.and_then(|_| proto::after(SILENT_AFTER)),
                &cancel,
            ) {
                Ok(()) => {}
                Err(ReadFail::TimedOut) if watch.is_some() => {
                    silent = true;
                    self.shared.post(watch.map(NewsItem::Silent));
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            if silent {
                silent = false;
                self.shared.post(self.rank.map(NewsItem::Heard));
            }
            let body = match read_frame_rest(&mut self.stream, first[0], FRAME_TIMEOUT, &cancel) {
                Ok(b) => b,
                Err(ReadFail::TooLarge(n)) => {
                    // Framing is lost: answer, then close.
                    let m = ReadFail::TooLarge(n).to_string();
                    self.send(&error_reply(Error::invalid_argument(m)))?;
                    return Err(End);
                }
                Err(e) => return Err(e.into()),
            };
            let req = match Request::decode(&body) {
                Ok(r) => r,
                Err(m) => {
                    self.send(&error_reply(Error::invalid_argument(m)))?;
                    continue;
                }
            };
            match req {
                Request::Hello { .. } => {
                    self.send(&error_reply(Error::invalid_usage("HELLO sent twice")))?
                }
                Request::Set { key, value } => {
                    self.shared.lock().kv.insert(key, value);
                    self.shared.changed.notify_all();
                    self.send(&Reply::Ok)?;
                }
                Request::Get { keys, timeout_ms } => {
                    match self.wait_keys(&keys, Duration::from_millis(timeout_ms), true) {
                        Waited::Ready(values) => {
                            self.send(&Reply::Values(values.len() as u32))?;
                            for v in values {
                                self.send(&Reply::Value(v))?;
                            }
                        }
                        Waited::Missing { total, first } => self.send_missing(total, first)?,
                        Waited::Stopped => return Err(End),
                    }
                }
                Request::TryGet { key } => {
                    let v = self.shared.lock().kv.get(&key).cloned();
                    self.send(&v.map_or(Reply::NotFound, Reply::Value))?;
                }
                Request::Add { key, delta } => {
                    let r = self.add(key, delta);
                    self.send(&r)?;
                }
                Request::Wait { keys, timeout_ms } => {
                    match self.wait_keys(&keys, Duration::from_millis(timeout_ms), false) {
                        Waited::Ready(_) => self.send(&Reply::Ok)?,
                        Waited::Missing { total, first } => self.send_missing(total, first)?,
                        Waited::Stopped => return Err(End),
                    }
                }
                Request::Goodbye => {
                    self.graceful = true;
                    self.send(&Reply::Ok)?;
                    return Ok(());
                }
            }
        }
    }

    /// Waits until all `keys` exist, the timeout passes, the server stops or the client
    /// hangs up.
    fn wait_keys(&self, keys: &[String], timeout: Duration, collect: bool) -> Waited {
        let deadline = proto::after(timeout);
        // Keys are never deleted, so everything before `next` stays present.
        let mut next = 0;
        let mut last_check = Instant::now();
        let mut st = self.shared.lock();
        loop {
            if self.shared.stopping() {
                return Waited::Stopped;
            }
            while next < keys.len() && st.kv.contains_key(&keys[next]) {
                next += 1;
            }
            if next == keys.len() {
                let values = if collect {
                    keys.iter()
                        .map(|k| st.kv.get(k).cloned().unwrap_or_default())
                        .collect()
                } else {
                    Vec::new()
                };
                return Waited::Ready(values);
            }
            let left = deadline.map_or(HANGUP_CHECK, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                let missing = keys[next..].iter().filter(|k| !st.kv.contains_key(*k));
                let total = missing.clone().count();
                let first = missing.take(MAX_MISSING_LISTED).cloned().collect();
                return Waited::Missing { total, first };
            }
            let (g, res) = self
                .shared
                .changed
                .wait_timeout(st, left.min(HANGUP_CHECK))
                .unwrap_or_else(PoisonError::into_inner);
            st = g;
            // Checked by time, not on wake-ups: frequent SETs must not postpone it forever.
            if res.timed_out() || last_check.elapsed() >= HANGUP_CHECK {
                last_check = Instant::now();
                if peer_gone(&self.stream) {
                    return Waited::Stopped;
                }
            }
        }
    }

    fn add(&self, key: String, delta: i64) -> Reply {
        let mut st = self.shared.lock();
        let cur = match st.kv.get(&key) {
            None => 0,
            Some(v) => match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                Some(n) => n,
                None => {
                    return error_reply(Error::invalid_usage(format!(
                        "add to '{key}': the key holds {} bytes that are not a decimal integer",
                        v.len()
                    )))
                }
            },
        };
        let Some(new) = cur.checked_add(delta) else {
            return error_reply(Error::invalid_argument(format!(
                "add {delta} to '{key}' (now {cur}) overflows a 64-bit integer"
            )));
        };
        st.kv.insert(key, new.to_string().into_bytes());
        drop(st);
        self.shared.changed.notify_all();
        Reply::Int(new)
    }

    fn send_missing(&mut self, total: usize, first: Vec<String>) -> Result<(), End> {
        self.send(&Reply::Timeout {
            missing_total: u32::try_from(total).unwrap_or(u32::MAX),
            missing: first,
        })
    }

    fn send(&mut self, r: &Reply) -> Result<(), End> {
        let frame = r.encode().map_err(|_| End)?;
        self.stream.write_all(&frame)?;
        Ok(())
    }
}

fn error_reply(e: Error) -> Reply {
    Reply::Error {
        kind: e.kind(),
        message: e.message().to_string(),
    }
}
