//! Request path normalization (`ringway_codec::path::normalize`).
//!
//! Input: one control byte, then the request target.
//! - bit 0: slashes are *not* merged (the default merges them);
//! - bits 1..3: encoded slashes are kept (0, 3), refused (1) or
//!   decoded (2).
//!
//! Invariants: a normal form is normal (normalizing it again changes
//! nothing), has no dot segment, no `//` when slashes merge, no encoded
//! slash when they are refused, and keeps the query byte for byte; a
//! target reported as already normal has none of those either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_codec::path::{EscapedSlashes, PathRules, normalize};

fuzz_target!(|data: &[u8]| {
    let Some((&control, target)) = data.split_first() else {
        return;
    };
    let rules = PathRules {
        merge_slashes: control & 1 == 0,
        escaped_slashes: match (control >> 1) & 3 {
            1 => EscapedSlashes::Reject,
            2 => EscapedSlashes::Decode,
            _ => EscapedSlashes::Keep,
        },
    };
    let mut out = Vec::new();
    let normal: &[u8] = match normalize(target, rules, &mut out) {
        Err(_) => return,
        Ok(false) => target,
        Ok(true) => &out,
    };
    if target.first() != Some(&b'/') {
        // Not a path (`*`, or anything else): left alone.
        assert!(std::ptr::eq(normal, target));
        return;
    }
    let query_at = |t: &[u8]| t.iter().position(|&b| b == b'?').unwrap_or(t.len());
    let (path, query) = normal.split_at(query_at(normal));
    assert_eq!(query, &target[query_at(target)..], "the query changed");
    assert_eq!(path.first(), Some(&b'/'));
    for segment in path[1..].split(|&b| b == b'/') {
        assert!(
            segment != b"." && segment != b"..",
            "dot segment left in {:?}",
            String::from_utf8_lossy(normal)
        );
    }
    if rules.merge_slashes {
        assert!(
            !path.windows(2).any(|w| w == b"//"),
            "// left in {:?}",
            String::from_utf8_lossy(normal)
        );
    }
    // Escapes left are well formed, upper-case, and never of an unreserved
    // character (those are decoded).
    let mut i = 0;
    while let Some(at) = path[i..].iter().position(|&b| b == b'%') {
        let at = i + at;
        let hex = &path[at + 1..at + 3];
        assert!(
            hex.iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "escape {:?}",
            String::from_utf8_lossy(hex)
        );
        let value = u8::from_str_radix(std::str::from_utf8(hex).expect("hex"), 16).expect("hex");
        assert!(!(value.is_ascii_alphanumeric() || b"-._~".contains(&value)));
        if matches!(value, b'/' | b'\\') {
            assert_eq!(rules.escaped_slashes, EscapedSlashes::Keep);
        }
        i = at + 3;
    }
    // Idempotent: the normal form normalizes to itself.
    let mut again = Vec::new();
    match normalize(normal, rules, &mut again) {
        Ok(false) => {}
        Ok(true) => assert_eq!(
            again,
            normal,
            "normalizing {:?} twice gave {:?}",
            String::from_utf8_lossy(normal),
            String::from_utf8_lossy(&again)
        ),
        Err(e) => panic!(
            "the normal form {:?} is refused: {e}",
            String::from_utf8_lossy(normal)
        ),
    }
});
