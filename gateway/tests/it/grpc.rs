//! gRPC through the gateway with real grpcio peers (grpc_peer.py): every
//! call shape, statuses and details, metadata both ways, and trailers,
//! which gRPC cannot do without (HTTP/2 trailers carry `grpc-status`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// A grpcio server on 127.0.0.1, killed on drop.
fn grpc_server() -> (Peer, SocketAddr) {
    let server = Peer::start("python3", &[&script("grpc_peer.py"), "serve"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
    (server, addr)
}

/// Runs every client check against `target` (plus `CA NAME` for TLS).
fn client(target: &str, tls: &[&str]) -> Value {
    let mut args = vec!["client", target];
    args.extend_from_slice(tls);
    python_json("grpc_peer.py", &args, Duration::from_secs(30))
}

/// The checks every path must pass: exact answers, so that a lost message,
/// a dropped trailer or a rewritten status shows.
fn assert_all_calls(results: &Value, via_gateway: bool) {
    assert_eq!(results["unary"], "hello grpc", "{results}");
    assert_eq!(
        results["big_unary"],
        json!({ "len": 1_048_576, "same": true }),
        "{results}"
    );

    let meta = &results["metadata"];
    assert_eq!(meta["x-client-meta"], "from-client", "{results}");
    // Binary metadata (`-bin`, base64 on the wire) arrives as sent.
    assert_eq!(meta["x-client-bin"], "0102", "{results}");
    if via_gateway {
        assert_eq!(meta["x-forwarded-for"], "127.0.0.1", "{results}");
    }

    let expected: Vec<String> = (0..25).map(|i| format!("msg-{i}")).collect();
    assert_eq!(results["server_stream"], json!(expected), "{results}");
    // 40 messages of 1..=40 bytes: 820 bytes.
    assert_eq!(results["client_stream"], "count=40 bytes=820", "{results}");
    let sent: Vec<String> = (0..10).map(|i| format!("ping-{i}")).collect();
    let got: Vec<String> = sent.iter().map(|m| format!("echo:{m}")).collect();
    assert_eq!(
        results["bidi"],
        json!({ "sent": sent, "got": got }),
        "{results}"
    );

    let fail = &results["fail"];
    assert_eq!(fail["code"], "NOT_FOUND", "{results}");
    assert_eq!(fail["details"], "nope", "{results}");
    assert_eq!(fail["trailing"]["x-trailer"], "kept", "{results}");
    assert_eq!(fail["trailing"]["x-detail-bin"], "0001feff", "{results}");

    assert_eq!(
        results["unimplemented"]["code"], "UNIMPLEMENTED",
        "{results}"
    );
}

/// The gateway config: `edge` as given, every request to the gRPC server
/// over h2c.
fn gateway(edge_extra: &str, server: SocketAddr) -> InProcess {
    InProcess::start(&format!(
        "[runtime]\ndrain_timeout = \"1s\"\n{EDGE}{edge_extra}\n[[route]]\ncluster = \"grpc\"\n\
         [cluster.grpc]\nendpoints = [\"{server}\"]\nprotocol = \"h2\"\n"
    ))
}

/// The peers themselves, without the gateway: if this fails, the fault is
/// in the test's tools, not in ringway.
#[test]
fn grpc_peers_agree_without_the_gateway() {
    let (_server, addr) = grpc_server();
    let results = client(&addr.to_string(), &[]);
    assert_all_calls(&results, false);
}

#[test]
fn grpc_calls_of_every_shape_pass_through_h2c() {
    let (_server, addr) = grpc_server();
    let gw = gateway("", addr);
    let results = client(&gw.addr().to_string(), &[]);
    assert_all_calls(&results, true);
}

#[test]
fn grpc_calls_pass_through_tls_with_alpn_h2() {
    let (_server, addr) = grpc_server();
    let ca = TestCa::new();
    ca.leaf("server", &["localhost"]);
    let gw = gateway(&ca.listener_tls("server", ""), addr);
    // By address, with the name checked against the certificate overridden.
    let target = gw.addr().to_string();
    let ca_file = ca.path("ca.pem");
    let results = client(&target, &[&ca_file, "localhost"]);
    assert_all_calls(&results, true);
}

/// Calls Endless through `target` as call `id`, cancels it after two
/// messages, and waits for the server to report how the call ended.
fn cancel_reaches_the_server(server: &Peer, target: &str, id: &str) {
    let got = python_json(
        "grpc_peer.py",
        &["cancel", target, id],
        Duration::from_secs(30),
    );
    assert_eq!(got["received"], json!(["tick-0", "tick-1"]), "{got}");
    assert_eq!(got["code"], "CANCELLED", "{got}");
    // The stream would go on for 20 s: the server must hear of the
    // cancellation well before.
    let prefix = format!("ended {id} ");
    let ended = server
        .wait_line(Duration::from_secs(5), |l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the server did not see call {id} end within 5 s"));
    assert!(ended.contains("finished=False"), "{ended}");
    assert!(ended.contains("active=False"), "{ended}");
}

#[test]
fn grpc_client_cancel_reaches_the_server() {
    let (server, addr) = grpc_server();
    // The peers alone first: a cancelled call is seen by the server.
    cancel_reaches_the_server(&server, &addr.to_string(), "direct");
    // Through the gateway: the client's RST_STREAM(CANCEL) must reach the
    // upstream stream, or the server streams on for nobody.
    let gw = gateway("", addr);
    cancel_reaches_the_server(&server, &gw.addr().to_string(), "via-gateway");
}
