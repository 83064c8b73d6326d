//! Request path normalization, before routing and for what goes upstream,
//! so that a route written for `/admin/` cannot be walked around with
//! `/x/../admin/`, `/./admin/`, `//admin/`, `/%61dmin/` or
//! `/x/%2e%2e/admin/`.
//!
//! In order, on the path only (the query is passed on untouched):
//!
//! 1. Percent-encodings are checked (two hex digits, or 400); those of
//!    unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are
//!    decoded; the others are kept, upper-cased (`%2f` → `%2F`).
//! 2. Encoded `/` and `\` (`%2F`, `%5C`) are kept as they are, refused or
//!    decoded, as the listener says ([`EscapedSlashes`], Envoy's
//!    `path_with_escaped_slashes_action`).
//! 3. Runs of `/` fold into one when the listener merges slashes.
//! 4. Dot segments are removed (RFC 3986 §5.2.4); a path that climbs
//!    above the root is refused.
//!
//! The result is what nginx matches its locations against. Targets that
//! are not a path (`*` for `OPTIONS`) are left alone.

use crate::http1::framing::hex_value;

/// What to do with `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Left encoded: `/admin%2Fx` is one segment and does not match
    /// `/admin/`.
    #[default]
    Keep,
    /// The request is refused (400).
    Reject,
    /// Decoded to `/` and `\` before the other steps.
    Decode,
}

/// A listener's path rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// Fold `//` into `/`.
    pub merge_slashes: bool,
    /// Encoded slashes.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathRules {
    fn default() -> PathRules {
        PathRules {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// Why a path was refused (each answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the path")]
    BadEscape,
    /// `%2F` or `%5C` where the listener refuses them.
    #[error("encoded slash in the path")]
    EscapedSlash,
    /// More `..` segments than there are segments above them.
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// Normalizes `target` (path and optional query) by `rules`. Returns
/// `Ok(false)` when it is already normal (nothing written: use `target`
/// as it is, the common case, checked without copying), `Ok(true)` when
/// the normal form has been written to `out` (cleared first).
pub fn normalize(target: &[u8], rules: PathRules, out: &mut Vec<u8>) -> Result<bool, PathError> {
    if target.first() != Some(&b'/') {
        return Ok(false);
    }
    let path_end = memchr::memchr(b'?', target).unwrap_or(target.len());
    let (path, query) = target.split_at(path_end);
    if is_normal(path, rules) {
        return Ok(false);
    }
    let decoded = decode(path, rules.escaped_slashes)?;
    out.clear();
    remove_dot_segments(&decoded, rules.merge_slashes, out)?;
    out.extend_from_slice(query);
    Ok(true)
}

/// True when no step would change `path`: no `%`, no `//` (when merging),
/// no `.` or `..` segment.
fn is_normal(path: &[u8], rules: PathRules) -> bool {
    if memchr::memchr(b'%', path).is_some() {
        return false;
    }
    // One pass over the slashes (a `memmem` searcher built per request
    // cost more than the whole check on a short path): what follows each
    // is another slash, a dot segment, or neither.
    memchr::memchr_iter(b'/', path).all(|at| match path.get(at + 1) {
        Some(b'/') => !rules.merge_slashes,
        Some(b'.') => {
            let rest = &path[at + 2..];
            let segment_end = memchr::memchr(b'/', rest).unwrap_or(rest.len());
            let segment = &rest[..segment_end];
            !(segment.is_empty() || segment == b".")
        }
        _ => true,
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 1 and 2: the path with unreserved escapes decoded, the rest
/// upper-cased, encoded slashes handled by `slashes`.
fn decode(path: &[u8], slashes: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex_value),
            path.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = hi << 4 | lo;
        match value {
            b'/' | b'\\' => match slashes {
                EscapedSlashes::Keep => {
                    out.push(b'%');
                    out.push(path[i + 1].to_ascii_uppercase());
                    out.push(path[i + 2].to_ascii_uppercase());
                }
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push(value),
            },
            v if is_unreserved(v) => out.push(v),
            _ => {
                out.push(b'%');
                out.push(path[i + 1].to_ascii_uppercase());
                out.push(path[i + 2].to_ascii_uppercase());
            }
        }
        i += 3;
    }
    Ok(out)
}

/// Steps 3 and 4 on a decoded path that starts with `/`.
fn remove_dot_segments(
    path: &[u8],
    merge_slashes: bool,
    out: &mut Vec<u8>,
) -> Result<(), PathError> {
    // Segment start offsets in `out`, to pop back to on `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    out.push(b'/');
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            b"." => {
                // `/a/./b` → `/a/b`; a trailing `/.` leaves the slash.
            }
            b".." => {
                let Some(start) = starts.pop() else {
                    return Err(PathError::AboveRoot);
                };
                out.truncate(start);
            }
            b"" if merge_slashes && !last => {}
            _ => {
                starts.push(out.len());
                out.extend_from_slice(segment);
                if !last {
                    out.push(b'/');
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(target: &str, rules: PathRules) -> Result<String, PathError> {
        let mut out = Vec::new();
        Ok(match normalize(target.as_bytes(), rules, &mut out)? {
            true => String::from_utf8(out).unwrap(),
            false => target.to_owned(),
        })
    }

    fn default(target: &str) -> Result<String, PathError> {
        norm(target, PathRules::default())
    }

    #[test]
    fn the_walks_around_a_prefix_all_land_on_it() {
        for walk in [
            "/x/../admin/secret",
            "/./admin/secret",
            "//admin/secret",
            "/%61dmin/secret",
            "/x/%2e%2e/admin/secret",
            "/admin/./secret",
            "/admin//secret",
            "/x/y/../../admin/secret",
            "/%2E/admin/secret",
        ] {
            assert_eq!(default(walk).unwrap(), "/admin/secret", "{walk}");
        }
    }

    /// The quick check agrees with the full steps on every path of up to
    /// seven bytes over `/`, `.` and `a`, merging slashes or not: a path
    /// it calls normal is one the steps would leave as it is.
    #[test]
    fn the_quick_check_agrees_with_the_full_steps() {
        let alphabet = [b'/', b'.', b'a'];
        for merge_slashes in [true, false] {
            let rules = PathRules {
                merge_slashes,
                ..PathRules::default()
            };
            for len in 1..=7u32 {
                for mut n in 0..3usize.pow(len) {
                    let mut path = vec![b'/'];
                    for _ in 1..len {
                        path.push(alphabet[n % 3]);
                        n /= 3;
                    }
                    let mut stepped = Vec::new();
                    let unchanged = remove_dot_segments(&path, merge_slashes, &mut stepped)
                        .is_ok_and(|()| stepped == path);
                    assert_eq!(
                        is_normal(&path, rules),
                        unchanged,
                        "{} (merge {merge_slashes})",
                        String::from_utf8_lossy(&path)
                    );
                }
            }
        }
    }

    #[test]
    fn normal_paths_are_left_alone_without_a_copy() {
        for target in [
            "/",
            "/a/b",
            "/a/b/",
            "/a.b/.c/..d/",
            "/a?x=/../y",
            "*",
            "/a?%zz",
        ] {
            let mut out = Vec::new();
            assert_eq!(
                normalize(target.as_bytes(), PathRules::default(), &mut out),
                Ok(false),
                "{target}"
            );
        }
    }

    #[test]
    fn trailing_dots_and_slashes_follow_rfc_3986() {
        assert_eq!(default("/a/b/..").unwrap(), "/a/");
        assert_eq!(default("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(default("/a/b/../").unwrap(), "/a/");
        assert_eq!(default("/a/..").unwrap(), "/");
        assert_eq!(default("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(default("/a/../..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(default("/a/../../b").unwrap_err(), PathError::AboveRoot);
        assert_eq!(default("/a//").unwrap(), "/a/");
    }

    #[test]
    fn the_query_is_untouched() {
        assert_eq!(
            default("/a/../b?x=/../%2e%2e//y").unwrap(),
            "/b?x=/../%2e%2e//y"
        );
    }

    #[test]
    fn escapes_are_checked_decoded_when_unreserved_and_upper_cased_otherwise() {
        assert_eq!(default("/%7euser/%41%2d%5f").unwrap(), "/~user/A-_");
        assert_eq!(default("/a%20b%3f").unwrap(), "/a%20b%3F");
        for bad in ["/a%", "/a%2", "/a%zz", "/%g1"] {
            assert_eq!(default(bad).unwrap_err(), PathError::BadEscape, "{bad}");
        }
    }

    #[test]
    fn escaped_slashes_are_kept_refused_or_decoded() {
        let with = |escaped_slashes| PathRules {
            escaped_slashes,
            ..PathRules::default()
        };
        assert_eq!(
            norm("/admin%2fx", with(EscapedSlashes::Keep)).unwrap(),
            "/admin%2Fx"
        );
        assert_eq!(
            norm("/a%5cb", with(EscapedSlashes::Keep)).unwrap(),
            "/a%5Cb"
        );
        assert_eq!(
            norm("/admin%2Fx", with(EscapedSlashes::Reject)).unwrap_err(),
            PathError::EscapedSlash
        );
        assert_eq!(
            norm("/admin%2Fx", with(EscapedSlashes::Decode)).unwrap(),
            "/admin/x"
        );
        assert_eq!(
            norm("/x%2F..%2Fadmin", with(EscapedSlashes::Decode)).unwrap(),
            "/admin"
        );
        assert_eq!(
            norm("/a%5Cb", with(EscapedSlashes::Decode)).unwrap(),
            "/a\\b"
        );
    }

    #[test]
    fn slashes_merge_only_when_asked() {
        let keep = PathRules {
            merge_slashes: false,
            ..PathRules::default()
        };
        assert_eq!(norm("//a//b", keep).unwrap(), "//a//b");
        assert_eq!(norm("//a//b/./c", keep).unwrap(), "//a//b/c");
        assert_eq!(default("//a//b").unwrap(), "/a/b");
    }
}
