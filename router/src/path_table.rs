//! The path part of the index: one [`PathTable`] per host bucket.
//!
//! A table answers "which is the lowest route in this bucket whose path
//! condition holds and whose other conditions the caller accepts" without
//! looking at routes that cannot match: exact paths through a hash map,
//! prefixes (and `Any`, the empty prefix) through a [`PrefixTrie`] walk, and
//! only regexes through a list, since nothing short of running a regex says
//! whether it matches.

use std::cell::OnceCell;

use regex::Regex;

use crate::hash::BytesMap;
use crate::prefix_trie::{PrefixTrie, PrefixTrieBuilder};

/// The request path, its query removed, with its UTF-8 form computed only if
/// a regex needs it.
#[derive(Debug)]
pub(crate) struct RequestPath<'p> {
    bytes: &'p [u8],
    text: OnceCell<Option<&'p str>>,
}

impl<'p> RequestPath<'p> {
    /// `target` is the request target; everything from `?` on is ignored.
    pub(crate) fn new(target: &'p [u8]) -> RequestPath<'p> {
        let bytes = match target.iter().position(|&b| b == b'?') {
            Some(query) => &target[..query],
            None => target,
        };
        RequestPath {
            bytes,
            text: OnceCell::new(),
        }
    }

    /// The path as text; `None` when it is not UTF-8, which no regex route
    /// then matches.
    fn text(&self) -> Option<&'p str> {
        *self
            .text
            .get_or_init(|| std::str::from_utf8(self.bytes).ok())
    }
}

/// Path index of one host bucket.
#[derive(Debug)]
pub(crate) struct PathTable {
    /// Routes by exact path, each list ascending.
    exact: BytesMap<Box<[u32]>>,
    /// Prefix routes, including `Any` as the empty prefix.
    prefixes: PrefixTrie,
    /// Regex routes, ascending; tried one by one.
    regexes: Box<[(u32, Regex)]>,
    /// Lowest route in the table, so a whole bucket can be skipped once a
    /// better match is known.
    min_route: u32,
}

/// Collects one bucket's routes, in ascending order, then builds its table.
#[derive(Debug, Default)]
pub(crate) struct PathTableBuilder {
    exact: BytesMap<Vec<u32>>,
    prefixes: PrefixTrieBuilder,
    regexes: Vec<(u32, Regex)>,
}

impl PathTableBuilder {
    pub(crate) fn insert_exact(&mut self, path: &str, route: u32) {
        let routes = self.exact.entry(path.as_bytes().into()).or_default();
        routes.push(route);
    }

    pub(crate) fn insert_prefix(&mut self, prefix: &str, route: u32) {
        self.prefixes.insert(prefix.as_bytes(), route);
    }

    /// `regex` must already be anchored at both ends.
    pub(crate) fn insert_regex(&mut self, regex: Regex, route: u32) {
        self.regexes.push((route, regex));
    }

    pub(crate) fn build(self) -> PathTable {
        let exact: BytesMap<Box<[u32]>> = self
            .exact
            .into_iter()
            .map(|(path, routes)| (path, routes.into()))
            .collect();
        let prefixes = self.prefixes.build();
        let min_route = exact
            .values()
            .filter_map(|routes| routes.first().copied())
            .chain(self.regexes.first().map(|&(route, _)| route))
            .fold(prefixes.min_route(), u32::min);
        PathTable {
            exact,
            prefixes,
            regexes: self.regexes.into(),
            min_route,
        }
    }
}

impl PathTable {
    /// The lowest route below `best` whose path condition holds for `path`
    /// and which `accepts` (the rule's method and header conditions); `best`
    /// itself when there is none.
    ///
    /// Every candidate list is ascending, so each stops at its first
    /// accepted route or at the first route not below `best`.
    pub(crate) fn first_match(
        &self,
        path: &RequestPath<'_>,
        mut best: u32,
        accepts: impl Fn(u32) -> bool,
    ) -> u32 {
        if self.min_route >= best {
            return best;
        }
        if let Some(routes) = self.exact.get(path.bytes) {
            best = first_accepted(routes, best, &accepts);
        }
        for step in self.prefixes.walk(path.bytes) {
            if step.min_route >= best {
                break;
            }
            best = first_accepted(step.routes, best, &accepts);
        }
        for (route, regex) in self.regexes.iter() {
            if *route >= best {
                break;
            }
            // Methods and headers are cheap to check; the regex is not.
            if accepts(*route) && path.text().is_some_and(|text| regex.is_match(text)) {
                best = *route;
                break;
            }
        }
        best
    }
}

/// The first of `routes` (ascending) that is below `best` and accepted;
/// `best` when there is none.
fn first_accepted(routes: &[u32], best: u32, accepts: impl Fn(u32) -> bool) -> u32 {
    routes
        .iter()
        .take_while(|&&route| route < best)
        .find(|&&route| accepts(route))
        .map_or(best, |&route| route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NO_ROUTE;

    fn anchored(pattern: &str) -> Regex {
        Regex::new(&format!("^(?:{pattern})$")).expect("test regex compiles")
    }

    /// Routes 0..: exact `/a`, prefix `/a`, regex `/a.*`, exact `/a`, any.
    fn table() -> PathTable {
        let mut builder = PathTableBuilder::default();
        builder.insert_exact("/a", 0);
        builder.insert_prefix("/a", 1);
        builder.insert_regex(anchored("/a.*"), 2);
        builder.insert_exact("/a", 3);
        builder.insert_prefix("", 4);
        builder.build()
    }

    fn first(table: &PathTable, target: &str, refused: &[u32]) -> u32 {
        table.first_match(&RequestPath::new(target.as_bytes()), NO_ROUTE, |route| {
            !refused.contains(&route)
        })
    }

    #[test]
    fn the_lowest_accepted_route_wins_across_kinds() {
        let t = table();
        assert_eq!(first(&t, "/a", &[]), 0);
        assert_eq!(first(&t, "/a", &[0]), 1);
        assert_eq!(first(&t, "/a", &[0, 1]), 2);
        assert_eq!(first(&t, "/a", &[0, 1, 2]), 3);
        assert_eq!(first(&t, "/a", &[0, 1, 2, 3]), 4);
        assert_eq!(first(&t, "/a", &[0, 1, 2, 3, 4]), NO_ROUTE);
        assert_eq!(first(&t, "/ab", &[]), 1);
        assert_eq!(first(&t, "/ab", &[1]), 2);
        assert_eq!(first(&t, "/b", &[]), 4);
    }

    #[test]
    fn the_query_is_ignored() {
        let t = table();
        assert_eq!(first(&t, "/a?x=1", &[]), 0);
        assert_eq!(first(&t, "/a?x=1", &[0, 1]), 2);
        assert_eq!(first(&t, "?/a", &[]), 4);
    }

    #[test]
    fn routes_not_below_best_are_not_considered() {
        let t = table();
        let path = RequestPath::new(b"/a");
        let checked = std::cell::RefCell::new(Vec::new());
        let best = t.first_match(&path, 2, |route| {
            checked.borrow_mut().push(route);
            route == 1
        });
        assert_eq!(best, 1);
        assert_eq!(checked.into_inner(), [0, 1]);
        assert_eq!(t.first_match(&path, 0, |_| true), 0);
    }

    #[test]
    fn a_non_utf8_path_matches_no_regex() {
        let mut builder = PathTableBuilder::default();
        builder.insert_regex(anchored("/.*"), 0);
        let t = builder.build();
        let matched = t.first_match(&RequestPath::new(b"/\xff"), NO_ROUTE, |_| true);
        assert_eq!(matched, NO_ROUTE);
        let matched = t.first_match(&RequestPath::new(b"/x"), NO_ROUTE, |_| true);
        assert_eq!(matched, 0);
    }
}
