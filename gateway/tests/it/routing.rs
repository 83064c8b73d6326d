//! Host, path, method and header routing, and direct responses.

use crate::support::*;

#[test]
fn routes_by_host_path_method_and_header() {
    let api = Upstream::start("api");
    let shop = Upstream::start("shop");
    let canary = Upstream::start("canary");
    let wild = Upstream::start("wild");
    let toml = format!(
        r#"{EDGE}
[[route]]
match = {{ host = "api.example.com", path_prefix = "/v1/", methods = ["GET", "POST"] }}
cluster = "api"

[[route]]
match = {{ path_prefix = "/shop/", headers = {{ "x-canary" = "1" }} }}
cluster = "canary"

[[route]]
match = {{ path_prefix = "/shop/" }}
cluster = "shop"

[[route]]
match = {{ host = "*.example.org" }}
cluster = "wild"

[[route]]
match = {{ path_regex = "/items/[0-9]+" }}
respond = {{ status = 200, body = "item" }}

[[route]]
match = {{ path = "/moved" }}
respond = {{ status = 301, headers = {{ location = "https://example.com/new" }} }}

{}{}{}{}"#,
        cluster("api", &[api.addr]),
        cluster("shop", &[shop.addr]),
        cluster("canary", &[canary.addr]),
        cluster("wild", &[wild.addr]),
    );
    let gw = InProcess::start(&toml);
    let a = gw.addr();
    assert_eq!(
        get(a, "api.example.com", "/v1/users").text(),
        "api GET /v1/users"
    );
    assert_eq!(
        get(a, "API.Example.com:8080", "/v1/x").text(),
        "api GET /v1/x"
    );
    // Wrong method on the api route: nothing else matches /v1/.
    let del = exchange(
        a,
        b"DELETE /v1/users HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    );
    assert_eq!(del.status, 404);
    // Wrong host for the api route.
    assert_eq!(get(a, "other.example.com", "/v1/users").status, 404);
    // Header routing, first match wins.
    let canary_resp = exchange(
        a,
        b"GET /shop/cart HTTP/1.1\r\nHost: x\r\nX-Canary: 1\r\n\r\n",
    );
    assert_eq!(canary_resp.text(), "canary GET /shop/cart");
    assert_eq!(get(a, "x", "/shop/cart").text(), "shop GET /shop/cart");
    // Wildcard host.
    assert_eq!(get(a, "a.b.example.org", "/z").text(), "wild GET /z");
    assert_eq!(get(a, "example.org", "/z").status, 404);
    // Regex path, whole-path match.
    assert_eq!(get(a, "x", "/items/42").text(), "item");
    assert_eq!(get(a, "x", "/items/42/more").status, 404);
    // A direct redirect.
    let moved = get(a, "x", "/moved");
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("https://example.com/new"));
    assert_eq!(moved.header("content-length"), Some("0"));
}

#[test]
fn direct_responses_answer_head_and_bodies() {
    let gw = InProcess::start(&format!(
        "{EDGE}[[route]]\nrespond = {{ status = 503, body = \"down for maintenance\\n\", headers = {{ \"retry-after\" = \"120\" }} }}\n"
    ));
    let mut c = Conn::open(gw.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let resp = c.response(false);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("120"));
    assert_eq!(resp.text(), "down for maintenance\n");
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = c.response(true);
    assert_eq!(head.header("content-length"), Some("21"));
    // A request body sent to a direct response is read and dropped; the
    // connection stays in step.
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd");
    assert_eq!(c.response(false).status, 503);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).status, 503);
}

#[test]
fn curl_reaches_the_built_in_default() {
    let snapshot = ringway_config::compile_str(
        "<built-in>",
        &ringway_config::DEFAULT_CONFIG.replace("127.0.0.1:8080", "127.0.0.1:0"),
    )
    .unwrap();
    let gw = ringway::Gateway::start(
        snapshot,
        &ringway::Options {
            workers: Some(1),
            io: None,
        },
    )
    .unwrap();
    let addr = gw.listeners()[0].1;
    let (ok, body) = curl(&[&format!("http://{addr}/")]);
    assert!(ok);
    assert!(String::from_utf8_lossy(&body).contains("ringway --config FILE"));
}
