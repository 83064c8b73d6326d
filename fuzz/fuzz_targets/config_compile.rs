//! Configuration compile from arbitrary TOML text
//! (`ringway_config::compile_str`).
//!
//! Input: the text (not UTF-8: skipped).
//!
//! Invariants: an error inside the text points at a line and column that
//! exist; a snapshot holds together (one router rule per route, every
//! cluster a route names exists, a summary can be printed, a request
//! routes to a route that exists).
//!
//! Compile reads the files a configuration names (certificates, keys, the
//! admin token) and resolves listener addresses written as host names.
//! Texts that could name a device or a kernel file (`/dev/zero` never
//! ends) are skipped, and DNS is bounded to one try of one second
//! (`RES_OPTIONS`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_config::{Action, Error, compile_str};

/// A request's headers for the router: none.
struct NoHeaders;

impl ringway_router::Headers for NoHeaders {
    fn get(&self, _: &str) -> Option<&[u8]> {
        None
    }
}

fuzz_target!(
    init: {
        // SAFETY: runs once, before the fuzzer starts any thread.
        unsafe { std::env::set_var("RES_OPTIONS", "timeout:1 attempts:1") };
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if ["dev", "proc", "sys", "fd"].iter().any(|f| text.contains(f)) {
            return;
        }
        let snapshot = match compile_str("fuzz.toml", text) {
            Ok(snapshot) => snapshot,
            Err(Error::Invalid { at, message }) => {
                assert!(!message.is_empty());
                let lines = text.split('\n').count();
                assert!(at.line >= 1 && at.line <= lines, "line {} of {lines}", at.line);
                let line = text.split('\n').nth(at.line - 1).unwrap_or("");
                assert!(at.col >= 1 && at.col <= line.chars().count() + 1, "col {} of {line:?}", at.col);
                return;
            }
            Err(Error::Read { .. }) => return,
        };
        assert_eq!(snapshot.router.len(), snapshot.routes.len());
        for route in &snapshot.routes {
            let clusters: Vec<_> = match &route.action {
                Action::Proxy(c) => vec![*c],
                Action::Split(arms) => {
                    assert!(!arms.is_empty());
                    arms.iter().map(|a| a.cluster).collect()
                }
                Action::Respond(_) | Action::Redirect(_) => vec![],
            };
            for c in clusters {
                assert!((c.0 as usize) < snapshot.clusters.len(), "route {} names cluster {}", route.name, c.0);
            }
        }
        let _ = snapshot.summary();
        for (host, path) in [(&b"example.com"[..], &b"/"[..]), (b"api.example.com:8080", b"/api/v1?x")] {
            if let Some(id) = snapshot.router.route(host, path, b"GET", &NoHeaders) {
                assert!((id.0 as usize) < snapshot.routes.len());
            }
        }
    }
);
