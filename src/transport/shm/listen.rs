//! Listen, connect and accept: a listener is a Unix stream socket in the abstract namespace
//! (it has no file and vanishes with its process); connecting creates the connection's region
//! and sends its memfd with the process id over the socket (`SCM_RIGHTS`); accepting takes
//! both and maps the region.
//!
//! Handle format: magic `oxshm1`, this boot's id (16 bytes, so that a peer on another host
//! is named as such), the listener's process id (u32 LE), then the socket's name.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::conn::Peer;
use super::region::Region;
use crate::error::{Error, Result};
use crate::transport::ConnectHandle;

const MAGIC: &[u8; 6] = b"oxshm1";
/// Bytes of the hello a connecting side sends: magic, then its process id.
const HELLO: usize = 12;
const HELLO_MAGIC: &[u8; 8] = b"oxshmhi2";
/// Bytes of the descriptors a hello carries (the two regions).
const FDS_BYTES: u32 = 2 * std::mem::size_of::<RawFd>() as u32;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn os(what: &str) -> Error {
    Error::system(format!("shm: {what}: {}", std::io::Error::last_os_error()))
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), zeros where unreadable; read once.
pub(super) fn boot_id() -> [u8; 16] {
    static ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *ID.get_or_init(read_boot_id)
}

fn read_boot_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let hex: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        for (i, pair) in hex.chunks(2).take(16).enumerate() {
            let d = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            id[i] = (d(pair[0]) << 4) | pair.get(1).map_or(0, |&c| d(c));
        }
    }
    id
}

fn socket() -> Result<OwnedFd> {
    // SAFETY: plain socket call.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(os("socket"));
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The address of abstract name `name` (a leading NUL byte, then the name).
fn address(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let n = name.len().min(a.sun_path.len() - 1);
    for (d, &s) in a.sun_path[1..=n].iter_mut().zip(name) {
        *d = s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + n;
    (a, len as libc::socklen_t)
}

/// A listening socket with a fresh abstract name, and its handle.
pub(super) fn listen() -> Result<(OwnedFd, ConnectHandle)> {
    let fd = socket()?;
    let pid = std::process::id();
    let n = crate::auth::nonce()?;
    let rnd = [n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]];
    let name = format!(
        "oxccl-shm-{pid}-{}-{:016x}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        u64::from_le_bytes(rnd)
    );
    let (a, len) = address(name.as_bytes());
    // SAFETY: a valid address of `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(os("binding the listener"));
    }
    // SAFETY: plain call.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        return Err(os("listen"));
    }
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&boot_id());
    h.extend_from_slice(&pid.to_le_bytes());
    h.extend_from_slice(name.as_bytes());
    Ok((fd, ConnectHandle::new(&h)?))
}

/// The listener's name and process id from a handle.
pub(super) fn decode_handle(h: &ConnectHandle) -> Result<(Vec<u8>, u32)> {
    let b = h.as_bytes();
    if b.len() <= 26 || &b[..6] != MAGIC {
        return Err(Error::invalid_argument(
            "shm: not a connect handle of the shm backend (does every rank use OXCCL_TRANSPORT=shm?)",
        ));
    }
    if b[6..22] != boot_id() {
        return Err(Error::invalid_argument(
            "shm: the peer runs on another host (its boot id differs): the shm backend connects \
             ranks of one host only; use tcp, verbs or fabric across hosts",
        ));
    }
    let pid = u32::from_le_bytes([b[22], b[23], b[24], b[25]]);
    Ok((b[26..].to_vec(), pid))
}

/// Connecting: the socket, the listener's name and pid, and the region once sent.
pub(super) struct Connecting {
    pub sock: OwnedFd,
    pub name: Vec<u8>,
    pub pid: u32,
    pub connected: bool,
}

pub(super) fn start_connect(name: Vec<u8>, pid: u32) -> Result<Connecting> {
    Ok(Connecting {
        sock: socket()?,
        name,
        pid,
        connected: false,
    })
}

/// Both directions' regions of a connection: the connecting side writes `forward` and reads
/// `reverse` (where the transport uses it, see `Transport::duplex`).
pub(super) struct Regions {
    pub forward: Region,
    pub reverse: Region,
}

/// Advances a connect: `Some` (the regions; the connection's socket is `c.sock`) once they
/// were handed over.
pub(super) fn poll_connect(c: &mut Connecting) -> Result<Option<(Regions, Peer)>> {
    if !c.connected {
        let (a, len) = address(&c.name);
        // SAFETY: a valid address of `len` bytes.
        let rc = unsafe {
            libc::connect(
                c.sock.as_raw_fd(),
                (&a as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINPROGRESS) | Some(libc::EINTR) => Ok(None),
                _ => Err(Error::remote(format!(
                    "shm: connecting to the listener of process {}: {e} (has it ended? a peer \
                     in another network namespace cannot be reached either)",
                    c.pid
                ))),
            };
        }
        c.connected = true;
    }
    let (forward, fd1) = Region::create()?;
    let (reverse, fd2) = Region::create()?;
    send_hello(c.sock.as_raw_fd(), [fd1.as_raw_fd(), fd2.as_raw_fd()])
        .map_err(|e| e.context(format!("shm: handing the regions to process {}", c.pid)))?;
    Ok(Some((Regions { forward, reverse }, Peer { pid: c.pid })))
}

/// Room for the control message of a hello (two descriptors), in words: `cmsghdr` needs
/// their alignment.
const CBUF: usize = 8;

/// The message header of a hello: `iov` and the control buffer `cbuf`, which both outlive
/// its use.
fn hello_msg(iov: &mut libc::iovec, cbuf: &mut [u64; CBUF]) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is valid; its pointers are set to the caller's buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation (32 bytes, within the buffer's 64).
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(FDS_BYTES) } as _;
    msg
}

fn send_hello(sock: RawFd, memfds: [RawFd; 2]) -> Result<()> {
    let mut hello = [0u8; HELLO];
    hello[..8].copy_from_slice(HELLO_MAGIC);
    hello[8..].copy_from_slice(&std::process::id().to_le_bytes());
    let mut iov = libc::iovec {
        iov_base: hello.as_mut_ptr().cast(),
        iov_len: HELLO,
    };
    let mut cbuf = [0u64; CBUF];
    let msg = hello_msg(&mut iov, &mut cbuf);
    // SAFETY: the control buffer holds one cmsg with room for two descriptors.
    unsafe {
        let cm = libc::CMSG_FIRSTHDR(&msg);
        (*cm).cmsg_level = libc::SOL_SOCKET;
        (*cm).cmsg_type = libc::SCM_RIGHTS;
        (*cm).cmsg_len = libc::CMSG_LEN(FDS_BYTES) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<[RawFd; 2]>(), memfds);
    }
    loop {
        // SAFETY: `msg` points at live buffers.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n == HELLO as isize {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if n < 0 && e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // A fresh connection's buffer has room for 12 bytes: anything else is a failure.
        return Err(Error::remote(format!("sending the hello: {e}")));
    }
}

/// An accepted socket whose hello has not come yet.
pub(super) struct Accepted {
    pub sock: OwnedFd,
}

/// Accepts one waiting connection, if any.
pub(super) fn accept_one(listener: &OwnedFd) -> Result<Option<Accepted>> {
    // SAFETY: plain call; no address wanted.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => Ok(None),
            _ => Err(os("accept")),
        };
    }
    // SAFETY: a new descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Some(Accepted { sock }))
}

/// Reads an accepted connection's hello: `None` while it has not come. A stranger's socket
/// (no hello, a wrong one, no region) is an error for that socket only.
pub(super) fn read_hello(a: &Accepted) -> Result<Option<(Regions, Peer)>> {
    let mut hello = [0u8; HELLO];
    let mut iov = libc::iovec {
        iov_base: hello.as_mut_ptr().cast(),
        iov_len: HELLO,
    };
    let mut cbuf = [0u64; CBUF];
    let mut msg = hello_msg(&mut iov, &mut cbuf);
    // SAFETY: `msg` points at live buffers.
    let n = unsafe {
        libc::recvmsg(
            a.sock.as_raw_fd(),
            &mut msg,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(Error::remote(format!("shm: reading a peer's hello: {e}"))),
        };
    }
    // Take the descriptors first, so that they are closed whatever else is wrong.
    let mut memfds: Vec<OwnedFd> = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `cbuf`; each descriptor
    // in an SCM_RIGHTS message is new to this process and owned here.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(&msg);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cm).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cm).cast::<RawFd>();
                for k in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.add(k));
                    if fd >= 0 {
                        memfds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            }
            cm = libc::CMSG_NXTHDR(&msg, cm);
        }
    }
    if n as usize != HELLO || &hello[..8] != HELLO_MAGIC || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(Error::remote(
            "shm: a connection without a valid hello (not an oxccl peer?)",
        ));
    }
    let [fwd, rev] = &memfds[..] else {
        return Err(Error::remote(format!(
            "shm: a peer's hello came with {} descriptors, not its 2 regions",
            memfds.len()
        )));
    };
    let pid = u32::from_le_bytes([hello[8], hello[9], hello[10], hello[11]]);
    let regions = Regions {
        forward: Region::open(fwd)?,
        reverse: Region::open(rev)?,
    };
    Ok(Some((regions, Peer { pid })))
}
