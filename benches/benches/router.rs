//! `Router::route` against rule sets of 10, 1,000 and 10,000 rules.
//!
//! The rule sets are a mix meant to look like a real gateway's: mostly exact
//! hosts, each with a health check, versioned API prefixes (some restricted
//! by method or header), a login page or a regex route and a catch-all;
//! wildcard tenant domains; any-host static prefixes and legacy paths; and
//! two any-host regexes in the middle of the file. The index should keep the
//! per-request cost nearly flat across the sizes.
//!
//! Run: `cargo bench -p ringway-benches --bench router`

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use ringway_router::{
    HeaderMatch, HeaderValueMatch, Headers, HostMatch, PathMatch, RouteRule, Router,
};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// Rules come in groups of ten; group `g` owns host `svc{g}.example.com`
/// and wildcard `*.tenant{g}.example.net`.
fn rules(n: usize) -> Vec<RouteRule> {
    let middle_group = n / 10 / 2;
    (0..n)
        .map(|i| {
            let g = i / 10;
            let svc = || HostMatch::Exact(format!("svc{g}.example.com"));
            let tenant = || HostMatch::Suffix(format!(".tenant{g}.example.net"));
            let mut rule = RouteRule {
                client_ip: Vec::new(),
                host: HostMatch::Any,
                path: PathMatch::Any,
                methods: vec![],
                headers: vec![],
            };
            match i % 10 {
                0 => {
                    rule.host = svc();
                    rule.path = PathMatch::Exact("/healthz".into());
                }
                1 => {
                    rule.host = svc();
                    rule.path = PathMatch::Prefix("/api/v1/".into());
                    rule.methods = vec!["GET".into(), "HEAD".into()];
                }
                2 => {
                    rule.host = svc();
                    rule.path = PathMatch::Prefix("/api/v2/".into());
                    rule.headers = vec![HeaderMatch {
                        name: "x-canary".into(),
                        value: HeaderValueMatch::Exact("1".into()),
                    }];
                }
                3 => {
                    rule.host = svc();
                    rule.path = PathMatch::Prefix("/api/".into());
                }
                4 => {
                    rule.host = svc();
                    rule.path = if g % 2 == 0 {
                        PathMatch::Regex("/users/[0-9]+/orders".into())
                    } else {
                        PathMatch::Exact("/login".into())
                    };
                }
                5 => {
                    rule.host = tenant();
                    rule.path = PathMatch::Prefix("/app/".into());
                }
                6 => rule.host = tenant(),
                7 if g == middle_group => {
                    rule.path = PathMatch::Regex("/reports/[0-9]{4}/[a-z]+".into());
                }
                7 => rule.path = PathMatch::Prefix(format!("/static/{g}/")),
                8 if g == middle_group => {
                    rule.path = PathMatch::Regex("/v[0-9]+/legacy/.*".into());
                }
                8 => rule.path = PathMatch::Exact(format!("/legacy/{g}")),
                _ => {
                    rule.host = svc();
                    rule.path = PathMatch::Prefix("/".into());
                }
            }
            rule
        })
        .collect()
}

/// Request headers as a small list, like a parsed HTTP/1 header block.
struct RequestHeaders(&'static [(&'static str, &'static [u8])]);

impl Headers for RequestHeaders {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

const HEADERS: RequestHeaders = RequestHeaders(&[
    ("user-agent", b"bench/1.0"),
    ("accept", b"*/*"),
    ("x-canary", b"0"),
]);

struct Request {
    name: &'static str,
    host: String,
    path: &'static str,
    /// The rule the request must hit, checked before measuring.
    expect: Option<usize>,
}

fn requests(n: usize) -> [Request; 3] {
    let last = (n - 1) / 10;
    [
        // The last rule in the file: the last group's catch-all, reached
        // after its health check, API prefixes and regex or login page.
        Request {
            name: "late_match",
            host: format!("SVC{last}.example.com:443"),
            path: "/account/settings?tab=2",
            expect: Some(last * 10 + 9),
        },
        // The last group's wildcard, two labels below the suffix.
        Request {
            name: "late_wildcard",
            host: format!("eu.shop.tenant{last}.example.net"),
            path: "/app/cart",
            expect: Some(last * 10 + 5),
        },
        Request {
            name: "no_match",
            host: "unknown.example.org".to_owned(),
            path: "/nothing/here?x=1",
            expect: None,
        },
    ]
}

fn bench_size(group: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let router = match Router::build(rules(n)) {
        Ok(router) => router,
        Err(e) => panic!("bench rules do not compile: {e}"),
    };
    for request in requests(n) {
        let route = || {
            router.route(
                black_box(request.host.as_bytes()),
                black_box(request.path.as_bytes()),
                black_box(b"GET"),
                black_box(&HEADERS),
            )
        };
        let got = route().map(|id| id.0 as usize);
        assert_eq!(got, request.expect, "{} with {n} rules", request.name);
        group.bench_function(BenchmarkId::new(request.name, n), |b| b.iter(route));
    }
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in SIZES {
        bench_size(&mut group, n);
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
