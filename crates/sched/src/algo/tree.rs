//! Double binary trees (two binary trees over the same nodes, each node an inner node in at
//! most one of them), built over hosts: data is cut in two halves and each half is reduced
//! up and broadcast down its own tree, so every node sends and receives about the same
//! amount, at a depth of log2(nodes).
//!
//! Owns: the tree shapes, as pure functions of the node count.

/// A rooted tree over nodes `0..n`, at most two children per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinTree {
    /// Parent of each node; `None` at the root.
    pub parent: Vec<Option<usize>>,
    /// Children of each node, smaller index first.
    pub children: Vec<Vec<usize>>,
    /// The root.
    pub root: usize,
}

impl BinTree {
    fn from_parents(parent: Vec<Option<usize>>) -> BinTree {
        let mut children = vec![Vec::new(); parent.len()];
        let mut root = 0;
        for (i, p) in parent.iter().enumerate() {
            match *p {
                Some(p) => children[p].push(i),
                None => root = i,
            }
        }
        BinTree {
            parent,
            children,
            root,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether the tree has no node.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// Edges on the longest path from the root to a leaf.
    pub fn depth(&self) -> usize {
        let mut depth = vec![0usize; self.len()];
        let mut stack = vec![self.root];
        let mut most = 0;
        while let Some(x) = stack.pop() {
            for &c in self.children.get(x).map_or(&[][..], |v| v) {
                depth[c] = depth[x] + 1;
                most = most.max(depth[c]);
                stack.push(c);
            }
        }
        most
    }

    /// The same tree with node i renamed `map[i]`.
    fn relabel(&self, map: impl Fn(usize) -> usize) -> BinTree {
        let mut parent = vec![None; self.len()];
        for (i, p) in self.parent.iter().enumerate() {
            parent[map(i)] = p.map(&map);
        }
        BinTree::from_parents(parent)
    }
}

/// The in-order binary tree over `0..n`: node i, whose lowest set bit is b, has children
/// i - b/2 and i + b/2 (where they exist), so odd nodes are leaves; node 0 is the root
/// with one child, the largest power of two below n.
pub fn btree(n: usize) -> BinTree {
    let mut parent = vec![None; n];
    for (i, p) in parent.iter_mut().enumerate().skip(1) {
        let b = i & i.wrapping_neg();
        // The natural parent has the next lowest bit; past the end, the tree's right edge
        // is cut short and the node hangs from the node on its left.
        let up = (i ^ b) | (b << 1);
        *p = Some(if up < n { up } else { i ^ b });
    }
    BinTree::from_parents(parent)
}

/// Two complementary trees over `0..n`: the in-order tree and, for even n, its mirror
/// (i -> n-1-i, which turns the odd leaves into inner nodes), for odd n its shift by one.
/// For even n no node is an inner node of both; for odd n at most one is.
pub fn double_btree(n: usize) -> [BinTree; 2] {
    let a = btree(n);
    let b = if n % 2 == 0 {
        a.relabel(|i| n - 1 - i)
    } else {
        a.relabel(|i| (i + 1) % n)
    };
    [a, b]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_tree(t: &BinTree, n: usize) {
        assert_eq!(t.len(), n);
        if n == 0 {
            return;
        }
        assert_eq!(t.parent.iter().filter(|p| p.is_none()).count(), 1);
        for (i, c) in t.children.iter().enumerate() {
            assert!(c.len() <= 2, "n {n}: node {i} has children {c:?}");
        }
        // Every node reaches the root within n steps: no cycles.
        for i in 0..n {
            let (mut x, mut steps) = (i, 0);
            while let Some(p) = t.parent[x] {
                x = p;
                steps += 1;
                assert!(steps <= n, "n {n}: cycle from {i}");
            }
            assert_eq!(x, t.root);
        }
        let lg = usize::BITS - n.leading_zeros();
        assert!(t.depth() <= lg as usize + 1, "n {n}: depth {}", t.depth());
    }

    #[test]
    fn trees_are_binary_complementary_and_shallow() {
        for n in 0..=600usize {
            let [a, b] = double_btree(n);
            check_tree(&a, n);
            check_tree(&b, n);
            let both = (0..n)
                .filter(|&i| !a.children[i].is_empty() && !b.children[i].is_empty())
                .count();
            assert!(both <= n % 2, "n {n}: {both} nodes are inner in both trees");
        }
    }

    #[test]
    fn the_shape_of_eight() {
        let t = btree(8);
        assert_eq!(t.root, 0);
        assert_eq!(t.children[0], vec![4]);
        assert_eq!(t.children[4], vec![2, 6]);
        assert_eq!(t.children[6], vec![5, 7]);
        assert_eq!(t.depth(), 3);
        let [_, m] = double_btree(8);
        assert_eq!(m.root, 7);
        assert_eq!(m.children[3], vec![1, 5]);
    }

    #[test]
    fn a_hundred_thousand_nodes() {
        let [a, b] = double_btree(100_000);
        assert!(a.depth() <= 17 && b.depth() <= 17);
    }
}
