//! How element ranges are cut into near-equal parts and pipelining chunks.

/// Part `i` of `n` near-equal parts of `count` elements: (offset, length) in elements.
/// The first `count % n` parts are one element longer.
pub fn part(count: usize, n: usize, i: usize) -> (usize, usize) {
    let n = n.max(1);
    let base = count / n;
    let rem = count % n;
    (i * base + i.min(rem), base + usize::from(i < rem))
}

/// How many pipelining chunks a range of at most `max_len` elements is cut into.
pub fn nchunks(max_len: usize, chunk_elems: usize) -> usize {
    max_len.div_ceil(chunk_elems.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_range_exactly() {
        for count in [0usize, 1, 2, 7, 100, 1001] {
            for n in 1..=17 {
                let mut next = 0;
                for i in 0..n {
                    let (off, len) = part(count, n, i);
                    assert_eq!(off, next, "count {count} n {n} part {i}");
                    next = off + len;
                }
                assert_eq!(next, count);
            }
        }
    }

    #[test]
    fn chunk_counts() {
        assert_eq!(nchunks(0, 10), 1);
        assert_eq!(nchunks(10, 10), 1);
        assert_eq!(nchunks(11, 10), 2);
        assert_eq!(nchunks(5, 0), 5);
    }
}
