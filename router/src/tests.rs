//! Router-level tests: each match kind, rule order across buckets, and a
//! property comparing the index with a plain linear scan.

use proptest::prelude::*;

use super::*;

/// Request headers for tests; names compared case-insensitively, as the
/// [`Headers`] contract says.
#[derive(Debug, Clone, Default)]
struct TestHeaders(Vec<(String, Vec<u8>)>);

impl TestHeaders {
    fn of(pairs: &[(&str, &str)]) -> TestHeaders {
        TestHeaders(
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
        )
    }
}

impl Headers for TestHeaders {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

fn rule(host: &str, path: PathMatch) -> RouteRule {
    RouteRule {
        client_ip: Vec::new(),
        host: HostMatch::parse(host).expect("test host pattern parses"),
        path,
        methods: vec![],
        headers: vec![],
    }
}

fn exact(path: &str) -> PathMatch {
    PathMatch::Exact(path.to_owned())
}

fn prefix(path: &str) -> PathMatch {
    PathMatch::Prefix(path.to_owned())
}

fn regex(path: &str) -> PathMatch {
    PathMatch::Regex(path.to_owned())
}

fn router(rules: Vec<RouteRule>) -> Router {
    Router::build(rules).expect("test rules compile")
}

/// The matched rule index for a GET without headers.
fn get(router: &Router, host: &str, path: &str) -> Option<u32> {
    router
        .route(
            host.as_bytes(),
            path.as_bytes(),
            b"GET",
            &TestHeaders::default(),
        )
        .map(|RouteId(id)| id)
}

#[test]
fn a_router_can_be_shared_between_threads() {
    // The gateway publishes one compiled snapshot to every worker.
    fn shareable<T: Send + Sync>() {}
    shareable::<Router>();
}

#[test]
fn an_empty_router_matches_nothing() {
    let r = router(vec![]);
    assert!(r.is_empty());
    assert_eq!(r.len(), 0);
    assert_eq!(get(&r, "example.com", "/"), None);
}

#[test]
fn exact_host_and_exact_path() {
    let r = router(vec![rule("example.com", exact("/a"))]);
    assert_eq!(r.len(), 1);
    assert_eq!(get(&r, "example.com", "/a"), Some(0));
    assert_eq!(get(&r, "example.com", "/a/"), None);
    assert_eq!(get(&r, "example.com", "/"), None);
    assert_eq!(get(&r, "example.org", "/a"), None);
    assert_eq!(get(&r, "www.example.com", "/a"), None);
}

#[test]
fn prefix_is_a_byte_prefix() {
    let r = router(vec![rule("*", prefix("/api"))]);
    assert_eq!(get(&r, "h", "/api"), Some(0));
    assert_eq!(get(&r, "h", "/api/v1"), Some(0));
    assert_eq!(get(&r, "h", "/apiary"), Some(0));
    assert_eq!(get(&r, "h", "/ap"), None);
    assert_eq!(get(&r, "h", "/API"), None);
}

#[test]
fn regex_must_match_the_whole_path() {
    let r = router(vec![rule("*", regex("/users/[0-9]+"))]);
    assert_eq!(get(&r, "h", "/users/42"), Some(0));
    assert_eq!(get(&r, "h", "/users/42/x"), None);
    assert_eq!(get(&r, "h", "/v1/users/42"), None);
    assert_eq!(get(&r, "h", "/users/"), None);
    // Alternation stays inside the anchors.
    let r = router(vec![rule("*", regex("/a|/b"))]);
    assert_eq!(get(&r, "h", "/a"), Some(0));
    assert_eq!(get(&r, "h", "/b"), Some(0));
    assert_eq!(get(&r, "h", "/ab"), None);
    assert_eq!(get(&r, "h", "x/b"), None);
}

#[test]
fn any_host_and_any_path_match_everything() {
    let r = router(vec![rule("*", PathMatch::Any)]);
    assert_eq!(get(&r, "example.com", "/x"), Some(0));
    assert_eq!(get(&r, "", ""), Some(0));
    assert_eq!(get(&r, &"a".repeat(1000), "/"), Some(0));
}

#[test]
fn the_query_is_ignored() {
    let r = router(vec![
        rule("*", exact("/a")),
        rule("*", regex("/b")),
        rule("*", prefix("/c/")),
    ]);
    assert_eq!(get(&r, "h", "/a?x=1"), Some(0));
    assert_eq!(get(&r, "h", "/a?"), Some(0));
    assert_eq!(get(&r, "h", "/b?x=/b"), Some(1));
    assert_eq!(get(&r, "h", "/c?/c/"), None);
    assert_eq!(get(&r, "h", "/c/?q"), Some(2));
}

#[test]
fn an_earlier_any_host_prefix_beats_a_later_exact_host_exact_path() {
    let r = router(vec![
        rule("*", prefix("/")),
        rule("example.com", exact("/a")),
    ]);
    assert_eq!(get(&r, "example.com", "/a"), Some(0));

    let r = router(vec![
        rule("example.com", exact("/a")),
        rule("*", prefix("/")),
    ]);
    assert_eq!(get(&r, "example.com", "/a"), Some(0));
    assert_eq!(get(&r, "example.com", "/b"), Some(1));
}

#[test]
fn first_match_wins_between_wildcard_and_exact_hosts() {
    let r = router(vec![
        rule("*.example.com", prefix("/")),
        rule("api.example.com", prefix("/")),
    ]);
    assert_eq!(get(&r, "api.example.com", "/"), Some(0));

    let r = router(vec![
        rule("api.example.com", prefix("/v1")),
        rule("*.example.com", prefix("/")),
        rule("api.example.com", prefix("/")),
    ]);
    assert_eq!(get(&r, "api.example.com", "/v1/x"), Some(0));
    assert_eq!(get(&r, "api.example.com", "/v2/x"), Some(1));
}

#[test]
fn an_earlier_regex_beats_a_later_exact_path() {
    let r = router(vec![
        rule("example.com", regex("/a.*")),
        rule("example.com", exact("/ab")),
    ]);
    assert_eq!(get(&r, "example.com", "/ab"), Some(0));
}

#[test]
fn a_shorter_earlier_prefix_beats_a_longer_later_one() {
    let r = router(vec![
        rule("*", prefix("/api/")),
        rule("*", prefix("/api/v1/")),
    ]);
    assert_eq!(get(&r, "h", "/api/v1/x"), Some(0));

    let r = router(vec![
        rule("*", prefix("/api/v1/")),
        rule("*", prefix("/api/")),
    ]);
    assert_eq!(get(&r, "h", "/api/v1/x"), Some(0));
    assert_eq!(get(&r, "h", "/api/v2/x"), Some(1));
}

#[test]
fn wildcards_need_a_label_before_the_suffix() {
    let r = router(vec![rule("*.example.com", PathMatch::Any)]);
    assert_eq!(get(&r, "a.example.com", "/"), Some(0));
    assert_eq!(get(&r, "a.b.example.com", "/"), Some(0));
    assert_eq!(get(&r, "A.Example.COM:443", "/"), Some(0));
    assert_eq!(get(&r, "a.example.com.", "/"), Some(0));
    assert_eq!(get(&r, "example.com", "/"), None);
    assert_eq!(get(&r, ".example.com", "/"), None);
    assert_eq!(get(&r, "badexample.com", "/"), None);
    assert_eq!(get(&r, "a.example.org", "/"), None);
}

#[test]
fn the_most_specific_of_several_wildcards_is_not_preferred_over_order() {
    let r = router(vec![
        rule("*.com", exact("/")),
        rule("*.b.example.com", PathMatch::Any),
        rule("*.example.com", PathMatch::Any),
    ]);
    assert_eq!(get(&r, "a.b.example.com", "/"), Some(0));
    assert_eq!(get(&r, "a.b.example.com", "/x"), Some(1));
    assert_eq!(get(&r, "b.example.com", "/x"), Some(2));
}

#[test]
fn the_port_is_stripped() {
    let r = router(vec![
        rule("example.com", PathMatch::Any),
        rule("[::1]", PathMatch::Any),
    ]);
    assert_eq!(get(&r, "example.com:8080", "/"), Some(0));
    assert_eq!(get(&r, "example.com:", "/"), Some(0));
    assert_eq!(get(&r, "[::1]:8080", "/"), Some(1));
    assert_eq!(get(&r, "[::1]", "/"), Some(1));
    assert_eq!(get(&r, "[::2]:8080", "/"), None);
}

#[test]
fn hosts_compare_case_insensitively_and_paths_do_not() {
    let r = router(vec![
        rule("Example.COM", exact("/A")),
        RouteRule {
            client_ip: Vec::new(),
            // Built by hand, not parsed: still lowercased by `build`.
            host: HostMatch::Exact("Other.Example".to_owned()),
            ..rule("*", PathMatch::Any)
        },
    ]);
    assert_eq!(get(&r, "EXAMPLE.com", "/A"), Some(0));
    assert_eq!(get(&r, "example.com", "/a"), None);
    assert_eq!(get(&r, "other.example", "/a"), Some(1));
}

#[test]
fn a_trailing_dot_on_the_host_is_ignored() {
    let r = router(vec![rule("example.com", PathMatch::Any)]);
    assert_eq!(get(&r, "example.com.", "/"), Some(0));
    assert_eq!(get(&r, "example.com.:80", "/"), Some(0));
    assert_eq!(get(&r, "example.com..", "/"), None);
    let r = router(vec![rule("example.com.", PathMatch::Any)]);
    assert_eq!(get(&r, "example.com", "/"), Some(0));
}

#[test]
fn hosts_too_long_to_look_up_match_only_any_host_rules() {
    let long = format!("{}.example.com", "a".repeat(250));
    let r = router(vec![
        rule("*.example.com", PathMatch::Any),
        rule("*", exact("/only-any")),
    ]);
    assert_eq!(get(&r, "a.example.com", "/"), Some(0));
    assert_eq!(get(&r, &long, "/"), None);
    assert_eq!(get(&r, &long, "/only-any"), Some(1));
}

#[test]
fn methods_restrict_and_empty_means_any() {
    let r = router(vec![
        RouteRule {
            client_ip: Vec::new(),
            methods: vec!["POST".into(), "PUT".into()],
            ..rule("*", prefix("/"))
        },
        rule("*", prefix("/")),
    ]);
    let call = |method: &str| {
        r.route(b"h", b"/", method.as_bytes(), &TestHeaders::default())
            .map(|RouteId(id)| id)
    };
    assert_eq!(call("POST"), Some(0));
    assert_eq!(call("PUT"), Some(0));
    assert_eq!(call("GET"), Some(1));
    assert_eq!(call("post"), Some(1), "methods are case-sensitive");
}

#[test]
fn headers_present_exact_and_missing() {
    let r = router(vec![
        RouteRule {
            client_ip: Vec::new(),
            headers: vec![
                HeaderMatch {
                    name: "X-Canary".into(),
                    value: HeaderValueMatch::Present,
                },
                HeaderMatch {
                    name: "x-tenant".into(),
                    value: HeaderValueMatch::Exact("Blue".into()),
                },
            ],
            ..rule("*", prefix("/"))
        },
        RouteRule {
            client_ip: Vec::new(),
            headers: vec![HeaderMatch {
                name: "x-tenant".into(),
                value: HeaderValueMatch::Exact("Blue".into()),
            }],
            ..rule("*", prefix("/"))
        },
    ]);
    let call = |pairs: &[(&str, &str)]| {
        r.route(b"h", b"/", b"GET", &TestHeaders::of(pairs))
            .map(|RouteId(id)| id)
    };
    assert_eq!(call(&[("x-canary", ""), ("x-tenant", "Blue")]), Some(0));
    assert_eq!(call(&[("X-Canary", "yes"), ("X-Tenant", "Blue")]), Some(0));
    assert_eq!(call(&[("x-tenant", "Blue")]), Some(1), "x-canary missing");
    assert_eq!(call(&[("x-canary", ""), ("x-tenant", "blue")]), None);
    assert_eq!(call(&[("x-canary", "")]), None);
    assert_eq!(call(&[]), None);
}

/// Headers that record which names were asked for.
struct AskedHeaders(std::cell::RefCell<Vec<String>>);

impl Headers for AskedHeaders {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.borrow_mut().push(name.to_owned());
        Some(b"")
    }
}

#[test]
fn header_names_are_asked_for_in_lowercase() {
    let r = router(vec![RouteRule {
        client_ip: Vec::new(),
        headers: vec![HeaderMatch {
            name: "X-Request-ID".into(),
            value: HeaderValueMatch::Present,
        }],
        ..rule("*", PathMatch::Any)
    }]);
    let asked = AskedHeaders(Default::default());
    assert_eq!(r.route(b"h", b"/", b"GET", &asked), Some(RouteId(0)));
    assert_eq!(asked.0.into_inner(), ["x-request-id"]);
}

#[test]
fn only_rules_whose_host_and_path_match_are_looked_at() {
    // Every rule has a header condition, so the headers see each rule the
    // search considers. A linear scan would ask 10,000 times.
    let rules = (0..10_000)
        .map(|i| RouteRule {
            client_ip: Vec::new(),
            headers: vec![HeaderMatch {
                name: "x-seen".into(),
                value: HeaderValueMatch::Present,
            }],
            ..rule(
                &format!("h{i}.example.com"),
                prefix(&format!("/p{}/", i % 7)),
            )
        })
        .collect();
    let r = router(rules);
    let asked = AskedHeaders(Default::default());
    let got = r.route(b"h9999.example.com", b"/p3/x", b"GET", &asked);
    assert_eq!(got, Some(RouteId(9999)));
    assert_eq!(asked.0.borrow().len(), 1);
    let got = r.route(b"h9999.example.com", b"/p4/x", b"GET", &asked);
    assert_eq!(got, None);
    assert_eq!(asked.0.borrow().len(), 1);
}

#[test]
fn a_rule_failing_its_conditions_lets_a_later_one_match_in_the_same_slot() {
    let r = router(vec![
        RouteRule {
            client_ip: Vec::new(),
            methods: vec!["POST".into()],
            ..rule("example.com", exact("/a"))
        },
        rule("example.com", exact("/a")),
    ]);
    assert_eq!(get(&r, "example.com", "/a"), Some(1));
}

#[test]
fn a_bad_regex_names_its_rule() {
    let result = Router::build(vec![
        rule("*", regex("/ok")),
        rule("*", regex("/(unclosed")),
    ]);
    assert!(
        matches!(result, Err(Error::InvalidRegex { route: 1, .. })),
        "{result:?}"
    );
}

#[test]
fn a_regex_cannot_escape_its_anchors() {
    // Wrapped as `^(?:a)|(b)$` this would compile and match any path
    // containing `b`; it must be refused as the invalid regex it is.
    let result = Router::build(vec![rule("*", regex("a)|(b"))]);
    assert!(
        matches!(result, Err(Error::InvalidRegex { route: 0, .. })),
        "{result:?}"
    );
}

#[test]
fn bad_host_patterns_are_refused() {
    for pattern in ["", "*.", "a.*.com", "*example.com", "a..com", "a.com:80"] {
        let result = HostMatch::parse(pattern);
        assert!(
            matches!(&result, Err(Error::InvalidHost { pattern: p, .. }) if p == pattern),
            "{pattern:?}: {result:?}"
        );
    }
    for host in [
        HostMatch::Suffix("example.com".into()),
        HostMatch::Suffix(".".into()),
        HostMatch::Exact("".into()),
        HostMatch::Exact("*.example.com".into()),
    ] {
        let result = Router::build(vec![RouteRule {
            client_ip: Vec::new(),
            host: host.clone(),
            ..rule("*", PathMatch::Any)
        }]);
        assert!(
            matches!(result, Err(Error::InvalidHost { .. })),
            "{host:?}: {result:?}"
        );
    }
}

#[test]
fn routes_spread_over_many_buckets_each_find_their_own() {
    let mut rules = Vec::new();
    for i in 0..500 {
        rules.push(rule(&format!("h{i}.example.com"), exact(&format!("/p{i}"))));
        rules.push(rule(
            &format!("*.w{i}.example.net"),
            prefix(&format!("/q{i}/")),
        ));
        rules.push(rule("*", prefix(&format!("/any{i}/"))));
    }
    let r = router(rules);
    for i in (0..500).step_by(37) {
        let host = format!("h{i}.example.com");
        assert_eq!(get(&r, &host, &format!("/p{i}")), Some(3 * i));
        assert_eq!(get(&r, &host, &format!("/p{}", i + 1)), None);
        let wild = format!("x.w{i}.example.net");
        assert_eq!(get(&r, &wild, &format!("/q{i}/z")), Some(3 * i + 1));
        assert_eq!(get(&r, &wild, &format!("/any{i}/z")), Some(3 * i + 2));
    }
}

// --- The index against a linear scan --------------------------------------

/// The reference semantics, written as plainly as possible: every rule in
/// order, every condition checked directly.
fn linear_scan(
    rules: &[RouteRule],
    host: &[u8],
    path: &[u8],
    method: &[u8],
    headers: &TestHeaders,
) -> Option<RouteId> {
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
    let path = match path.iter().position(|&b| b == b'?') {
        Some(q) => &path[..q],
        None => path,
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
            PathMatch::Regex(r) => {
                let re = regex::Regex::new(&format!("^(?:{r})$")).expect("oracle regex compiles");
                std::str::from_utf8(path).is_ok_and(|p| re.is_match(p))
            }
        };
        let method_ok =
            rule.methods.is_empty() || rule.methods.iter().any(|m| m.as_bytes() == method);
        let headers_ok = rule.headers.iter().all(|h| {
            match (&h.value, headers.get(&h.name.to_ascii_lowercase())) {
                (HeaderValueMatch::Present, Some(_)) => true,
                (HeaderValueMatch::Exact(v), Some(got)) => got == v.as_bytes(),
                _ => false,
            }
        });
        if host_ok && path_ok && method_ok && headers_ok {
            return Some(RouteId(i as u32));
        }
    }
    None
}

/// Host names over a tiny alphabet, so that rules and requests collide.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "B"]), 1..4)
        .prop_map(|labels| labels.join("."))
}

fn host_match() -> impl Strategy<Value = HostMatch> {
    prop_oneof![
        Just(HostMatch::Any),
        (name(), any::<bool>()).prop_map(|(n, dot)| HostMatch::Exact(if dot {
            format!("{n}.")
        } else {
            n
        })),
        name().prop_map(|n| HostMatch::Suffix(format!(".{n}"))),
    ]
}

fn request_host() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (name(), any::<bool>(), any::<bool>()).prop_map(|(n, dot, port)| {
            format!("{n}{}{}", if dot { "." } else { "" }, if port { ":8080" } else { "" })
        }),
        1 => Just(String::new()),
        1 => name().prop_map(|n| format!("{}.{n}", "x".repeat(255))),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", ""]), 0..4)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

fn path_match() -> impl Strategy<Value = PathMatch> {
    prop_oneof![
        Just(PathMatch::Any),
        path().prop_map(PathMatch::Exact),
        (path(), any::<prop::sample::Index>())
            .prop_map(|(p, cut)| PathMatch::Prefix(p[..cut.index(p.len() + 1)].to_owned())),
        prop::sample::select(vec!["/a.*", "/[ab]+", "/a/b", "(/a)+", ".*b", "/"])
            .prop_map(|r| PathMatch::Regex(r.to_owned())),
    ]
}

fn header_match() -> impl Strategy<Value = HeaderMatch> {
    prop::sample::select(vec![
        ("x", None),
        ("x", Some("1")),
        ("X-Y", Some("2")),
        ("z", None),
    ])
    .prop_map(|(name, value)| HeaderMatch {
        name: name.to_owned(),
        value: match value {
            None => HeaderValueMatch::Present,
            Some(v) => HeaderValueMatch::Exact(v.to_owned()),
        },
    })
}

fn route_rule() -> impl Strategy<Value = RouteRule> {
    (
        host_match(),
        path_match(),
        prop::sample::subsequence(vec!["GET", "POST"], 0..=2),
        prop::collection::vec(header_match(), 0..2),
    )
        .prop_map(|(host, path, methods, headers)| RouteRule {
            client_ip: Vec::new(),
            host,
            path,
            methods: methods.into_iter().map(str::to_owned).collect(),
            headers,
        })
}

fn request_headers() -> impl Strategy<Value = TestHeaders> {
    (
        prop::sample::select(vec![None, Some("1"), Some("2")]),
        prop::sample::select(vec![None, Some("2"), Some("3")]),
        any::<bool>(),
    )
        .prop_map(|(x, xy, z)| {
            let mut pairs = Vec::new();
            pairs.extend(x.map(|v| ("X", v)));
            pairs.extend(xy.map(|v| ("x-y", v)));
            if z {
                pairs.push(("z", ""));
            }
            TestHeaders::of(&pairs)
        })
}

#[derive(Debug, Clone)]
struct Request {
    host: String,
    target: String,
    method: &'static str,
    headers: TestHeaders,
}

fn request() -> impl Strategy<Value = Request> {
    (
        request_host(),
        path(),
        prop::option::of(path()),
        prop::sample::select(vec!["GET", "POST", "PUT"]),
        request_headers(),
    )
        .prop_map(|(host, path, query, method, headers)| Request {
            host,
            target: match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            },
            method,
            headers,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_index_agrees_with_a_linear_scan(
        rules in prop::collection::vec(route_rule(), 0..40),
        requests in prop::collection::vec(request(), 1..24),
    ) {
        let router = Router::build(rules.clone()).expect("generated rules compile");
        for req in &requests {
            let want = linear_scan(
                &rules,
                req.host.as_bytes(),
                req.target.as_bytes(),
                req.method.as_bytes(),
                &req.headers,
            );
            let got = router.route(
                req.host.as_bytes(),
                req.target.as_bytes(),
                req.method.as_bytes(),
                &req.headers,
            );
            prop_assert_eq!(got, want, "request {:?}", req);
        }
    }
}
