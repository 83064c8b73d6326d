use super::*;

fn parse_ok(raw: &[u8]) -> (Framing, bool, bool, Vec<u8>, Vec<u8>) {
    let mut headers = crate::http1::header_slots();
    let req = parse(raw, &mut headers).unwrap().expect("complete");
    (
        req.framing,
        req.keep_alive,
        req.expect_continue,
        req.host.to_vec(),
        req.target.to_vec(),
    )
}

fn parse_err(raw: &[u8]) -> HeadError {
    let mut headers = crate::http1::header_slots();
    parse(raw, &mut headers).unwrap_err()
}

#[test]
fn simple_get() {
    let (framing, keep_alive, expect, host, target) =
        parse_ok(b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n");
    assert_eq!(framing, Framing::Empty);
    assert!(keep_alive);
    assert!(!expect);
    assert_eq!(host, b"Example.com:8080");
    assert_eq!(target, b"/a?b=1");
}

#[test]
fn partial_head_asks_for_more() {
    let mut headers = crate::http1::header_slots();
    assert!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut headers)
            .unwrap()
            .is_none()
    );
}

#[test]
fn framing_from_headers() {
    assert_eq!(
        parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").0,
        Framing::Length(5)
    );
    assert_eq!(
        parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").0,
        Framing::Length(5)
    );
    assert_eq!(
        parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").0,
        Framing::Chunked
    );
    let (_, _, expect, _, _) =
        parse_ok(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    assert!(expect);
}

#[test]
fn smuggling_shapes_are_refused() {
    let cases: [&[u8]; 11] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for raw in cases {
        assert_eq!(
            parse_err(raw).status(),
            400,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn other_refusals_have_their_status() {
    assert_eq!(parse_err(b"GET / HTTP/1.1\r\n\r\n").status(), 400);
    assert_eq!(
        parse_err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").status(),
        400
    );
    assert_eq!(
        parse_err(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n").status(),
        400
    );
    assert_eq!(
        parse_err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n").status(),
        501
    );
    assert_eq!(
        parse_err(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n").status(),
        501
    );
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse_err(&many).status(), 431);
}

#[test]
fn keep_alive_follows_version_and_connection() {
    assert!(!parse_ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").1);
    assert!(!parse_ok(b"GET / HTTP/1.0\r\n\r\n").1);
    assert!(parse_ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").1);
}

#[test]
fn absolute_form_routes_on_its_authority() {
    let (_, _, _, host, target) =
        parse_ok(b"GET http://api.example.com:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(host, b"api.example.com:81");
    assert_eq!(target, b"/x?y");
    assert_eq!(
        parse_ok(b"GET http://a HTTP/1.1\r\nHost: a\r\n\r\n").4,
        b"/"
    );
}

fn upstream_head(raw: &[u8]) -> String {
    upstream_head_with(raw, &crate::HeaderRules::default(), true)
}

#[test]
fn upstream_head_drops_hop_by_hop_and_keeps_order() {
    let head = upstream_head(
        b"POST /p HTTP/1.1\r\nHost: a.example\r\nX-B: 2\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: x\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(
        head,
        "POST /p HTTP/1.1\r\nHost: a.example\r\nX-B: 2\r\nX-A: 1\r\nx-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-forwarded-host: a.example\r\nvia: 1.1 ringway\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn upstream_head_appends_to_forwarding_lists() {
    let head = upstream_head(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 edge\r\nX-Forwarded-For: 10.0.0.2\r\nX-Forwarded-Proto: https\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(
        head.contains("x-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\n"),
        "{head}"
    );
    assert!(head.contains("via: 1.1 edge, 1.1 ringway\r\n"), "{head}");
    assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
    assert!(!head.contains("https"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
}

#[test]
fn websocket_upgrades_pass_and_other_upgrades_are_dropped() {
    let head = upstream_head(
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
    );
    assert!(
        head.contains("upgrade: websocket\r\nconnection: upgrade\r\n"),
        "{head}"
    );
    assert!(head.contains("Sec-WebSocket-Key: k\r\n"), "{head}");
    let head = upstream_head(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\n\r\n",
    );
    assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
    assert!(!head.contains("HTTP2-Settings"), "{head}");
    // Without `Connection: upgrade` the header is only hop-by-hop noise.
    let head = upstream_head(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
}

#[test]
fn client_addresses_are_written_as_display_writes_them() {
    for text in [
        "0.0.0.0",
        "9.10.99.100",
        "255.255.255.255",
        "192.0.2.7",
        "10.200.1.50",
        "::1",
        "2001:db8::7",
        "::ffff:192.0.2.1",
    ] {
        let ip: IpAddr = text.parse().unwrap();
        let mut out = Vec::new();
        write_ip(&mut out, ip);
        assert_eq!(String::from_utf8(out).unwrap(), ip.to_string(), "{text}");
    }
}

/// The upstream head of `raw` with these header rules, from 192.0.2.7.
fn upstream_head_with(raw: &[u8], rules: &crate::HeaderRules, drop_underscored: bool) -> String {
    let mut headers = crate::http1::header_slots();
    let req = parse(raw, &mut headers).unwrap().unwrap();
    let mut out = Vec::new();
    let fwd = Forwarded {
        client_ip: "192.0.2.7".parse().unwrap(),
        proto: "http",
        request_id: None,
        traceparent: b"",
        identity: None,
        upgrade: websocket_upgrade(&req),
    };
    let edits = RequestEdits {
        headers: rules,
        rewrite_prefix: None,
        rewrite_host: None,
        drop_underscored,
    };
    write_upstream_head(&mut out, &req, fwd, edits);
    String::from_utf8(out).unwrap()
}

#[test]
fn underscored_header_names_are_dropped_unless_kept() {
    let raw =
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nX_Api: 1\r\nX-Ok: 2\r\n\r\n";
    let rules = crate::HeaderRules::default();
    let dropped = upstream_head_with(raw, &rules, true);
    assert!(
        !dropped.contains("6.6.6.6") && !dropped.contains("X_Api"),
        "{dropped}"
    );
    assert!(dropped.contains("X-Ok: 2"), "{dropped}");
    let kept = upstream_head_with(raw, &rules, false);
    assert!(kept.contains("X_Forwarded_For: 6.6.6.6"), "{kept}");
}

#[test]
fn a_route_that_removes_or_sets_x_forwarded_for_drops_the_clients_list() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6, 7.7.7.7\r\n\r\n";
    let plain = upstream_head_with(raw, &crate::HeaderRules::default(), true);
    assert!(
        plain.contains("x-forwarded-for: 6.6.6.6, 7.7.7.7, 192.0.2.7\r\n"),
        "{plain}"
    );
    let removed = crate::HeaderRules {
        remove: vec!["X-Forwarded-For".to_owned()],
        ..crate::HeaderRules::default()
    };
    let head = upstream_head_with(raw, &removed, true);
    assert!(head.contains("x-forwarded-for: 192.0.2.7\r\n"), "{head}");
    assert!(!head.contains("6.6.6.6"), "{head}");
    let set = crate::HeaderRules {
        set: vec![("x-forwarded-for".to_owned(), "10.0.0.1".to_owned())],
        ..crate::HeaderRules::default()
    };
    let head = upstream_head_with(raw, &set, true);
    assert_eq!(head.matches("x-forwarded-for").count(), 1, "{head}");
    assert!(head.contains("x-forwarded-for: 10.0.0.1\r\n"), "{head}");
}

/// Found by the `http1_request` fuzz target: the request was routed on the
/// absolute-form target's authority but went upstream with the client's
/// other `Host`.
#[test]
fn absolute_form_authority_replaces_the_host_header_upstream() {
    let head = upstream_head(b"GET http://api.example.com:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n");
    assert!(
        head.starts_with("GET /x?y HTTP/1.1\r\nHost: api.example.com:81\r\n"),
        "{head}"
    );
    assert!(!head.contains("other"), "{head}");
}

/// Found by the `convert` fuzz target: a Host holding `/` (or `?`, `#`,
/// `@`, space) was routed as a host name, and then read as part of the
/// path when the HTTP/2 upstream request's URI was built from it.
#[test]
fn host_with_path_or_userinfo_characters_is_refused() {
    for bad in [
        &b"example.com/admin"[..],
        b"example.com?x",
        b"example.com#x",
        b"user@example.com",
        b"exa mple.com",
        b"example.com\"",
    ] {
        let mut raw = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        raw.extend_from_slice(bad);
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_err(&raw),
            HeadError::Malformed("invalid Host"),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    for good in [
        "example.com:8080",
        "[::1]:80",
        "a_b.example",
        "xn--bcher-kva.example",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        assert_eq!(parse_ok(raw.as_bytes()).3, good.as_bytes());
    }
    assert_eq!(
        parse_err(b"GET http://a#b/x HTTP/1.1\r\nHost: a\r\n\r\n"),
        HeadError::Malformed("invalid Host")
    );
}

/// The authority table allows exactly the bytes of RFC 3986's authority
/// (unreserved, sub-delims, `%`, `:`, and the brackets of an IP literal).
#[test]
fn the_authority_table_is_the_rfc_set() {
    for b in 0..=255u8 {
        let want = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b);
        assert_eq!(super::AUTHORITY_BYTE[usize::from(b)], want, "byte {b}");
    }
}
