//! A byte trie of path prefixes, path-compressed (radix) once built.
//!
//! Walking a request path from the root visits exactly the nodes whose
//! prefix the path starts with, so every prefix rule that can match is found
//! in one pass of at most `path.len()` bytes, however many prefixes there
//! are. Chains of nodes with one child and no routes are merged into one edge
//! so that a walk down `/api/v1/users/` takes a few hops, not fourteen.

use std::collections::BTreeMap;

/// "No route (yet)" in the index's `u32` route ids: larger than any real
/// one, so that "lower id wins" comparisons need no `Option`.
pub(crate) const NO_ROUTE: u32 = u32::MAX;

/// Built prefix trie; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct PrefixTrie {
    /// `nodes[0]` is the root (the empty prefix). A child always has a
    /// larger index than its parent.
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Bytes on the edge from the parent to this node; empty for the root.
    label: Box<[u8]>,
    /// First byte of each child's label, sorted, parallel to `children`.
    child_bytes: Box<[u8]>,
    children: Box<[u32]>,
    /// Routes whose prefix ends exactly here, ascending.
    routes: Box<[u32]>,
    /// Lowest route anywhere in this subtree, this node included. A walk
    /// stops as soon as this is no better than the match already found:
    /// nothing further down can win.
    min_route: u32,
}

/// Collects prefixes, then compiles them into a [`PrefixTrie`].
#[derive(Debug, Default)]
pub(crate) struct PrefixTrieBuilder {
    /// One node per byte; `nodes[0]` is the root.
    nodes: Vec<BuilderNode>,
}

#[derive(Debug, Default)]
struct BuilderNode {
    children: BTreeMap<u8, usize>,
    routes: Vec<u32>,
}

impl PrefixTrieBuilder {
    /// Adds `route` under `prefix`. Routes must be added in ascending order.
    pub(crate) fn insert(&mut self, prefix: &[u8], route: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(BuilderNode::default());
        }
        let mut node = 0;
        for &byte in prefix {
            node = match self.nodes[node].children.get(&byte) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(BuilderNode::default());
                    self.nodes[node].children.insert(byte, child);
                    child
                }
            };
        }
        debug_assert!(self.nodes[node].routes.last() < Some(&route));
        self.nodes[node].routes.push(route);
    }

    /// Compiles the trie, merging single-child chains into multi-byte edges.
    pub(crate) fn build(self) -> PrefixTrie {
        let mut nodes = vec![Node::default()];
        // Iterative so that a pathologically long prefix cannot overflow
        // the stack. Pairs are (compiled node, builder node).
        let mut pending = if self.nodes.is_empty() {
            vec![]
        } else {
            vec![(0, 0)]
        };
        while let Some((at, from)) = pending.pop() {
            let source = &self.nodes[from];
            let mut child_bytes = Vec::with_capacity(source.children.len());
            let mut children = Vec::with_capacity(source.children.len());
            for (&byte, &first) in &source.children {
                let mut label = vec![byte];
                let mut end = first;
                loop {
                    let node = &self.nodes[end];
                    if !node.routes.is_empty() || node.children.len() != 1 {
                        break;
                    }
                    let Some((&next_byte, &next)) = node.children.first_key_value() else {
                        break;
                    };
                    label.push(next_byte);
                    end = next;
                }
                child_bytes.push(byte);
                children.push(node_id(nodes.len()));
                pending.push((nodes.len(), end));
                nodes.push(Node {
                    label: label.into(),
                    ..Node::default()
                });
            }
            let node = &mut nodes[at];
            node.child_bytes = child_bytes.into();
            node.children = children.into();
            node.routes = source.routes.as_slice().into();
        }
        // Children come after their parent, so a backwards pass sees every
        // child's subtree minimum before the parent needs it.
        for at in (0..nodes.len()).rev() {
            let own = nodes[at].routes.first().copied().unwrap_or(NO_ROUTE);
            let below = nodes[at]
                .children
                .iter()
                .map(|&child| nodes[child as usize].min_route)
                .min()
                .unwrap_or(NO_ROUTE);
            nodes[at].min_route = own.min(below);
        }
        PrefixTrie { nodes }
    }
}

fn node_id(at: usize) -> u32 {
    // A trie has at most one node per byte of prefix text, which is far
    // below 2^32 for any rule set that fits in memory.
    at as u32
}

impl PrefixTrie {
    /// Lowest route in the whole trie ([`NO_ROUTE`] when empty).
    pub(crate) fn min_route(&self) -> u32 {
        self.nodes[0].min_route
    }

    /// Number of nodes.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The nodes whose prefix `path` starts with, shortest prefix first.
    pub(crate) fn walk<'t, 'p>(&'t self, path: &'p [u8]) -> Walk<'t, 'p> {
        Walk {
            trie: self,
            node: Some(0),
            rest: path,
        }
    }
}

/// Iterator returned by [`PrefixTrie::walk`].
#[derive(Debug)]
pub(crate) struct Walk<'t, 'p> {
    trie: &'t PrefixTrie,
    node: Option<usize>,
    /// The part of the path below `node`.
    rest: &'p [u8],
}

/// One node visited by a [`Walk`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Step<'t> {
    /// Routes whose prefix ends here, ascending.
    pub(crate) routes: &'t [u32],
    /// Lowest route here or deeper; never decreases along a walk.
    pub(crate) min_route: u32,
}

impl<'t> Iterator for Walk<'t, '_> {
    type Item = Step<'t>;

    fn next(&mut self) -> Option<Step<'t>> {
        let node = &self.trie.nodes[self.node.take()?];
        if let Some((child, rest)) = self.descend(node) {
            self.node = Some(child);
            self.rest = rest;
        }
        Some(Step {
            routes: &node.routes,
            min_route: node.min_route,
        })
    }
}

impl<'p> Walk<'_, 'p> {
    /// The child of `node` whose whole label the rest of the path starts
    /// with, and the path after it.
    fn descend(&self, node: &Node) -> Option<(usize, &'p [u8])> {
        let i = node.child_bytes.binary_search(self.rest.first()?).ok()?;
        let child = node.children[i] as usize;
        let rest = self.rest.strip_prefix(&*self.trie.nodes[child].label)?;
        Some((child, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(prefixes: &[&str]) -> PrefixTrie {
        let mut builder = PrefixTrieBuilder::default();
        for (route, prefix) in (0..).zip(prefixes) {
            builder.insert(prefix.as_bytes(), route);
        }
        builder.build()
    }

    /// Routes found along the walk, in walk order.
    fn found(trie: &PrefixTrie, path: &str) -> Vec<u32> {
        trie.walk(path.as_bytes())
            .flat_map(|step| step.routes.to_vec())
            .collect()
    }

    #[test]
    fn finds_every_prefix_of_the_path_and_nothing_else() {
        let t = trie(&["/api/", "/api/v1/", "/", "/apix", "/api/v1/users", "/b"]);
        assert_eq!(found(&t, "/api/v1/users/7"), [2, 0, 1, 4]);
        assert_eq!(found(&t, "/api/v1/user"), [2, 0, 1]);
        assert_eq!(found(&t, "/api"), [2]);
        assert_eq!(found(&t, "/apix/1"), [2, 3]);
        assert_eq!(found(&t, "/c"), [2]);
        assert_eq!(found(&t, ""), Vec::<u32>::new());
        assert_eq!(found(&t, "x"), Vec::<u32>::new());
    }

    #[test]
    fn the_empty_prefix_lives_at_the_root() {
        let t = trie(&["/a", ""]);
        assert_eq!(found(&t, ""), [1]);
        assert_eq!(found(&t, "/a"), [1, 0]);
    }

    #[test]
    fn routes_sharing_a_prefix_stay_ascending() {
        let t = trie(&["/a", "/b", "/a", "/a"]);
        assert_eq!(found(&t, "/a"), [0, 2, 3]);
    }

    #[test]
    fn single_child_chains_are_merged() {
        // Root, `/api/v1/` and the two leaves: the bytes in between are
        // edge labels, not nodes.
        let t = trie(&["/api/v1/users", "/api/v1/orders"]);
        assert_eq!(t.node_count(), 4);
        assert_eq!(found(&t, "/api/v1/orders/1"), [1]);
        assert_eq!(found(&t, "/api/v1/o"), Vec::<u32>::new());
    }

    #[test]
    fn subtree_minimum_never_decreases_along_a_walk() {
        let t = trie(&["/a/b/c", "/a", "/a/b", "/x"]);
        assert_eq!(t.min_route(), 0);
        // Root, the branch at `/`, then `/a`, `/a/b`, `/a/b/c`.
        let mins: Vec<u32> = t.walk(b"/a/b/c").map(|s| s.min_route).collect();
        assert_eq!(mins, [0, 0, 0, 0, 0]);
        let mins: Vec<u32> = t.walk(b"/x/y").map(|s| s.min_route).collect();
        assert_eq!(mins, [0, 0, 3]);
    }

    #[test]
    fn an_empty_trie_yields_the_root_only() {
        let t = PrefixTrieBuilder::default().build();
        assert_eq!(t.min_route(), NO_ROUTE);
        assert_eq!(
            t.walk(b"/a").collect::<Vec<_>>(),
            [Step {
                routes: &[],
                min_route: NO_ROUTE
            }]
        );
    }
}
