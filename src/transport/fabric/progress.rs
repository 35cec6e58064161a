//! The progress loop of the fabric backend: completion contexts, the bounce buffers and the
//! backlog of messages the provider refused for now, reading the completion queue, and
//! what each completion or incoming message does to the connection tables (eager data,
//! RMA headers, clear-to-send records, RMA writes posted and landed).

use super::*;

impl FabricTransport {
    pub(super) fn alloc_ctx(&mut self, op: Op) -> *mut c_void {
        let i = match self.free_ctx.pop() {
            Some(i) => i,
            None => {
                let i = self.ctxs.len() as u32;
                self.ctxs.push(Box::new(Ctx {
                    provider_space: [0; 8],
                    op: Op::Free,
                    index: i,
                }));
                i
            }
        };
        let c = &mut self.ctxs[i as usize];
        c.op = op;
        (&mut **c as *mut Ctx).cast()
    }

    /// The op of a context handed back by a completion, freeing the context.
    pub(super) fn take_ctx(&mut self, p: *mut c_void) -> Op {
        if p.is_null() {
            return Op::Free;
        }
        // SAFETY: non-null contexts in our completions are the boxed `Ctx`s handed out by
        // `alloc_ctx`, which live as long as the transport.
        let index = unsafe { (*(p as *const Ctx)).index };
        match self.ctxs.get_mut(index as usize) {
            Some(c) if std::ptr::eq(&**c, p as *const Ctx) => {
                let op = std::mem::replace(&mut c.op, Op::Free);
                if !matches!(op, Op::Free) {
                    self.free_ctx.push(index);
                }
                op
            }
            _ => Op::Free,
        }
    }

    pub(super) fn release_ctx(&mut self, p: *mut c_void) {
        let _ = self.take_ctx(p);
    }

    pub(super) fn post_receives(&mut self) -> Result<()> {
        while let Some(i) = self.rx_unposted.pop() {
            let ctx = self.alloc_ctx(Op::Rx(i));
            // SAFETY: slot `i` of rx_buf is ours until its completion; the context is live.
            let rc = unsafe {
                let buf = self.rx_buf.as_mut_ptr().add(i as usize * MSG_BYTES);
                self.ep.recv(buf, MSG_BYTES, self.rx_desc, ctx)
            };
            if rc != 0 {
                self.release_ctx(ctx);
                self.rx_unposted.push(i);
                if rc == EAGAIN {
                    return Ok(());
                }
                return Err(self.prov_err(
                    ErrorKind::System,
                    format!("posting a receive: {}", self.ep.strerror(rc as i64)),
                ));
            }
        }
        Ok(())
    }

    /// Queues a message `h` + `payload` to `peer` and tries to post it.
    pub(super) fn queue(&mut self, peer: u32, h: &Header, payload: &[u8]) -> Result<()> {
        let len = HDR + payload.len();
        let out = match self.tx_free.pop() {
            Some(slot) => {
                let b = &mut self.tx_buf[slot as usize * MSG_BYTES..][..len];
                h.encode(b);
                b[HDR..].copy_from_slice(payload);
                Out {
                    peer,
                    slot: Some(slot),
                    bytes: Vec::new(),
                    len,
                }
            }
            None => {
                let mut bytes = vec![0u8; len];
                h.encode(&mut bytes);
                bytes[HDR..].copy_from_slice(payload);
                Out {
                    peer,
                    slot: None,
                    bytes,
                    len,
                }
            }
        };
        self.backlog.push_back(out);
        self.flush_backlog()?;
        Ok(())
    }

    /// Posts queued messages in order until the provider pushes back; true if any left.
    pub(super) fn flush_backlog(&mut self) -> Result<bool> {
        let mut moved = false;
        while let Some(out) = self.backlog.front_mut() {
            let slot = match out.slot {
                Some(s) => s,
                None => {
                    let Some(s) = self.tx_free.pop() else { break };
                    self.tx_buf[s as usize * MSG_BYTES..][..out.len].copy_from_slice(&out.bytes);
                    out.slot = Some(s);
                    out.bytes = Vec::new();
                    s
                }
            };
            let (peer, len) = (out.peer, out.len);
            let Some(p) = self.peers.get(peer as usize) else {
                self.backlog.pop_front();
                continue;
            };
            if p.failed.is_some() || p.gone.is_some() {
                self.backlog.pop_front();
                self.tx_free.push(slot);
                continue;
            }
            let dest = p.addr;
            let ping = self.tx_buf[slot as usize * MSG_BYTES + 4] == Kind::Ping as u8;
            let ctx = self.alloc_ctx(Op::Tx { slot, peer, ping });
            // SAFETY: the slot is ours until the send completes; the context is live.
            let rc = unsafe {
                let buf = self.tx_buf.as_ptr().add(slot as usize * MSG_BYTES);
                self.ep.send(buf, len, self.tx_desc, dest, ctx)
            };
            if rc == EAGAIN {
                self.release_ctx(ctx);
                break;
            }
            self.backlog.pop_front();
            moved = true;
            if rc != 0 {
                self.release_ctx(ctx);
                self.tx_free.push(slot);
                let what = format!(
                    "sending to {}: {}",
                    self.peers[peer as usize].name,
                    self.ep.strerror(rc as i64)
                );
                self.fail_peer(peer, what);
            }
        }
        Ok(moved)
    }

    /// Reads the completion queue and posts what waits; true if anything happened.
    pub(super) fn progress(&mut self) -> Result<bool> {
        let mut moved = false;
        // SAFETY: completion entries are plain data; zero is a valid value.
        let mut buf: [sys::fi_cq_data_entry; CQ_BATCH] = unsafe { std::mem::zeroed() };
        loop {
            let n = self.ep.read(&mut buf);
            if n > 0 {
                moved = true;
                for e in &buf[..n as usize] {
                    self.on_completion(e)?;
                }
                if (n as usize) < CQ_BATCH {
                    break;
                }
            } else if n == EAGAIN {
                break;
            } else if n == -(bindings::FI_EAVAIL as isize) {
                moved = true;
                self.on_error()?;
            } else {
                return Err(self.prov_err(
                    ErrorKind::System,
                    format!(
                        "reading the completion queue: {}",
                        self.ep.strerror(n as i64)
                    ),
                ));
            }
        }
        if !self.backlog.is_empty() {
            moved |= self.flush_backlog()?;
        }
        if !self.retry.is_empty() {
            for (id, seq) in std::mem::take(&mut self.retry) {
                self.post_write(id, seq);
            }
        }
        if !self.rx_unposted.is_empty() {
            self.post_receives()?;
        }
        Ok(moved)
    }

    pub(super) fn on_completion(&mut self, e: &sys::fi_cq_data_entry) -> Result<()> {
        if e.flags & u64::from(bindings::FI_REMOTE_WRITE) != 0 {
            if e.flags & u64::from(bindings::FI_REMOTE_CQ_DATA) != 0 {
                self.on_write_landed(e.data);
            }
            return Ok(());
        }
        match self.take_ctx(e.op_context) {
            Op::Free => {}
            Op::Rx(i) => {
                let len = e.len.min(MSG_BYTES);
                self.on_message(i, len)?;
                self.rx_unposted.push(i);
                self.post_receives()?;
            }
            Op::Tx { slot, peer, ping } => {
                self.tx_free.push(slot);
                if ping {
                    if let Some(p) = self.peers.get_mut(peer as usize) {
                        p.probe_out = None;
                    }
                }
            }
            Op::Write { conn, seq, .. } => {
                if let Some(c) = self.sends.get_mut(conn) {
                    if let Some(op) = c.ops.get_mut(seq) {
                        op.state = SendState::Done;
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_error(&mut self) -> Result<()> {
        let Some(e) = self.ep.read_err() else {
            return Ok(());
        };
        let canceled = e.err == bindings::FI_ECANCELED as i32;
        let why = self.ep.strerror(i64::from(e.err));
        match self.take_ctx(e.op_context) {
            Op::Free => {}
            Op::Rx(i) => {
                self.rx_unposted.push(i);
                if !canceled {
                    // A message that did not fit a bounce buffer: not from an oxccl peer.
                    self.post_receives()?;
                }
            }
            Op::Tx { slot, peer, .. } => {
                self.tx_free.push(slot);
                if !canceled {
                    let what = format!(
                        "{}: a message failed: {why}",
                        self.peers[peer as usize].name
                    );
                    self.fail_peer(peer, what);
                }
            }
            Op::Write { conn, seq, peer } => {
                let what = format!(
                    "{}: an RMA write failed: {why}",
                    self.peers[peer as usize].name
                );
                let err = self.prov_err(ErrorKind::Remote, format!("peer {what}"));
                if let Some(c) = self.sends.get_mut(conn) {
                    if let Some(op) = c.ops.get_mut(seq) {
                        op.error = Some(err);
                    }
                }
                if !canceled {
                    self.fail_peer(peer, what);
                }
            }
        }
        Ok(())
    }

    /// A message in receive buffer `i`, `len` bytes long.
    pub(super) fn on_message(&mut self, i: u32, len: usize) -> Result<()> {
        let start = i as usize * MSG_BYTES;
        let Some(h) = Header::decode(&self.rx_buf[start..start + len]) else {
            return Ok(()); // not one of ours
        };
        let payload_len = len - HDR;
        match h.kind {
            Kind::Connect => {
                let p = self.rx_buf[start + HDR..start + len].to_vec();
                self.on_connect(&h, &p)?;
            }
            Kind::Accept => self.on_accept(&h),
            Kind::Eager | Kind::Rhdr => {
                let rma = h.kind == Kind::Rhdr;
                if !rma && h.len as usize != payload_len {
                    return Ok(());
                }
                self.on_data(&h, i, rma);
            }
            Kind::Cts => self.on_cts(&h),
            Kind::CloseToSend => {
                let e = self.prov_err(ErrorKind::Remote, "the peer closed the connection".into());
                if let Some(c) = self.sends.get_mut(Id::unpack(h.dst)) {
                    c.closed.get_or_insert(e);
                    c.delivered = c.delivered.max(h.seq);
                }
            }
            Kind::CloseToRecv => {
                if let Some(c) = self.recvs.get_mut(Id::unpack(h.dst)) {
                    c.closed_at.get_or_insert(h.seq);
                }
            }
            Kind::Ping => {}
            Kind::Bye => {
                if let Some(&p) = self
                    .peer_by_name
                    .get(&self.rx_buf[start + HDR..start + len])
                {
                    let what = format!("peer {}: closed its endpoint", self.peers[p as usize].name);
                    let e = self.prov_err(ErrorKind::Remote, what);
                    self.peers[p as usize].gone.get_or_insert(e);
                }
            }
        }
        Ok(())
    }

    /// Data (eager payload in receive buffer `slot`, or an RMA header) for a receiving end.
    pub(super) fn on_data(&mut self, h: &Header, slot: u32, rma: bool) {
        let id = Id::unpack(h.dst);
        let Some(c) = self.recvs.get_mut(id) else {
            return;
        };
        let (len, tag) = (h.len as usize, h.w);
        let start = slot as usize * MSG_BYTES + HDR;
        match c.ops.get_mut(h.seq) {
            Some(op) => {
                let payload = (!rma).then(|| &self.rx_buf[start..start + len]);
                fill(op, tag, len, payload, rma);
            }
            None => {
                let payload = (!rma).then(|| self.rx_buf[start..start + len].to_vec());
                c.early.push(Early {
                    seq: h.seq,
                    tag,
                    len,
                    payload,
                });
            }
        }
    }

    /// A receiver's buffer descriptor for send `h.seq`.
    pub(super) fn on_cts(&mut self, h: &Header) {
        let id = Id::unpack(h.dst);
        let Some(c) = self.sends.get_mut(id) else {
            return;
        };
        let cts = Cts {
            addr: h.w[0],
            key: h.w[1],
            cap: h.len,
        };
        if h.seq >= c.ops.next() {
            c.cts.push((h.seq, cts));
            return;
        }
        if let Some(op) = c.ops.get_mut(h.seq) {
            if op.state == SendState::WaitCts {
                op.state = SendState::Ready(cts);
                self.post_write(id, h.seq);
            }
        }
    }

    /// Posts the write of send `seq` on `id` if its descriptor is known.
    pub(super) fn post_write(&mut self, id: Id, seq: u64) {
        let Some(c) = self.sends.get_mut(id) else {
            return;
        };
        let (peer, remote) = (c.peer, c.remote.unwrap_or(0));
        let Some(op) = c.ops.get_mut(seq) else {
            return;
        };
        let SendState::Ready(cts) = op.state else {
            return;
        };
        if op.len as u64 > cts.cap {
            op.error = Some(Error::invalid_usage(format!(
                "fabric: message of {} bytes exceeds the peer's receive buffer of {} bytes",
                op.len, cts.cap
            )));
            return;
        }
        let (data, len) = (op.data, op.len);
        let Some(p) = self.peers.get(peer as usize) else {
            return;
        };
        let dest = p.addr;
        let desc = match self.local_desc(id, seq) {
            Ok(d) => d,
            Err(e) => {
                if let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) {
                    op.error = Some(e);
                }
                return;
            }
        };
        let ctx = self.alloc_ctx(Op::Write {
            conn: id,
            seq,
            peer,
        });
        let data_imm = imm(Id::unpack(remote).index(), seq);
        // SAFETY: `data..data+len` is valid until the send is reported (isend's contract);
        // the descriptor names a registration of the peer of at least `len` bytes.
        let rc = unsafe {
            self.ep
                .writedata(data, len, desc, data_imm, dest, cts.addr, cts.key, ctx)
        };
        let failed = (rc != 0 && rc != EAGAIN).then(|| self.ep.strerror(rc as i64));
        if rc != 0 {
            self.release_ctx(ctx);
        }
        let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) else {
            return;
        };
        if rc == 0 {
            op.state = SendState::Writing;
        } else if rc == EAGAIN {
            self.retry.push((id, seq));
        } else {
            op.error = Some(Error::system(format!(
                "fabric: posting an RMA write of {len} bytes: {}",
                failed.unwrap_or_default()
            )));
        }
    }

    /// The local descriptor of send `seq`'s buffer where `FI_MR_LOCAL` needs one.
    pub(super) fn local_desc(&mut self, id: Id, seq: u64) -> Result<*mut c_void> {
        if !self.ep.chosen.mr(bindings::FI_MR_LOCAL) {
            return Ok(std::ptr::null_mut());
        }
        let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) else {
            return Ok(std::ptr::null_mut());
        };
        let (data, len, had) = (op.data, op.len, op.mr);
        if let Some(m) = had {
            self.ep.release(m);
        }
        let u = self.ep.acquire(data, len)?;
        if let Some(op) = self.sends.get_mut(id).and_then(|c| c.ops.get_mut(seq)) {
            op.mr = Some(u.id);
        }
        Ok(u.desc)
    }

    /// An RMA write with immediate data `data` landed.
    pub(super) fn on_write_landed(&mut self, data: u64) {
        let (index, low) = split_imm(data);
        if let Some((_, c)) = self.recvs.at_mut(index) {
            if let Some((_, op)) = c
                .ops
                .iter_mut()
                .find(|(seq, _)| (*seq & 0xffff) as u16 == low)
            {
                if op.rndv {
                    op.written = true;
                }
            }
        }
    }
}

/// Applies a data header (and eager payload) to a posted receive.
pub(super) fn fill(op: &mut RecvOp, tag: Tag, len: usize, payload: Option<&[u8]>, rma: bool) {
    if len > op.cap {
        op.error = Some(Error::invalid_usage(format!(
            "fabric: message of {len} bytes exceeds the receive buffer of {} bytes",
            op.cap
        )));
        return;
    }
    if rma && !op.rndv {
        op.error = Some(Error::internal(format!(
            "fabric: the peer wrote {len} bytes by RMA into a receive that offered no buffer"
        )));
        return;
    }
    if let Some(p) = payload {
        // SAFETY: `op.data` has `op.cap >= len` writable bytes reserved for this receive
        // (irecv's contract); `p` is our bounce buffer, which cannot overlap it.
        unsafe { crate::reduce::copy_bytes(p.as_ptr(), op.data, len) };
    }
    op.hdr = Some((tag, len, rma));
}
