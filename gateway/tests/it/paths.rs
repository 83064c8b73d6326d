//! Paths are normalized before routing and for what is sent upstream, on
//! raw sockets (curl would normalize them itself without `--path-as-is`).

use crate::support::*;

/// `/admin/` answered by the gateway with 403, everything else proxied to
/// `up`; `listener` adds keys to the listener.
fn gateway(up: &Upstream, listener: &str) -> InProcess {
    InProcess::start(&format!(
        "{EDGE}{listener}\n\
         [[route]]\nmatch = {{ path_prefix = \"/admin/\" }}\nrespond = {{ status = 403, body = \"no\" }}\n\
         [[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    ))
}

fn raw_get(addr: std::net::SocketAddr, target: &str) -> Response {
    exchange(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn every_walk_around_a_prefix_reaches_it() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    for walk in [
        "/admin/secret",
        "/x/../admin/secret",
        "/./admin/secret",
        "//admin/secret",
        "/%61dmin/secret",
        "/x/%2e%2e/admin/secret",
        "/x/%2E%2E/admin/secret",
        "/admin/./secret",
        "/x/y/../../admin/secret?q=1",
    ] {
        assert_eq!(raw_get(gw.addr(), walk).status, 403, "{walk}");
    }
    assert_eq!(up.count("/"), 0, "nothing reached the upstream");
}

#[test]
fn the_upstream_gets_the_normal_path_and_the_query_untouched() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let r = raw_get(gw.addr(), "/a/./b/../c//d/%7Ee%2f?x=/../%2e");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "app GET /a/c/d/~e%2F?x=/../%2e");
}

#[test]
fn a_path_above_the_root_or_badly_escaped_is_a_400_and_the_connection_closes() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    for bad in ["/..", "/a/../../b", "/%zz", "/a%2", "/x/%2e%2e/%2e%2e/y"] {
        let mut c = Conn::open(gw.addr());
        c.send(format!("GET {bad} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let r = c.response(false);
        assert_eq!(r.status, 400, "{bad}");
        assert!(c.is_closed(), "{bad}: still open");
    }
    assert_eq!(up.count("/"), 0);
}

#[test]
fn encoded_slashes_are_kept_by_default_and_can_be_refused_or_decoded() {
    let up = Upstream::start("app");
    // Kept: one segment, not under /admin/, proxied as sent (upper-cased).
    let keep = gateway(&up, "");
    let r = raw_get(keep.addr(), "/admin%2fsecret");
    assert_eq!(r.text(), "app GET /admin%2Fsecret");
    let reject = gateway(&up, "escaped_slashes = \"reject\"");
    assert_eq!(raw_get(reject.addr(), "/admin%2Fsecret").status, 400);
    assert_eq!(raw_get(reject.addr(), "/a%5Cb").status, 400);
    let decode = gateway(&up, "escaped_slashes = \"decode\"");
    assert_eq!(raw_get(decode.addr(), "/admin%2Fsecret").status, 403);
    assert_eq!(raw_get(decode.addr(), "/x%2F..%2Fadmin/secret").status, 403);
}

#[test]
fn slashes_are_merged_unless_the_listener_says_not_to() {
    let up = Upstream::start("app");
    let merged = gateway(&up, "");
    assert_eq!(raw_get(merged.addr(), "/a//b").text(), "app GET /a/b");
    let kept = gateway(&up, "merge_slashes = false");
    assert_eq!(raw_get(kept.addr(), "/a//b").text(), "app GET /a//b");
    // Still no way around /admin/ with dot segments.
    assert_eq!(raw_get(kept.addr(), "/x/../admin/secret").status, 403);
}

#[test]
fn http2_requests_are_normalized_too() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let url = format!("http://{}/x/%2e%2e/admin/secret", gw.addr());
    let (ok, body) = curl(&["-s", "--http2-prior-knowledge", "--path-as-is", &url]);
    assert!(ok);
    assert_eq!(body, b"no");
}
