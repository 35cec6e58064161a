//! The rendezvous store client: one rank's connection to the store.
//!
//! Owns: connecting (with retries while the server is not up yet), the handshake, request
//! round trips with deadlines, and `all_gather` on top of `set` + a multi-key `get`.
//! After any socket failure the connection's framing is unknown, so the client refuses
//! further requests instead of reading a stale reply.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::proto::{
    self, millis, preamble, read_frame, read_full, ReadFail, Reply, Request, ACK_BAD_MAGIC,
    ACK_BAD_SECRET, ACK_OK, CHALLENGE_BYTES, MAX_KEY_BYTES, MAX_MISSING_LISTED, MAX_VALUE_BYTES,
    TICK,
};
use crate::auth::{self, Key, NONCE_BYTES};
use crate::error::{Error, ErrorKind, Result};

/// Time `Drop` gives the goodbye of a client that was not closed explicitly.
const DROP_GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// Slack on top of a request's own wait for the reply to travel back.
const REPLY_GRACE: Duration = Duration::from_secs(10);
/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// One rank's connection to the rendezvous store.
pub struct StoreClient {
    stream: TcpStream,
    root: SocketAddr,
    rank: usize,
    size: usize,
    io_timeout: Duration,
    local_ip: IpAddr,
    /// A socket failure left the framing unknown: no more requests.
    broken: bool,
    /// Slack on top of a request's own wait for the reply to come back.
    reply_grace: Duration,
    /// Goodbye was sent (or the connection is broken): nothing for `Drop` to do.
    done: bool,
}

impl StoreClient {
    /// Connects (retrying ECONNREFUSED until `timeout`: the server may start later), proves the
    /// secret, says who it is (rank, size). Errors name the root address and the rank.
    ///
    /// `timeout` also bounds every later request that does not take its own timeout.
    pub fn connect(
        root: SocketAddr,
        secret: &[u8; 32],
        rank: usize,
        size: usize,
        timeout: Duration,
    ) -> Result<StoreClient> {
        let ctx = || format!("rank {rank} of {size}: connecting to the store at {root}");
        if size == 0 || rank >= size {
            return Err(Error::invalid_argument(format!(
                "rank {rank} is out of range for a job of {size} ranks"
            ))
            .context(ctx()));
        }
        let (rank32, size32) = match (u32::try_from(rank), u32::try_from(size)) {
            (Ok(r), Ok(s)) => (r, s),
            _ => {
                return Err(
                    Error::invalid_argument("jobs of 2^32 ranks or more are not supported")
                        .context(ctx()),
                )
            }
        };
        let stream = connect_retry(root, timeout).map_err(|e| e.context(ctx()))?;
        let io_timeout = timeout.max(Duration::from_millis(1));
        let setup = |s: &TcpStream| -> io::Result<IpAddr> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(TICK))?;
            s.set_write_timeout(Some(io_timeout))?;
            Ok(s.local_addr()?.ip())
        };
        let local_ip = setup(&stream).map_err(|e| Error::io(ctx(), e))?;
        let mut c = StoreClient {
            stream,
            root,
            rank,
            size,
            io_timeout,
            local_ip,
            broken: false,
            reply_grace: REPLY_GRACE,
            done: false,
        };
        c.handshake(secret, rank32, size32).map_err(|e| {
            c.broken = true;
            c.done = true;
            e.context(ctx())
        })?;
        Ok(c)
    }

    fn handshake(&mut self, secret: &[u8; 32], rank: u32, size: u32) -> Result<()> {
        let key = Key::derive(secret, auth::STORE);
        let client = auth::nonce()?;
        self.stream
            .write_all(&preamble(&client))
            .map_err(|e| write_error(e, self.io_timeout))?;
        match self.read_ack()? {
            ACK_OK => {}
            ACK_BAD_MAGIC => {
                return Err(Error::invalid_usage(
                    "the store speaks another protocol version (mixed oxccl versions?)",
                ))
            }
            b => return Err(not_a_store(b)),
        }
        let mut challenge = [0u8; CHALLENGE_BYTES];
        self.read_exact(&mut challenge)?;
        let (server, proof) = challenge.split_at(NONCE_BYTES);
        let mut sn = [0u8; NONCE_BYTES];
        sn.copy_from_slice(server);
        if !proto::check_server_proof(&key, &client, &sn, proof) {
            return Err(Error::invalid_usage(
                "the store could not prove it holds this job's secret: this unique id belongs \
                 to another job",
            ));
        }
        self.stream
            .write_all(&proto::answer(&key, &client, &sn, rank, size))
            .map_err(|e| write_error(e, self.io_timeout))?;
        match self.read_ack()? {
            ACK_OK => {}
            ACK_BAD_SECRET => {
                return Err(Error::invalid_usage(
                    "the store rejected this rank's proof of the job secret: this unique id \
                     belongs to another job",
                ))
            }
            b => return Err(not_a_store(b)),
        }
        match self.round_trip(&Request::Hello { rank, size }, Duration::ZERO)? {
            Reply::Ok => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    /// One ack byte of the handshake.
    fn read_ack(&mut self) -> Result<u8> {
        let mut ack = [0u8; 1];
        self.read_exact(&mut ack)?;
        Ok(ack[0])
    }

    /// Exactly `buf.len()` bytes of the handshake, within the I/O timeout.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        read_full(&mut self.stream, buf, proto::after(self.io_timeout), &never)
            .map_err(|e| read_error(e, self.io_timeout))
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let what = || format!("set '{key}'");
        check_key(key)
            .and_then(|()| check_value(value))
            .map_err(|e| self.ctx(e, what()))?;
        let req = Request::Set {
            key: key.to_string(),
            value: value.to_vec(),
        };
        match self.call(&req, Duration::ZERO, what)? {
            Reply::Ok => Ok(()),
            r => Err(self.ctx(unexpected(&r), what())),
        }
    }

    /// The value of `key`, waiting up to `timeout` for some rank to set it.
    pub fn get(&mut self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let keys = [key.to_string()];
        let root = self.root;
        let mut values = self.get_many(&keys, timeout, &|_, _| {
            format!("waited {timeout:?} at {root} for key '{key}' to be set")
        })?;
        values.pop().ok_or_else(|| {
            self.ctx(
                Error::remote("the store sent no value"),
                format!("get '{key}'"),
            )
        })
    }

    /// The value of `key` if it is set now.
    pub fn try_get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = || format!("try_get '{key}'");
        check_key(key).map_err(|e| self.ctx(e, what()))?;
        let req = Request::TryGet {
            key: key.to_string(),
        };
        match self.call(&req, Duration::ZERO, what)? {
            Reply::Value(v) => Ok(Some(v)),
            Reply::NotFound => Ok(None),
            r => Err(self.ctx(unexpected(&r), what())),
        }
    }

    /// Adds `delta` to the integer under `key` (absent counts as 0), atomically; returns the
    /// new value. The value is stored as decimal ASCII, so `get` returns e.g. `b"3"`.
    pub fn add(&mut self, key: &str, delta: i64) -> Result<i64> {
        let what = || format!("add {delta} to '{key}'");
        check_key(key).map_err(|e| self.ctx(e, what()))?;
        let req = Request::Add {
            key: key.to_string(),
            delta,
        };
        match self.call(&req, Duration::ZERO, what)? {
            Reply::Int(v) => Ok(v),
            r => Err(self.ctx(unexpected(&r), what())),
        }
    }

    /// Waits up to `timeout` until every key in `keys` is set.
    pub fn wait(&mut self, keys: &[&str], timeout: Duration) -> Result<()> {
        let what = || format!("wait for {} keys", keys.len());
        keys.iter()
            .try_for_each(|k| check_key(k))
            .map_err(|e| self.ctx(e, what()))?;
        let req = Request::Wait {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            timeout_ms: millis(timeout),
        };
        match self.call(&req, timeout, what)? {
            Reply::Ok => Ok(()),
            Reply::Timeout {
                missing_total,
                missing,
            } => Err(self.timeout_error(format!(
                "waited {timeout:?} at {} for keys ['{}']{}",
                self.root,
                missing.join("', '"),
                more(missing_total, missing.len())
            ))),
            r => Err(self.ctx(unexpected(&r), what())),
        }
    }

    /// The local IP address of this client's connection to the root: the address this rank should
    /// advertise to peers (it is the one that reaches the root).
    pub fn local_ip(&self) -> IpAddr {
        self.local_ip
    }

    /// Sets how long past a request's own wait the reply may take (default 10 s, at most
    /// the client's timeout); a reply later than that breaks the connection.
    pub fn set_reply_grace(&mut self, grace: Duration) {
        self.reply_grace = grace;
    }

    /// Whether a socket failure or a late reply broke the connection (no more requests).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// This client's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The job size this client announced.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The store's address.
    pub fn root_addr(&self) -> SocketAddr {
        self.root
    }

    /// Allgather through the store: publishes `mine` under `"{prefix}/{rank}"` and returns all
    /// `size` values in rank order. On timeout: `ErrorKind::Timeout` whose message lists the ranks
    /// that never published (e.g. "rank 2 of 4: waited 30s at 127.0.0.1:4321 for ranks [1, 3] to publish 'addr'").
    ///
    /// Each call needs its own `prefix`: a reused one returns whatever is stored under it.
    pub fn all_gather(
        &mut self,
        prefix: &str,
        mine: &[u8],
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>> {
        self.set(&format!("{prefix}/{}", self.rank), mine)?;
        let keys: Vec<String> = (0..self.size).map(|r| format!("{prefix}/{r}")).collect();
        let root = self.root;
        self.get_many(&keys, timeout, &|missing, total| {
            let ranks: Vec<String> = missing
                .iter()
                .map(|k| {
                    let r = k.strip_prefix(prefix).and_then(|s| s.strip_prefix('/'));
                    r.unwrap_or(k).to_string()
                })
                .collect();
            format!(
                "waited {timeout:?} at {root} for ranks [{}]{} to publish '{prefix}'",
                ranks.join(", "),
                more(total, missing.len())
            )
        })
    }

    /// Says this rank is done with the store. The server ends once every rank has.
    pub fn goodbye(mut self) -> Result<()> {
        self.say_goodbye(self.io_timeout)
    }

    fn say_goodbye(&mut self, timeout: Duration) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        // The write timeout was set from `io_timeout`; `Drop` must not wait that long.
        if timeout < self.io_timeout {
            let _ = self
                .stream
                .set_write_timeout(Some(timeout.max(Duration::from_millis(1))));
            self.io_timeout = timeout;
        }
        match self.call(&Request::Goodbye, Duration::ZERO, || "goodbye".to_string())? {
            Reply::Ok => Ok(()),
            r => Err(self.ctx(unexpected(&r), "goodbye")),
        }
    }

    /// A multi-key get; `describe(missing, total)` words the timeout.
    fn get_many(
        &mut self,
        keys: &[String],
        timeout: Duration,
        describe: &dyn Fn(&[String], u32) -> String,
    ) -> Result<Vec<Vec<u8>>> {
        let what = || {
            if keys.len() == 1 {
                format!("get '{}'", keys[0])
            } else {
                format!("get {} keys", keys.len())
            }
        };
        keys.iter()
            .try_for_each(|k| check_key(k))
            .map_err(|e| self.ctx(e, what()))?;
        let req = Request::Get {
            keys: keys.to_vec(),
            timeout_ms: millis(timeout),
        };
        match self.call(&req, timeout, what)? {
            Reply::Values(n) if n as usize == keys.len() => {
                let mut out = Vec::with_capacity(keys.len());
                for _ in 0..n {
                    match self
                        .read_reply(Duration::ZERO)
                        .map_err(|e| self.ctx(e, what()))?
                    {
                        Reply::Value(v) => out.push(v),
                        r => {
                            self.broken = true;
                            return Err(self.ctx(unexpected(&r), what()));
                        }
                    }
                }
                Ok(out)
            }
            Reply::Timeout {
                missing_total,
                missing,
            } => Err(self.timeout_error(describe(&missing, missing_total))),
            r => {
                self.broken = true;
                Err(self.ctx(unexpected(&r), what()))
            }
        }
    }

    /// One request and its first reply frame; a server `ERROR` becomes an `Err` of its kind.
    fn call(&mut self, req: &Request, wait: Duration, what: impl Fn() -> String) -> Result<Reply> {
        self.round_trip(req, wait).map_err(|e| self.ctx(e, what()))
    }

    fn round_trip(&mut self, req: &Request, wait: Duration) -> Result<Reply> {
        if self.broken {
            return Err(Error::remote(
                "the connection to the store failed earlier and cannot be used",
            ));
        }
        let frame = req.encode().map_err(Error::invalid_argument)?;
        if let Err(e) = self.stream.write_all(&frame) {
            self.broken = true;
            self.done = true;
            return Err(write_error(e, self.io_timeout));
        }
        match self.read_reply(wait)? {
            Reply::Error { kind, message } => Err(Error::new(kind, message)),
            r => Ok(r),
        }
    }

    /// Reads one reply frame, allowing `wait` (the server-side wait) plus slack for the first
    /// byte.
    fn read_reply(&mut self, wait: Duration) -> Result<Reply> {
        let first = if wait.is_zero() {
            self.io_timeout
        } else {
            wait.saturating_add(self.io_timeout.min(self.reply_grace))
        };
        let body = read_frame(
            &mut self.stream,
            proto::after(first),
            self.io_timeout,
            &never,
        )
        .map_err(|e| {
            self.broken = true;
            self.done = true;
            read_error(e, first)
        })?;
        Reply::decode(&body).map_err(|m| {
            self.broken = true;
            Error::remote(format!("malformed reply from the store: {m}"))
        })
    }

    fn ctx(&self, e: Error, what: impl std::fmt::Display) -> Error {
        e.context(format!(
            "rank {} of {}: {what} at the store {}",
            self.rank, self.size, self.root
        ))
    }

    fn timeout_error(&self, msg: String) -> Error {
        Error::timeout(format!("rank {} of {}: {msg}", self.rank, self.size))
    }
}

impl Drop for StoreClient {
    fn drop(&mut self) {
        let _ = self.say_goodbye(DROP_GOODBYE_TIMEOUT);
    }
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("root", &self.root)
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("broken", &self.broken)
            .finish()
    }
}

fn never() -> bool {
    false
}

/// Connects, retrying while the server is not (yet) reachable, until `timeout` has passed.
fn connect_retry(root: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let start = Instant::now();
    let mut backoff = Duration::from_millis(10);
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let err = match TcpStream::connect_timeout(&root, left.max(Duration::from_millis(1))) {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let retry = matches!(
            err.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::TimedOut
                | io::ErrorKind::WouldBlock
                | io::ErrorKind::Interrupted
        ) || matches!(
            err.raw_os_error(),
            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
        );
        if !retry {
            return Err(Error::io("connect", err));
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Error::timeout(format!(
                "gave up after {timeout:?} (last attempt: {err})"
            )));
        }
        thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid_argument(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::invalid_argument(format!(
            "value of {} bytes exceeds the store's limit of {MAX_VALUE_BYTES} bytes (16 MiB)",
            value.len()
        )));
    }
    Ok(())
}

fn not_a_store(b: u8) -> Error {
    Error::remote(format!(
        "unexpected answer {b:#04x} to the handshake: is this an oxccl store?"
    ))
}

fn unexpected(r: &Reply) -> Error {
    let name = match r {
        Reply::Ok => "OK",
        Reply::Value(_) => "VALUE",
        Reply::NotFound => "NOT_FOUND",
        Reply::Int(_) => "INT",
        Reply::Values(_) => "VALUES",
        Reply::Timeout { .. } => "TIMEOUT",
        Reply::Error { .. } => "ERROR",
    };
    Error::remote(format!("unexpected {name} reply from the store"))
}

fn read_error(e: ReadFail, waited: Duration) -> Error {
    match e {
        ReadFail::Closed => {
            Error::remote("the store closed the connection (it ended, or refused this client)")
        }
        ReadFail::TimedOut => Error::timeout(format!("no reply from the store within {waited:?}")),
        ReadFail::Os(err) => Error::io("reading from the store", err),
        other => Error::remote(other.to_string()),
    }
}

fn write_error(e: io::Error, timeout: Duration) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::new(
            ErrorKind::Timeout,
            format!("the store accepted no data within {timeout:?}"),
        ),
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => {
            Error::remote(format!("the store closed the connection: {e}"))
        }
        _ => Error::io("writing to the store", e),
    }
}

/// " (and N more)" when a listing was cut short.
fn more(total: u32, listed: usize) -> String {
    let total = total as usize;
    if total > listed {
        format!(
            " (and {} more; the store lists at most {MAX_MISSING_LISTED})",
            total - listed
        )
    } else {
        String::new()
    }
}
