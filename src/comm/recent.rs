//! The few schedules used last, most recent first: looked up before the plan cache, so that
//! a loop alternating a handful of call shapes (a collective and a barrier, a training
//! step's buckets of a few sizes) skips hashing the key.

use std::sync::Arc;

/// How many schedules are kept.
const KEPT: usize = 4;

/// Up to [`KEPT`] (key, value) pairs, most recently used first.
pub(super) struct Recent<K, V> {
    items: Vec<(K, Arc<V>)>,
}

impl<K: PartialEq, V> Recent<K, V> {
    pub(super) fn new() -> Self {
        Recent {
            items: Vec::with_capacity(KEPT),
        }
    }

    /// The value kept for `key`, which becomes the most recent.
    pub(super) fn get(&mut self, key: &K) -> Option<Arc<V>> {
        let i = self.items.iter().position(|(k, _)| k == key)?;
        self.items[..=i].rotate_right(1);
        Some(self.items[0].1.clone())
    }

    /// Keeps `value` for `key` as the most recent, dropping the least recent beyond [`KEPT`].
    /// The caller has just missed `key` in [`Recent::get`].
    pub(super) fn put(&mut self, key: K, value: Arc<V>) {
        if self.items.len() == KEPT {
            self.items.pop();
        }
        self.items.insert(0, (key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_four() {
        let mut r = Recent::new();
        for k in 0..5 {
            assert!(r.get(&k).is_none());
            r.put(k, Arc::new(k * 10));
        }
        // 0 was dropped when 4 came in; 1 is now the most recent, so 5 drops 2.
        assert!(r.get(&0).is_none());
        assert_eq!(r.get(&1).as_deref(), Some(&10));
        r.put(5, Arc::new(50));
        assert!(r.get(&2).is_none());
        for k in [1, 3, 4, 5] {
            assert_eq!(r.get(&k).as_deref(), Some(&(k * 10)));
        }
    }
}
