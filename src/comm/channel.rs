//! The job-wide error channel: each communicator keeps its connection to the job's store
//! (instead of saying goodbye after init) in a thread that
//! * posts this rank's failures (a mismatch, a timeout, an abort) as news items,
//! * reads every news item: failures other ranks posted, and ranks whose store connection
//!   ended without a goodbye (the store posts those: the process died or was killed),
//! * publishes what this rank is stalled in, and compares it with the other stalled ranks:
//!   two ranks stalled in different calls at one sequence number is a mismatch that no
//!   message reveals (a gather with different roots, say), reported as such.
//!
//! It also ends the process when a call is stuck for good inside a transport whose locks a
//! dead peer left held (`wedge`).
//!
//! The engine reads the news when it has nothing else to do ([`News`]); the next call of a
//! communicator whose job failed fails at once with the posted cause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wedge::{self, Wedge};
use crate::bootstrap::{NewsItem, StoreClient, NEWS};
use crate::engine::News;
use crate::error::{Error, ErrorKind, Result};

/// How long one wait for news lasts; also how long stopping the channel can take (a
/// communicator's drop waits for the goodbye). 100 ms made the collective tests, which make
/// hundreds of communicators, take 110 s instead of 65.
const TICK: Duration = Duration::from_millis(20);
/// How long the store may take to answer one of the channel's requests.
const STORE_SILENT: Duration = Duration::from_secs(2);
/// How often a stalled rank looks again at the other ranks' stalls.
const RECHECK: Duration = Duration::from_millis(500);

/// A communicator's channel thread.
pub(crate) struct Channel {
    stop: Arc<AtomicBool>,
    tx: Sender<Error>,
    handle: Option<JoinHandle<()>>,
}

fn stall_key(rank: usize) -> String {
    format!("oxccl/stall/{rank}")
}

/// The thread's state.
struct Watch {
    client: StoreClient,
    rank: usize,
    size: usize,
    news: Arc<News>,
    next: u64,
    published: Option<(u64, String)>,
    last_check: Instant,
    reported: bool,
    wedge: Wedge,
}

impl Watch {
    fn post(&mut self, e: &Error) -> Result<()> {
        let n = self.client.add(NEWS, 1)?;
        self.client.set(
            &format!("{NEWS}/{n}"),
            &NewsItem::Cause(self.rank, e.clone()).encode(),
        )
    }

    /// Reads the news items that arrived, waiting up to one tick for the next.
    fn read(&mut self) -> Result<()> {
        let key = format!("{NEWS}/{}", self.next);
        match self.client.wait(&[&key], TICK) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Timeout && !self.client.is_broken() => return Ok(()),
            Err(e) => return Err(e),
        }
        loop {
            let key = format!("{NEWS}/{}", self.next);
            let Some(v) = self.client.try_get(&key)? else {
                return Ok(());
            };
            self.next += 1;
            match NewsItem::decode(&v) {
                Some(NewsItem::Cause(r, e)) => self.news.set_cause(r, e),
                Some(NewsItem::Departed(r)) => self.news.add_departed(r),
                Some(NewsItem::Silent(r)) => self.news.set_silent(r, true),
                Some(NewsItem::Heard(r)) => self.news.set_silent(r, false),
                None => {}
            }
        }
    }

    /// Publishes this rank's stall (or its end), and compares it with the others'.
    fn stalls(&mut self) -> Result<()> {
        let cur = self.news.stalled();
        if cur != self.published {
            let v = cur.as_ref().map_or(Vec::new(), |(seq, what)| {
                format!("{seq}|{what}").into_bytes()
            });
            self.client.set(&stall_key(self.rank), &v)?;
            self.published = cur.clone();
            self.last_check = Instant::now() - RECHECK;
        }
        let Some((seq, what)) = cur else {
            return Ok(());
        };
        if self.reported || self.last_check.elapsed() < RECHECK {
            return Ok(());
        }
        self.last_check = Instant::now();
        // Two ranks stalled in different calls at one sequence number disagree; and when
        // every rank is stalled (none frozen, none still working), ranks in different calls
        // can only be waiting for each other.
        let mut all_stalled = true;
        let mut other: Option<(usize, String, bool)> = None;
        for r in (0..self.size).filter(|&r| r != self.rank) {
            let rec = self.client.try_get(&stall_key(r))?;
            let rec = rec.as_deref().and_then(|v| std::str::from_utf8(v).ok());
            let Some((s, theirs)) = rec.and_then(|t| t.split_once('|')) else {
                all_stalled = false;
                continue;
            };
            let same_seq = s.parse::<u64>().ok() == Some(seq);
            if theirs != what && (same_seq || other.is_none()) {
                other = Some((r, theirs.to_string(), same_seq));
                if same_seq {
                    break;
                }
            }
        }
        let Some((r, theirs, same_seq)) = other else {
            return Ok(());
        };
        if !same_seq && !all_stalled {
            return Ok(());
        }
        let e = Error::invalid_usage(format!(
            "mismatched calls: rank {} is in {what} but rank {r} is in {theirs} (both stalled{})",
            self.rank,
            if same_seq { "" } else { ", as is every rank" }
        ));
        // Every rank (this one too) takes the first cause from the news, so that all report
        // the same one even when two ranks see the mismatch at once.
        self.reported = true;
        self.post(&e)
    }

    fn run(mut self, stop: &AtomicBool, rx: &Receiver<Error>) {
        while !stop.load(Ordering::Acquire) {
            let mut r = Ok(());
            while let Ok(e) = rx.try_recv() {
                r = r.and(self.post(&e));
            }
            if let Some(e) = self.wedge.check(&self.news, self.rank) {
                let _ = self.post(&e);
                wedge::end_process(&e);
            }
            let r = r.and_then(|()| self.stalls()).and_then(|()| self.read());
            if r.is_err() {
                // The store is gone (its process ended): no more news, and no harm to the
                // communicator, whose own connections still tell it about its peers; where
                // a rank's process served it, that rank is gone too (see `News`).
                // A store that stops answering (rather than closing) is frozen with its
                // process: the rank it belongs to, if known, is as good as stopped.
                if r.is_err_and(|e| e.kind() == ErrorKind::Timeout) {
                    self.news.set_host_silent();
                } else {
                    self.news.set_store_gone();
                }
                return;
            }
        }
        // What this rank posted just before it stopped still goes out.
        while let Ok(e) = rx.try_recv() {
            if self.post(&e).is_err() {
                break;
            }
        }
        // Dropping the client says goodbye.
    }
}

impl Channel {
    /// Starts the channel of `rank` of `size` over `client` (connected and registered).
    pub(crate) fn start(
        client: StoreClient,
        rank: usize,
        size: usize,
        news: Arc<News>,
    ) -> Result<Channel> {
        let mut client = client;
        // The channel asks every few tens of milliseconds: where a rank's process serves the
        // store, a store that takes seconds to answer is that rank stopped or frozen (see
        // `News::set_host_silent`). Elsewhere (rankrun's store) a slow answer only waits: a
        // late reply ends the channel, and with it the job's news.
        if news.store_host().is_some() {
            client.set_reply_grace(STORE_SILENT);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let watch = Watch {
            client,
            rank,
            size,
            news,
            next: 1,
            published: None,
            last_check: Instant::now(),
            reported: false,
            wedge: Wedge::new(),
        };
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("oxccl-news{rank}"))
            .stack_size(256 << 10)
            .spawn(move || watch.run(&s, &rx))
            .map_err(|e| Error::io("starting the communicator's news thread", e))?;
        Ok(Channel {
            stop,
            tx,
            handle: Some(handle),
        })
    }

    /// Posts this rank's failure for every other rank.
    pub(crate) fn post(&self, e: Error) {
        let _ = self.tx.send(e);
    }

    /// Stops the thread, which says goodbye to the store (at most about one tick).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.stop();
    }
}
