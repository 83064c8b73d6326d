//! Route compile plus match (`ringway_router::Router`), against a linear
//! scan written as plainly as possible.
//!
//! Input: structured (`arbitrary`): up to 48 rules over a small alphabet
//! of hosts, paths, methods and headers (so that rules and requests meet),
//! each field also free-form now and then, and up to 16 requests.
//!
//! Invariants: `Router::build` refuses nothing `HostMatch::parse` and the
//! regex crate accept, and for every request `route()` returns the first
//! rule, in order, whose conditions all hold.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use ringway_router::{
    HeaderMatch, HeaderValueMatch, HostMatch, IpRange, PathMatch, RouteId, RouteRule, Router,
};

const HOSTS: [&str; 6] = ["a", "b.a", "A.b.a", "x.b.a.", "[::1]", "c"];
const PATHS: [&str; 8] = ["", "/", "/a", "/a/", "/a/b", "/ab", "/b", "/a/b/c"];
const REGEXES: [&str; 6] = ["/a.*", "/[ab]+", "(/a)+", ".*b", "/", "/a/[^/]+"];
const METHODS: [&str; 3] = ["GET", "POST", "get"];
const HEADERS: [&str; 3] = ["x", "X-Y", "z"];
const VALUES: [&str; 3] = ["1", "2", ""];

/// A string from `pick`, or now and then any short string.
fn text(u: &mut Unstructured<'_>, pick: &[&str]) -> arbitrary::Result<String> {
    if u.ratio(1, 8)? {
        let s: &str = u.arbitrary()?;
        Ok(s.chars().take(40).collect())
    } else {
        Ok((*u.choose(pick)?).to_owned())
    }
}

#[derive(Debug)]
struct Input {
    rules: Vec<RouteRule>,
    requests: Vec<Request>,
}

#[derive(Debug)]
struct Request {
    host: Vec<u8>,
    target: Vec<u8>,
    method: Vec<u8>,
    headers: Headers,
}

#[derive(Debug)]
struct Headers {
    pairs: Vec<(String, Vec<u8>)>,
    client_ip: Option<IpAddr>,
}

impl ringway_router::Headers for Headers {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }
}

fn host_match(u: &mut Unstructured<'_>) -> arbitrary::Result<HostMatch> {
    Ok(match u.int_in_range(0..=3)? {
        0 => HostMatch::Any,
        1 => HostMatch::Exact(text(u, &HOSTS)?),
        2 => HostMatch::Suffix(format!(".{}", text(u, &HOSTS)?)),
        // Through the parser, as the config does it.
        _ => match HostMatch::parse(&text(u, &["*", "*.a", "*.b.a", "a", "*.A.", "**"])?) {
            Ok(h) => h,
            Err(_) => HostMatch::Any,
        },
    })
}

fn path_match(u: &mut Unstructured<'_>) -> arbitrary::Result<PathMatch> {
    Ok(match u.int_in_range(0..=3)? {
        0 => PathMatch::Any,
        1 => PathMatch::Exact(text(u, &PATHS)?),
        2 => PathMatch::Prefix(text(u, &PATHS)?),
        _ => PathMatch::Regex(text(u, &REGEXES)?),
    })
}

fn ip(u: &mut Unstructured<'_>) -> arbitrary::Result<IpAddr> {
    Ok(if u.arbitrary()? {
        IpAddr::V4(Ipv4Addr::new(
            10,
            0,
            u.int_in_range(0..=1)?,
            u.int_in_range(0..=3)?,
        ))
    } else {
        IpAddr::V6(u.arbitrary::<std::net::Ipv6Addr>()?)
    })
}

fn rule(u: &mut Unstructured<'_>) -> arbitrary::Result<RouteRule> {
    let mut methods = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        methods.push(text(u, &METHODS)?);
    }
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        headers.push(HeaderMatch {
            name: text(u, &HEADERS)?,
            value: if u.arbitrary()? {
                HeaderValueMatch::Present
            } else {
                HeaderValueMatch::Exact(text(u, &VALUES)?)
            },
        });
    }
    let mut client_ip = Vec::new();
    if u.ratio(1, 6)? {
        let cidr = format!("{}/{}", ip(u)?, u.int_in_range(0..=129)?);
        if let Ok(range) = cidr.parse::<IpRange>() {
            client_ip.push(range);
        }
    }
    Ok(RouteRule {
        host: host_match(u)?,
        path: path_match(u)?,
        methods,
        headers,
        client_ip,
    })
}

fn request(u: &mut Unstructured<'_>) -> arbitrary::Result<Request> {
    let mut host = text(u, &HOSTS)?;
    if u.ratio(1, 4)? {
        host.push_str(":8080");
    }
    if u.ratio(1, 32)? {
        host = format!("{}.{host}", "x".repeat(255));
    }
    let mut target = text(u, &PATHS)?;
    if u.ratio(1, 4)? {
        target.push('?');
        target.push_str(&text(u, &PATHS)?);
    }
    let mut pairs = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        pairs.push((text(u, &HEADERS)?, text(u, &VALUES)?.into_bytes()));
    }
    Ok(Request {
        host: host.into_bytes(),
        target: target.into_bytes(),
        method: text(u, &METHODS)?.into_bytes(),
        headers: Headers {
            pairs,
            client_ip: if u.arbitrary()? { Some(ip(u)?) } else { None },
        },
    })
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Input> {
        let mut rules = Vec::new();
        for _ in 0..u.int_in_range(0..=48)? {
            rules.push(rule(u)?);
        }
        let mut requests = Vec::new();
        for _ in 0..u.int_in_range(1..=16)? {
            requests.push(request(u)?);
        }
        Ok(Input { rules, requests })
    }
}

fuzz_target!(|input: Input| {
    let router = match Router::build(input.rules.clone()) {
        Ok(router) => router,
        Err(_) => {
            // Only a bad host pattern or a bad regex is refused.
            assert!(input.rules.iter().any(|r| {
                let host_bad = match &r.host {
                    HostMatch::Any => false,
                    HostMatch::Exact(h) => HostMatch::parse(h).map_or(true, |p| !matches!(p, HostMatch::Exact(_))),
                    HostMatch::Suffix(s) => HostMatch::parse(&format!("*{s}")).is_err() || !s.starts_with('.'),
                };
                let regex_bad = matches!(&r.path, PathMatch::Regex(re) if regex::Regex::new(re).is_err()
                    || regex::Regex::new(&format!("^(?:{re})$")).is_err());
                host_bad || regex_bad
            }));
            return;
        }
    };
    assert_eq!(router.len(), input.rules.len());
    let regexes: Vec<Option<regex::Regex>> = input
        .rules
        .iter()
        .map(|r| match &r.path {
            PathMatch::Regex(re) => {
                Some(regex::Regex::new(&format!("^(?:{re})$")).expect("built, so it compiles"))
            }
            _ => None,
        })
        .collect();
    for req in &input.requests {
        let got = router.route(&req.host, &req.target, &req.method, &req.headers);
        let want = linear_scan(&input.rules, &regexes, req);
        assert_eq!(got, want, "{req:?}");
    }
});

/// Every rule in order, every condition checked directly.
fn linear_scan(
    rules: &[RouteRule],
    regexes: &[Option<regex::Regex>],
    req: &Request,
) -> Option<RouteId> {
    let host = &req.host[..];
    let host = match host.first() {
        Some(b'[') => match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        },
        _ => match host.iter().rposition(|&b| b == b':') {
            Some(colon) => &host[..colon],
            None => host,
        },
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    let host_known = host.len() <= 255;
    let path = match req.target.iter().position(|&b| b == b'?') {
        Some(q) => &req.target[..q],
        None => &req.target[..],
    };
    for (i, rule) in rules.iter().enumerate() {
        let host_ok = match &rule.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => {
                let h = h.strip_suffix('.').unwrap_or(h);
                host_known && host.eq_ignore_ascii_case(h.as_bytes())
            }
            HostMatch::Suffix(s) => {
                let s = s.strip_suffix('.').unwrap_or(s);
                host_known
                    && host.len() > s.len()
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        };
        let path_ok = match &rule.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p.as_bytes(),
            PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
            PathMatch::Regex(_) => {
                let re = regexes[i].as_ref().expect("compiled above");
                std::str::from_utf8(path).is_ok_and(|p| re.is_match(p))
            }
        };
        let method_ok =
            rule.methods.is_empty() || rule.methods.iter().any(|m| m.as_bytes() == req.method);
        let headers_ok = rule.headers.iter().all(|h| {
            match (
                &h.value,
                ringway_router::Headers::get(&req.headers, &h.name.to_ascii_lowercase()),
            ) {
                (HeaderValueMatch::Present, Some(_)) => true,
                (HeaderValueMatch::Exact(v), Some(got)) => got == v.as_bytes(),
                _ => false,
            }
        });
        let ip_ok = rule.client_ip.is_empty()
            || req
                .headers
                .client_ip
                .is_some_and(|ip| rule.client_ip.iter().any(|r| r.contains(ip)));
        if host_ok && path_ok && method_ok && headers_ok && ip_ok {
            return Some(RouteId(i as u32));
        }
    }
    None
}
