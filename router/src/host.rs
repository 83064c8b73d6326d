//! Host names on both sides of a match: patterns from the rules, checked and
//! normalized once at build time, and the request's `Host` header, normalized
//! per request into a caller-provided stack buffer.
//!
//! Both sides end up in the same form (ASCII lowercase, no port, no trailing
//! dot) so that the index can compare bytes and hash them directly.

use crate::error::{Error, Result};

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
    ///
    /// Names are lowercased and lose a trailing dot. Refused: an empty name,
    /// `*` anywhere but a leading `*.`, empty labels (`a..b`, `.a`), a port,
    /// and names of 255 bytes or more.
    pub fn parse(pattern: &str) -> Result<HostMatch> {
        parse_pattern(pattern)
    }
}

/// Longest normalized request host that is looked up in the host tables.
/// A DNS name has at most 253 characters, so a longer `Host` cannot name any
/// exact or wildcard rule; such requests match only any-host rules. The
/// bound is what lets `route()` lowercase into a fixed stack buffer.
pub(crate) const MAX_HOST_LEN: usize = 255;

/// Parses `example.com`, `*.example.com` or `*` into a normalized pattern.
pub(crate) fn parse_pattern(pattern: &str) -> Result<HostMatch> {
    if pattern == "*" {
        return Ok(HostMatch::Any);
    }
    match pattern.strip_prefix("*.") {
        Some(name) => Ok(HostMatch::Suffix(format!(
            ".{}",
            normalize_name(pattern, name)?
        ))),
        None if pattern.starts_with('*') => invalid(
            pattern,
            "a wildcard must be a leading `*.` followed by a name",
        ),
        None => Ok(HostMatch::Exact(normalize_name(pattern, pattern)?)),
    }
}

/// Checks and normalizes a pattern built by hand rather than by
/// [`parse_pattern`], so that the index never holds a pattern that the
/// request side cannot produce (uppercase, a trailing dot, a suffix without
/// its leading dot).
pub(crate) fn normalize_pattern(host: &HostMatch) -> Result<HostMatch> {
    Ok(match host {
        HostMatch::Any => HostMatch::Any,
        HostMatch::Exact(name) => HostMatch::Exact(normalize_name(name, name)?),
        HostMatch::Suffix(suffix) => {
            let pattern = format!("*{suffix}");
            match suffix.strip_prefix('.') {
                Some(name) => HostMatch::Suffix(format!(".{}", normalize_name(&pattern, name)?)),
                None => return invalid(&pattern, "a suffix must start with `.`"),
            }
        }
    })
}

/// Lowercases `name`, drops one trailing dot and refuses what no request
/// host could ever equal. `pattern` is the text quoted in the error.
fn normalize_name(pattern: &str, name: &str) -> Result<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return invalid(pattern, "empty host name");
    }
    if name.contains('*') {
        return invalid(pattern, "`*` is allowed only as a leading `*.`");
    }
    if name.split('.').any(str::is_empty) {
        return invalid(pattern, "empty label in host name");
    }
    // Request hosts lose their port before matching, so a pattern with one
    // would be dead. Bracketed IPv6 literals are the one place `:` belongs.
    let bracketed = name.starts_with('[') && name.ends_with(']');
    if name.contains(':') && !bracketed {
        return invalid(pattern, "a host pattern has no port");
    }
    // One byte is kept for the leading dot of a suffix.
    if name.len() >= MAX_HOST_LEN {
        return invalid(pattern, "host name longer than 254 bytes");
    }
    Ok(name.to_ascii_lowercase())
}

fn invalid<T>(pattern: &str, reason: &'static str) -> Result<T> {
    Err(Error::InvalidHost {
        pattern: pattern.to_owned(),
        reason,
    })
}

/// Normalizes the request's `Host` into `buf`: port and one trailing dot
/// removed, ASCII lowercased. `None` when the result does not fit, which the
/// caller treats as "matches only any-host rules".
pub(crate) fn normalize_request<'b>(
    raw: &[u8],
    buf: &'b mut [u8; MAX_HOST_LEN],
) -> Option<&'b [u8]> {
    let host = strip_port(raw);
    let host = host.strip_suffix(b".").unwrap_or(host);
    let out = buf.get_mut(..host.len())?;
    out.copy_from_slice(host);
    out.make_ascii_lowercase();
    Some(out)
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

/// The suffixes of `host` that a `*.name` rule could be keyed by: every
/// `.rest` with at least one byte before it, shortest first, and none longer
/// than `longest` (the longest suffix any rule has), so a host made of many
/// labels costs at most as many lookups as there are useful ones.
pub(crate) fn dot_suffixes(host: &[u8], longest: usize) -> impl Iterator<Item = &[u8]> {
    (1..host.len())
        .rev()
        .filter(move |&i| host[i] == b'.')
        .map(move |i| &host[i..])
        .take_while(move |suffix| suffix.len() <= longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(name: &str) -> HostMatch {
        HostMatch::Exact(name.to_owned())
    }

    fn suffix(s: &str) -> HostMatch {
        HostMatch::Suffix(s.to_owned())
    }

    fn reason(pattern: &str) -> &'static str {
        match parse_pattern(pattern) {
            Err(Error::InvalidHost { reason, .. }) => reason,
            other => panic!("{pattern:?} was accepted as {other:?}"),
        }
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse_pattern("*"), Ok(HostMatch::Any));
        assert_eq!(parse_pattern("example.com"), Ok(exact("example.com")));
        assert_eq!(parse_pattern("*.example.com"), Ok(suffix(".example.com")));
        assert_eq!(parse_pattern("[::1]"), Ok(exact("[::1]")));
    }

    #[test]
    fn patterns_are_lowercased_and_lose_a_trailing_dot() {
        assert_eq!(parse_pattern("Example.COM."), Ok(exact("example.com")));
        assert_eq!(parse_pattern("*.Example.com."), Ok(suffix(".example.com")));
    }

    #[test]
    fn refuses_malformed_patterns() {
        assert_eq!(reason(""), "empty host name");
        assert_eq!(reason("."), "empty host name");
        assert_eq!(reason("*."), "empty host name");
        for bad in ["**.example.com", "*example.com", "*-x.example.com"] {
            assert_eq!(
                reason(bad),
                "a wildcard must be a leading `*.` followed by a name",
                "{bad}"
            );
        }
        for bad in ["a.*.com", "*.a.*.com", "example.*"] {
            assert_eq!(
                reason(bad),
                "`*` is allowed only as a leading `*.`",
                "{bad}"
            );
        }
        for bad in [".example.com", "a..com", "example.com..", "*..com"] {
            assert_eq!(reason(bad), "empty label in host name", "{bad}");
        }
        assert_eq!(reason("example.com:8080"), "a host pattern has no port");
        assert_eq!(reason("::1"), "a host pattern has no port");
        assert_eq!(reason(&"a".repeat(255)), "host name longer than 254 bytes");
        assert_eq!(parse_pattern(&"a".repeat(254)), Ok(exact(&"a".repeat(254))));
    }

    #[test]
    fn hand_built_patterns_are_normalized_or_refused() {
        assert_eq!(normalize_pattern(&exact("A.Com.")), Ok(exact("a.com")));
        assert_eq!(normalize_pattern(&suffix(".A.com")), Ok(suffix(".a.com")));
        assert!(normalize_pattern(&suffix("a.com")).is_err());
        assert!(normalize_pattern(&suffix(".")).is_err());
        assert!(normalize_pattern(&exact("*")).is_err());
        assert!(normalize_pattern(&exact("")).is_err());
    }

    fn request(raw: &str) -> Option<Vec<u8>> {
        let mut buf = [0; MAX_HOST_LEN];
        normalize_request(raw.as_bytes(), &mut buf).map(<[u8]>::to_vec)
    }

    #[test]
    fn request_hosts_lose_port_and_trailing_dot_and_case() {
        let norm = |raw| request(raw).map(|h| String::from_utf8_lossy(&h).into_owned());
        assert_eq!(norm("Example.COM:8080").as_deref(), Some("example.com"));
        assert_eq!(norm("example.com.").as_deref(), Some("example.com"));
        assert_eq!(norm("example.com.:443").as_deref(), Some("example.com"));
        assert_eq!(norm("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(norm("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(norm("").as_deref(), Some(""));
    }

    #[test]
    fn request_hosts_longer_than_the_buffer_are_not_looked_up() {
        let at_limit = "a".repeat(MAX_HOST_LEN);
        assert_eq!(request(&at_limit).map(|h| h.len()), Some(MAX_HOST_LEN));
        assert_eq!(
            request(&format!("{at_limit}.")).map(|h| h.len()),
            Some(MAX_HOST_LEN)
        );
        assert_eq!(request(&format!("{at_limit}a")), None);
    }

    #[test]
    fn dot_suffixes_need_a_byte_before_and_respect_the_longest() {
        let all: Vec<&[u8]> = dot_suffixes(b"a.b.example.com", usize::MAX).collect();
        assert_eq!(
            all,
            [&b".com"[..], b".example.com", b".b.example.com"].to_vec()
        );
        let bounded: Vec<&[u8]> = dot_suffixes(b"a.b.example.com", 12).collect();
        assert_eq!(bounded, [&b".com"[..], b".example.com"].to_vec());
        assert_eq!(dot_suffixes(b".com", usize::MAX).count(), 0);
        assert_eq!(dot_suffixes(b"localhost", usize::MAX).count(), 0);
    }
}
