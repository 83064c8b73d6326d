//! Route matching for ringway.
//!
//! This crate owns one thing: turning an ordered list of route rules into a
//! [`Router`] that answers `route(host, path, method, headers) -> RouteId`.
//! Rules are tried in the order given and the first that matches wins, but
//! the compiled index must not scan every rule for every request.
//!
//! It must not depend on anything else in the workspace, nor on TOML,
//! sockets or a runtime. Matching is synchronous and allocates nothing.
//!
//! # The index
//!
//! [`Router::build`] sorts every rule into exactly one *host bucket*, and
//! within it into one *path slot*:
//!
//! - host buckets: a hash map from exact name to bucket, a hash map from
//!   wildcard suffix (`.example.com`) to bucket, and one any-host bucket;
//! - path slots, per bucket: a hash map from exact path to routes, a
//!   path-compressed byte trie of prefixes (`Any` is the empty prefix, at
//!   the root), and a list of regex routes.
//!
//! A request visits only the buckets its host can be in: one exact lookup,
//! one suffix lookup per `.` in the host (`a.b.example.com` tries `.com`,
//! `.example.com`, `.b.example.com`, never longer than the longest wildcard
//! rule), and the any-host bucket. In each it does one exact-path lookup and
//! one trie walk along the path, which meets every prefix rule that can
//! match. The cost therefore grows with the length of the host and path,
//! not with the number of rules; regex rules are the exception, scanned in
//! turn within their bucket, so they are best kept few or put under a host.
//!
//! Rule order survives indexing because a [`RouteId`] *is* the rule's
//! position: every candidate list is ascending, each bucket and each trie
//! node knows the lowest id beneath it, and the search keeps the best (lowest)
//! id found so far. A list stops at its first rule whose methods and headers
//! hold, and whole buckets and subtrees are skipped once they cannot hold a
//! lower id. The result is the rule a linear scan in file order would find.
//!
//! # Invariants
//!
//! - Host patterns in the index and request hosts are in one form: ASCII
//!   lowercase, no port, no trailing dot. Request hosts longer than 255 bytes
//!   (no DNS name is) match only any-host rules; they are lowercased into a
//!   fixed stack buffer, which is what keeps [`Router::route`] allocation-free.
//! - Path regexes match the whole path: they are compiled as `^(?:re)$`, once
//!   `re` alone has been checked to be a valid regex.
//! - The one allocation `route()` can cause is the `regex` crate's own: its
//!   per-thread match cache, filled on a thread's first use of a regex and
//!   grown (rarely) when new input reaches new automaton states.
#![forbid(unsafe_code)]

mod error;
mod hash;
mod host;
mod ip_range;
mod path_table;
mod prefix_trie;

use std::fmt;

pub use error::{Error, Result};
pub use host::HostMatch;
pub use ip_range::{IpRange, canonical as canonical_ip};

use hash::BytesMap;
use path_table::{PathTable, PathTableBuilder, RequestPath};
use prefix_trie::NO_ROUTE;

/// Index of a route in the order the rules were given to [`Router::build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId(pub u32);

/// How a rule matches the request's path (the target without its query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// Exactly this path.
    Exact(String),
    /// Any path that starts with these bytes.
    Prefix(String),
    /// A regular expression that must match the whole path.
    Regex(String),
}

/// How a rule matches one request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name, lowercase.
    pub name: String,
    /// What its (first) value must be.
    pub value: HeaderValueMatch,
}

/// What a matched header's value must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValueMatch {
    /// Present with any value.
    Present,
    /// Exactly this value (case-sensitive).
    Exact(String),
}

/// One routing rule: all given conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// Host condition.
    pub host: HostMatch,
    /// Path condition.
    pub path: PathMatch,
    /// Allowed methods (case-sensitive, as HTTP defines them); empty means any.
    pub methods: Vec<String>,
    /// Header conditions; all must hold.
    pub headers: Vec<HeaderMatch>,
    /// Client addresses (or blocks) the request must come from; empty
    /// means any. The address is the caller's [`Headers::client_ip`].
    pub client_ip: Vec<IpRange>,
}

/// Read access to the request's headers, provided by the caller.
pub trait Headers {
    /// The first value of the header `name` (given in lowercase; compare
    /// case-insensitively), if present.
    fn get(&self, name: &str) -> Option<&[u8]>;

    /// The client's address, for rules with a `client_ip` condition
    /// (`None`: such rules do not match).
    fn client_ip(&self) -> Option<std::net::IpAddr> {
        None
    }
}

/// Compiled routing rules; see the crate documentation for the index.
pub struct Router {
    /// Each rule's method and header conditions, by [`RouteId`]; the index
    /// has already settled host and path when these are checked.
    conditions: Box<[Conditions]>,
    exact_hosts: BytesMap<PathTable>,
    /// Keyed by the suffix with its leading dot, `.example.com`.
    suffix_hosts: BytesMap<PathTable>,
    /// Length of the longest key in `suffix_hosts`: longer suffixes of a
    /// request host need no lookup.
    longest_suffix: usize,
    any_host: PathTable,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("rules", &self.conditions.len())
            .field("exact_hosts", &self.exact_hosts.len())
            .field("suffix_hosts", &self.suffix_hosts.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Compiles the rules, in priority order.
    ///
    /// Host patterns built by hand rather than by [`HostMatch::parse`] are
    /// normalized and checked the same way; a malformed one (for example a
    /// `Suffix` without its leading `.`) is [`Error::InvalidHost`].
    pub fn build(rules: Vec<RouteRule>) -> Result<Router> {
        let mut exact_hosts = BytesMap::<PathTableBuilder>::default();
        let mut suffix_hosts = BytesMap::<PathTableBuilder>::default();
        let mut any_host = PathTableBuilder::default();
        let mut conditions = Vec::with_capacity(rules.len());
        for (index, rule) in rules.into_iter().enumerate() {
            // A `RouteRule` is over a hundred bytes, so 2^32 - 1 of them
            // would take 400 GiB: ids fit, and `NO_ROUTE` stays out of range.
            let route = index as u32;
            let table = match host::normalize_pattern(&rule.host)? {
                HostMatch::Any => &mut any_host,
                HostMatch::Exact(name) => exact_hosts.entry(name.into_bytes().into()).or_default(),
                HostMatch::Suffix(suffix) => {
                    suffix_hosts.entry(suffix.into_bytes().into()).or_default()
                }
            };
            match &rule.path {
                PathMatch::Any => table.insert_prefix("", route),
                PathMatch::Exact(path) => table.insert_exact(path, route),
                PathMatch::Prefix(prefix) => table.insert_prefix(prefix, route),
                PathMatch::Regex(regex) => table.insert_regex(compile_regex(index, regex)?, route),
            }
            conditions.push(Conditions::new(rule.methods, rule.headers, rule.client_ip));
        }
        let build_all = |tables: BytesMap<PathTableBuilder>| -> BytesMap<PathTable> {
            tables
                .into_iter()
                .map(|(key, table)| (key, table.build()))
                .collect()
        };
        Ok(Router {
            conditions: conditions.into(),
            longest_suffix: suffix_hosts.keys().map(|k| k.len()).max().unwrap_or(0),
            exact_hosts: build_all(exact_hosts),
            suffix_hosts: build_all(suffix_hosts),
            any_host: any_host.build(),
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.conditions.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The first rule that matches. `host` is the Host header as sent
    /// (any case, possibly with a port); `path` is the request target (its
    /// query, if any, is ignored).
    ///
    /// A trailing dot on the host is ignored (`example.com.` is
    /// `example.com`); a host longer than 255 bytes matches only rules for
    /// any host. Does not allocate.
    pub fn route<H: Headers + ?Sized>(
        &self,
        host: &[u8],
        path: &[u8],
        method: &[u8],
        headers: &H,
    ) -> Option<RouteId> {
        let path = RequestPath::new(path);
        let accepts = |route: u32| self.conditions[route as usize].accept(method, headers);
        let mut best = NO_ROUTE;
        let mut host_buf = [0; host::MAX_HOST_LEN];
        if let Some(host) = host::normalize_request(host, &mut host_buf) {
            if let Some(table) = self.exact_hosts.get(host) {
                best = table.first_match(&path, best, accepts);
            }
            for suffix in host::dot_suffixes(host, self.longest_suffix) {
                if let Some(table) = self.suffix_hosts.get(suffix) {
                    best = table.first_match(&path, best, accepts);
                }
            }
        }
        best = self.any_host.first_match(&path, best, accepts);
        (best != NO_ROUTE).then_some(RouteId(best))
    }
}

/// Compiles a path regex so that it must match the whole path.
fn compile_regex(route: usize, pattern: &str) -> Result<regex::Regex> {
    let invalid = |e: regex::Error| Error::InvalidRegex {
        route,
        message: e.to_string(),
    };
    // Checked on its own first: wrapped, `a)|(b` would compile as the
    // unanchored `^(?:a)|(b)$` instead of being refused.
    regex::Regex::new(pattern).map_err(invalid)?;
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(invalid)
}

/// What a rule asks of a request beyond host and path.
#[derive(Debug)]
struct Conditions {
    /// Allowed methods; empty means any.
    methods: Box<[Box<[u8]>]>,
    /// Header conditions, names lowercased as [`Headers::get`] expects.
    headers: Box<[HeaderMatch]>,
    /// Client address blocks; empty means any.
    client_ip: Box<[IpRange]>,
}

impl Conditions {
    fn new(methods: Vec<String>, headers: Vec<HeaderMatch>, client_ip: Vec<IpRange>) -> Conditions {
        Conditions {
            client_ip: client_ip.into(),
            methods: methods.into_iter().map(|m| m.into_bytes().into()).collect(),
            headers: headers
                .into_iter()
                .map(|h| HeaderMatch {
                    name: h.name.to_ascii_lowercase(),
                    value: h.value,
                })
                .collect(),
        }
    }

    fn accept<H: Headers + ?Sized>(&self, method: &[u8], headers: &H) -> bool {
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| **m == *method);
        let client_ok = self.client_ip.is_empty()
            || headers
                .client_ip()
                .is_some_and(|ip| self.client_ip.iter().any(|r| r.contains(ip)));
        method_ok
            && client_ok
            && self
                .headers
                .iter()
                .all(|h| match (&h.value, headers.get(&h.name)) {
                    (HeaderValueMatch::Present, Some(_)) => true,
                    (HeaderValueMatch::Exact(want), Some(got)) => got == want.as_bytes(),
                    (_, None) => false,
                })
    }
}

#[cfg(test)]
mod tests;
