//! What a stalled call waits for, in words, for its timeout message.

use super::Machine;

/// `v` as "rank 3", "ranks [1, 2]" or a long list cut at 16.
pub fn ranks(v: &[usize]) -> String {
    match v.len() {
        1 => format!("rank {}", v[0]),
        0..=16 => format!("ranks {v:?}"),
        _ => format!("ranks {:?} and {} more", &v[..16], v.len() - 16),
    }
}

/// What `m` waits for: the peers in `unconnected` to connect, else data from peers, else
/// room to send to them, else local work.
pub fn waiting_for<R>(m: &Machine<R>, unconnected: &[usize]) -> String {
    let mut absent = unconnected.to_vec();
    absent.sort_unstable();
    absent.dedup();
    if !absent.is_empty() {
        return format!("waiting for {} to connect", ranks(&absent));
    }
    let mut recv_from = Vec::new();
    let mut send_to = Vec::new();
    for q in m.queues() {
        if !q.pending() || q.blocked_on_deps(&m.left) {
            continue;
        }
        if q.sends() {
            send_to.push(q.peer());
        } else {
            recv_from.push(q.peer());
        }
    }
    for v in [&mut recv_from, &mut send_to] {
        v.sort_unstable();
        v.dedup();
    }
    match (recv_from.is_empty(), send_to.is_empty()) {
        (false, _) => format!("waiting for data from {}", ranks(&recv_from)),
        (true, false) => format!("waiting to send to {}", ranks(&send_to)),
        (true, true) => "waiting on local work".to_string(),
    }
}
