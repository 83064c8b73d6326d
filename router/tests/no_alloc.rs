//! `Router::route` must not allocate. This is its own test binary because
//! it installs a counting global allocator; the count is per thread, so the
//! test harness's own threads cannot disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringway_router::{
    HeaderMatch, HeaderValueMatch, Headers, HostMatch, PathMatch, RouteId, RouteRule, Router,
};

struct CountingAllocator;

thread_local! {
    /// Allocations made by this thread. `const` and `Copy`, so reading it
    /// from inside the allocator cannot itself allocate.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with` because the allocator also runs while a thread's locals are
    // being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; counting touches only a
// thread-local `Cell`.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded from our caller, who upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Carries only `x-canary: 1`.
struct CanaryHeaders;

impl Headers for CanaryHeaders {
    fn get(&self, name: &str) -> Option<&[u8]> {
        (name == "x-canary").then_some(b"1".as_slice())
    }
}

fn rules() -> Vec<RouteRule> {
    let rule = |host: &str, path: PathMatch| RouteRule {
        client_ip: Vec::new(),
        host: HostMatch::parse(host).expect("host parses"),
        path,
        methods: vec![],
        headers: vec![],
    };
    let mut rules = Vec::new();
    for i in 0..200 {
        rules.push(rule(
            &format!("svc{i}.example.com"),
            PathMatch::Exact(format!("/v1/items/{i}")),
        ));
        rules.push(rule(
            &format!("*.tenant{i}.example.net"),
            PathMatch::Prefix(format!("/t{i}/")),
        ));
    }
    rules.push(RouteRule {
        client_ip: Vec::new(),
        methods: vec!["POST".into()],
        headers: vec![HeaderMatch {
            name: "X-Canary".into(),
            value: HeaderValueMatch::Exact("1".into()),
        }],
        ..rule("svc7.example.com", PathMatch::Prefix("/".into()))
    });
    rules.push(rule("*", PathMatch::Regex("/users/[0-9]+/profile".into())));
    rules.push(rule("*", PathMatch::Prefix("/static/".into())));
    rules
}

#[test]
fn route_does_not_allocate() {
    let router = Router::build(rules()).expect("rules compile");
    let long_host = format!("{}.example.com", "a".repeat(300));
    let requests = [
        (
            "SVC199.example.com:8443",
            "/v1/items/199?x=1",
            "GET",
            Some(398),
        ),
        ("a.b.tenant150.example.net.", "/t150/x", "GET", Some(301)),
        ("svc7.example.com", "/other", "POST", Some(400)),
        ("svc7.example.com", "/other", "GET", None),
        ("nowhere.test", "/users/42/profile", "GET", Some(401)),
        ("[::1]:80", "/static/app.js", "GET", Some(402)),
        (long_host.as_str(), "/static/x", "GET", Some(402)),
        ("nowhere.test", "/nothing/here", "DELETE", None),
    ];
    let run = || {
        for &(host, path, method, want) in &requests {
            let got = router.route(
                host.as_bytes(),
                path.as_bytes(),
                method.as_bytes(),
                &CanaryHeaders,
            );
            assert_eq!(got, want.map(RouteId), "{host}");
        }
    };
    // The regex crate fills a per-thread match cache on first use; that is
    // its allocation, not ours, and it is not repeated for the same input.
    run();

    let before = allocations();
    for _ in 0..1_000 {
        run();
    }
    let after = allocations();
    assert_eq!(after - before, 0, "route() allocated");
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 64]);
    let after = allocations();
    drop(v);
    assert!(after > before);
}
