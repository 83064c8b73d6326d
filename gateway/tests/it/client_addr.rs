//! Client addresses an operator can trust: `trusted_proxies` and
//! `X-Forwarded-For`, a route's `allow`/`deny`, removing the client's
//! `X-Forwarded-For`, and header names with `_`.

use std::time::Duration;

use crate::support::*;

fn request(addr: std::net::SocketAddr, path: &str, extra: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
}

/// `/private/` denies 203.0.113.0/24; everything goes to `up`.
fn gateway(up: &Upstream, listener: &str, route_extra: &str) -> InProcess {
    InProcess::start(&format!(
        "{EDGE}{listener}\n\
         [[route]]\nmatch = {{ path_prefix = \"/private/\" }}\ndeny = [\"203.0.113.0/24\"]\ncluster = \"app\"\n\
         [[route]]\nmatch = {{ path_prefix = \"/office/\" }}\nallow = [\"10.1.0.0/16\", \"127.0.0.1\"]\ncluster = \"app\"\n\
         [[route]]\ncluster = \"app\"\n{route_extra}\n{}",
        cluster("app", &[up.addr])
    ))
}

#[test]
fn behind_a_trusted_proxy_the_client_is_the_first_untrusted_address_from_the_right() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]", "");
    let a = gw.addr();
    // The proxy (the test, at 127.0.0.1) says the client is 203.0.113.5.
    let xff = "X-Forwarded-For: 203.0.113.5\r\n";
    assert_eq!(request(a, "/private/x", xff).status, 403);
    // Through a second trusted hop: still that client.
    let two = "X-Forwarded-For: 198.51.100.1, 203.0.113.5, 10.0.0.2\r\n";
    assert_eq!(request(a, "/private/x", two).status, 403);
    // A client that forged an entry left of itself gains nothing.
    let forged = "X-Forwarded-For: 127.0.0.1, 203.0.113.5\r\n";
    assert_eq!(request(a, "/private/x", forged).status, 403);
    // Split over two headers, read as one list.
    let split = "X-Forwarded-For: 203.0.113.5\r\nX-Forwarded-For: 10.0.0.9\r\n";
    assert_eq!(request(a, "/private/x", split).status, 403);
    // Another client passes.
    assert_eq!(
        request(a, "/private/x", "X-Forwarded-For: 198.51.100.7\r\n").status,
        200
    );
    // allow: the derived client must be in it.
    assert_eq!(
        request(a, "/office/", "X-Forwarded-For: 10.1.2.3\r\n").status,
        200
    );
    assert_eq!(
        request(a, "/office/", "X-Forwarded-For: 198.51.100.7\r\n").status,
        403
    );
    // The header is passed on with this hop appended.
    let r = request(a, "/echo", xff);
    assert_eq!(r.status, 200);
    let seen = up.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        last.header("x-forwarded-for"),
        Some("203.0.113.5, 127.0.0.1")
    );
}

#[test]
fn from_an_untrusted_peer_the_header_is_kept_but_not_believed() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "", "");
    let a = gw.addr();
    let xff = "X-Forwarded-For: 203.0.113.5\r\n";
    // Not trusted: the client is the peer, 127.0.0.1, which /private/ lets in.
    assert_eq!(request(a, "/private/x", xff).status, 200);
    assert_eq!(request(a, "/office/", xff).status, 200);
    let seen = up.seen();
    assert_eq!(
        seen.last().unwrap().header("x-forwarded-for"),
        Some("203.0.113.5, 127.0.0.1")
    );
}

#[test]
fn the_access_log_names_the_derived_client() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let log = dir.path.join("access.log");
    let gw = InProcess::start(&format!(
        "[access_log]\npath = \"{}\"\n{EDGE}trusted_proxies = [\"127.0.0.1\"]\n[[route]]\ncluster = \"app\"\n{}",
        log.display(),
        cluster("app", &[up.addr])
    ));
    assert_eq!(
        request(gw.addr(), "/", "X-Forwarded-For: 203.0.113.5\r\n").status,
        200
    );
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"client\":\"203.0.113.5:")
    }));
}

#[test]
fn a_route_that_removes_x_forwarded_for_sends_only_this_hop() {
    let up = Upstream::start("app");
    let gw = InProcess::start(&format!(
        "{EDGE}[[route]]\ncluster = \"app\"\nrequest_headers = {{ remove = [\"x-forwarded-for\"] }}\n{}",
        cluster("app", &[up.addr])
    ));
    let r = request(gw.addr(), "/", "X-Forwarded-For: 6.6.6.6\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        up.seen().last().unwrap().header("x-forwarded-for"),
        Some("127.0.0.1")
    );
}

#[test]
fn header_names_with_underscores_are_dropped_kept_or_refused() {
    let up = Upstream::start("app");
    let sneaky = "X_Forwarded_For: 6.6.6.6\r\nX-Fine: 1\r\n";
    let dropped = gateway(&up, "", "");
    assert_eq!(request(dropped.addr(), "/", sneaky).status, 200);
    let seen = up.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.header("x_forwarded_for"), None);
    assert_eq!(last.header("x-fine"), Some("1"));

    let kept = gateway(&up, "underscores_in_headers = \"keep\"", "");
    assert_eq!(request(kept.addr(), "/", sneaky).status, 200);
    assert_eq!(
        up.seen().last().unwrap().header("x_forwarded_for"),
        Some("6.6.6.6")
    );

    let refused = gateway(&up, "underscores_in_headers = \"reject\"", "");
    let before = up.seen().len();
    let mut c = Conn::open(refused.addr());
    c.send(format!("GET / HTTP/1.1\r\nHost: a\r\n{sneaky}\r\n").as_bytes());
    assert_eq!(c.response(false).status, 400);
    assert!(c.is_closed());
    assert_eq!(up.seen().len(), before);
}

#[test]
fn routes_can_match_on_the_client_address() {
    let gw = InProcess::start(&format!(
        "{EDGE}trusted_proxies = [\"127.0.0.1\"]\n\
         [[route]]\nmatch = {{ client_ip = [\"203.0.113.0/24\", \"2001:db8::/32\"] }}\nrespond = {{ status = 200, body = \"inside\" }}\n\
         [[route]]\nrespond = {{ status = 200, body = \"outside\" }}\n"
    ));
    let a = gw.addr();
    assert_eq!(
        request(a, "/", "X-Forwarded-For: 203.0.113.5\r\n").text(),
        "inside"
    );
    assert_eq!(
        request(a, "/", "X-Forwarded-For: 2001:db8::7\r\n").text(),
        "inside"
    );
    assert_eq!(
        request(a, "/", "X-Forwarded-For: 198.51.100.1\r\n").text(),
        "outside"
    );
    // No header: the client is the peer, 127.0.0.1.
    assert_eq!(request(a, "/", "").text(), "outside");
}
