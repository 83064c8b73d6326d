//! Route matching for ringway.
//!
//! This crate owns one thing: turning an ordered list of route rules into a
//! [`Router`] that answers `route(host, path, method, headers) -> RouteId`.
//! Rules are tried in the order given and the first that matches wins, but
//! the compiled index must not scan every rule for every request.
//!
//! It must not depend on anything else in the workspace, nor on TOML,
//! sockets or a runtime. Matching is synchronous and allocates nothing.
#![forbid(unsafe_code)]

use std::fmt;

/// Index of a route in the order the rules were given to [`Router::build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId(pub u32);

/// How a rule matches the request's host (the `Host` header without port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Any host.
    Any,
    /// Exactly this name (compared case-insensitively).
    Exact(String),
    /// `*.example.com`: any name that ends with `.example.com` and has at
    /// least one character before it. Holds the suffix, `.example.com`.
    Suffix(String),
}

impl HostMatch {
    /// Parses `example.com`, `*.example.com` or `*`.
    pub fn parse(pattern: &str) -> Result<HostMatch> {
        todo_parse_host(pattern)
    }
}

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
}

/// Read access to the request's headers, provided by the caller.
pub trait Headers {
    /// The first value of the header `name` (given in lowercase; compare
    /// case-insensitively), if present.
    fn get(&self, name: &str) -> Option<&[u8]>;
}

/// Errors found while compiling rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A path regex does not compile.
    #[error("route {route}: invalid path regex: {message}")]
    InvalidRegex {
        /// Index of the rule.
        route: usize,
        /// What the regex engine said.
        message: String,
    },
    /// A host pattern is malformed.
    #[error("invalid host pattern {pattern:?}: {reason}")]
    InvalidHost {
        /// The pattern as given.
        pattern: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn todo_parse_host(pattern: &str) -> Result<HostMatch> {
    let invalid = |reason| {
        Err(Error::InvalidHost {
            pattern: pattern.to_owned(),
            reason,
        })
    };
    if pattern == "*" {
        return Ok(HostMatch::Any);
    }
    if pattern.is_empty() {
        return invalid("empty host");
    }
    let lower = pattern.to_ascii_lowercase();
    if let Some(suffix) = lower.strip_prefix('*') {
        if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
            return invalid("a wildcard must be a leading `*.` followed by a name");
        }
        return Ok(HostMatch::Suffix(suffix.to_owned()));
    }
    if lower.contains('*') {
        return invalid("`*` is allowed only as a leading `*.`");
    }
    Ok(HostMatch::Exact(lower))
}

/// Compiled routing rules. Placeholder implementation: scans the rules in
/// order. Replaced by an indexed matcher.
pub struct Router {
    rules: Vec<(RouteRule, Option<regex::Regex>)>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router").field("rules", &self.rules.len()).finish()
    }
}

impl Router {
    /// Compiles the rules, in priority order.
    pub fn build(rules: Vec<RouteRule>) -> Result<Router> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            let re = match &rule.path {
                PathMatch::Regex(r) => Some(
                    regex::Regex::new(&format!("^(?:{r})$")).map_err(|e| Error::InvalidRegex {
                        route: i,
                        message: e.to_string(),
                    })?,
                ),
                _ => None,
            };
            compiled.push((rule, re));
        }
        Ok(Router { rules: compiled })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that matches. `host` is the Host header as sent
    /// (any case, possibly with a port); `path` is the request target (its
    /// query, if any, is ignored).
    pub fn route<H: Headers + ?Sized>(
        &self,
        host: &[u8],
        path: &[u8],
        method: &[u8],
        headers: &H,
    ) -> Option<RouteId> {
        let host = strip_port(host);
        let path = match path.iter().position(|&b| b == b'?') {
            Some(q) => &path[..q],
            None => path,
        };
        for (i, (rule, re)) in self.rules.iter().enumerate() {
            let host_ok = match &rule.host {
                HostMatch::Any => true,
                HostMatch::Exact(h) => host.eq_ignore_ascii_case(h.as_bytes()),
                HostMatch::Suffix(s) => {
                    host.len() > s.len()
                        && host[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
                }
            };
            let path_ok = match &rule.path {
                PathMatch::Any => true,
                PathMatch::Exact(p) => path == p.as_bytes(),
                PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
                PathMatch::Regex(_) => match (re, std::str::from_utf8(path)) {
                    (Some(re), Ok(p)) => re.is_match(p),
                    _ => false,
                },
            };
            let method_ok =
                rule.methods.is_empty() || rule.methods.iter().any(|m| m.as_bytes() == method);
            let headers_ok = rule.headers.iter().all(|h| match (&h.value, headers.get(&h.name)) {
                (HeaderValueMatch::Present, Some(_)) => true,
                (HeaderValueMatch::Exact(v), Some(got)) => got == v.as_bytes(),
                _ => false,
            });
            if host_ok && path_ok && method_ok && headers_ok {
                return Some(RouteId(i as u32));
            }
        }
        None
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}
