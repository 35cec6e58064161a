//! The job's news items, as stored under [`NEWS`](super::NEWS)`/<k>`: failures ranks post,
//! and what the store itself sees of the ranks' connections. The communicator's channel
//! (`comm::channel`) reads them; so does a launcher that serves the store (rankrun's report).

use super::proto::{kind_code, kind_from_code};
use crate::error::Error;

/// One news item.
#[derive(Debug, Clone)]
pub enum NewsItem {
    /// A failure a rank posted: (that rank, its error). The first one is the job's cause.
    Cause(usize, Error),
    /// A rank's connection to the store closed without a goodbye (the process died).
    Departed(usize),
    /// A rank has sent the store nothing for a while, though its connection is open and its
    /// communicator's channel asks many times a second: the process is stopped or frozen.
    Silent(usize),
    /// A rank that was silent spoke again.
    Heard(usize),
}

impl NewsItem {
    /// The stored form: `C<rank>|<kind>|<message>`, `D<rank>`, `S<rank>`, `H<rank>`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            NewsItem::Cause(r, e) => format!("C{r}|{}|{}", kind_code(e.kind()), e.message()),
            NewsItem::Departed(r) => format!("D{r}"),
            NewsItem::Silent(r) => format!("S{r}"),
            NewsItem::Heard(r) => format!("H{r}"),
        }
        .into_bytes()
    }

    /// Parses a stored item; `None` for anything else.
    pub fn decode(v: &[u8]) -> Option<NewsItem> {
        let s = std::str::from_utf8(v).ok()?;
        let rank = |t: &str| t.parse::<usize>().ok();
        match s.get(..1)? {
            "D" => Some(NewsItem::Departed(rank(&s[1..])?)),
            "S" => Some(NewsItem::Silent(rank(&s[1..])?)),
            "H" => Some(NewsItem::Heard(rank(&s[1..])?)),
            "C" => {
                let mut it = s[1..].splitn(3, '|');
                let r = rank(it.next()?)?;
                let kind = kind_from_code(it.next()?.parse().ok()?);
                Some(NewsItem::Cause(r, Error::new(kind, it.next()?.to_string())))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_junk_is_refused() {
        for item in [
            NewsItem::Cause(3, Error::invalid_usage("a | b: c")),
            NewsItem::Departed(0),
            NewsItem::Silent(7),
            NewsItem::Heard(12),
        ] {
            assert_eq!(
                NewsItem::decode(&item.encode()).map(|i| i.encode()),
                Some(item.encode())
            );
        }
        for junk in [&b""[..], b"X1", b"D", b"Dx", b"C1|x|m", b"C1", b"\xff"] {
            assert!(NewsItem::decode(junk).is_none(), "{junk:?}");
        }
    }
}
