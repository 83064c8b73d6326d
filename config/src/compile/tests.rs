use super::*;
use crate::{HashKey, Http2Settings, TlsVersion, UpstreamProtocol};

/// Endpoints read from a file (`discovery = { file = ... }`).
mod discovery;
mod health;

fn error_of(text: &str) -> String {
    match compile_str("test.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = r#"
[runtime]
workers = 2
io = "epoll"
drain_timeout = "3s"

[admin]
listen = "127.0.0.1:9901"

[[listener]]
name = "edge"
listen = "127.0.0.1:8080"
header_timeout = "2s"

[[route]]
match = { host = "api.example.com", path_prefix = "/v1/", methods = ["GET", "POST"] }
cluster = "api"
timeout = "5s"

[[route]]
name = "health"
match = { path = "/healthz", headers = { "x-probe" = true, "x-env" = "prod" } }
respond = { status = 204 }

[cluster.api]
balancer = "round-robin"
endpoints = ["10.0.0.1:8080", { addr = "10.0.0.2:8080", weight = 3 }]
connect_timeout = "250ms"
"#;

#[test]
fn a_complete_file_compiles() {
    let s = compile_str("test.toml", GOOD).unwrap();
    assert_eq!(s.runtime.workers, Workers::Count(2));
    assert_eq!(s.runtime.io, IoDriver::Epoll);
    assert_eq!(s.runtime.drain_timeout, Duration::from_secs(3));
    assert_eq!(s.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(s.listeners[0].header_timeout, Duration::from_secs(2));
    assert_eq!(s.listeners[0].idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(s.routes.len(), 2);
    assert_eq!(s.routes[0].action, Action::Proxy(ClusterId(0)));
    assert_eq!(s.routes[0].timeout, Duration::from_secs(5));
    assert_eq!(&*s.routes[1].name, "health");
    let c = &s.clusters[0];
    assert_eq!(c.endpoints[1].weight, 3);
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert!(s.summary().contains("route route-0 -> cluster api"));
}

#[test]
fn the_built_in_default_compiles_and_answers() {
    let s = compile_str("<built-in>", DEFAULT_CONFIG).unwrap();
    assert_eq!(s.listeners[0].addr, "127.0.0.1:8080".parse().unwrap());
    match &s.routes[0].action {
        Action::Respond(d) => {
            assert_eq!(d.status, 200);
            assert!(String::from_utf8_lossy(&d.body).contains("ringway --config"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_keys_name_their_place() {
    let e = error_of("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nlisen = 1\n");
    assert!(e.starts_with("test.toml:4:1:"), "{e}");
    assert!(e.contains("lisen"), "{e}");
}

#[test]
fn syntax_errors_name_their_place() {
    let e = error_of("[runtime]\nworkers = \n");
    assert!(e.starts_with("test.toml:2:"), "{e}");
}

#[test]
fn missing_cluster_points_at_the_name() {
    let e = error_of("[[route]]\ncluster = \"nope\"\n");
    assert!(e.starts_with("test.toml:2:11:"), "{e}");
    assert!(e.contains("no cluster named \"nope\""), "{e}");
}

#[test]
fn duplicate_names_are_refused() {
    let e = error_of(
        "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:2\"\n",
    );
    assert!(e.starts_with("test.toml:5:8:"), "{e}");
    assert!(e.contains("duplicate listener name"), "{e}");
    // TOML itself refuses a cluster defined twice.
    let e = error_of(
        "[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\n[cluster.a]\nendpoints = [\"127.0.0.1:2\"]\n",
    );
    assert!(e.starts_with("test.toml:3:"), "{e}");
}

#[test]
fn bad_addresses_are_refused() {
    let e = error_of("[cluster.a]\nendpoints = [\"127.0.0.1\"]\n");
    assert!(e.starts_with("test.toml:2:14:"), "{e}");
    assert!(e.contains("expected an address"), "{e}");
    let e = error_of("[[listener]]\nname = \"a\"\nlisten = \"300.0.0.1:80\"\n");
    assert!(e.starts_with("test.toml:3:10:"), "{e}");
}

#[test]
fn bad_regexes_are_refused_at_their_route() {
    let e = error_of(
        "[[route]]\nrespond = { status = 200 }\n\n[[route]]\nmatch = { path_regex = \"/(a\" }\nrespond = { status = 200 }\n",
    );
    assert!(e.starts_with("test.toml:5:24:"), "{e}");
    assert!(e.contains("invalid path_regex"), "{e}");
}

#[test]
fn route_needs_exactly_one_action() {
    let e = error_of("[[route]]\nmatch = { path = \"/\" }\n");
    assert!(e.contains("exactly one of"), "{e}");
    let e = error_of(
        "[[route]]\ncluster = \"a\"\nrespond = { status = 200 }\n[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    assert!(e.contains("exactly one of"), "{e}");
}

#[test]
fn values_out_of_range_are_refused() {
    assert!(error_of("[runtime]\nworkers = 0\n").contains("1..=1024"));
    assert!(error_of("[runtime]\nworkers = \"many\"\n").contains("\"auto\""));
    assert!(error_of("[runtime]\nio = \"kqueue\"\n").contains("\"epoll\""));
    assert!(error_of("[[route]]\nrespond = { status = 99 }\n").contains("200..=599"));
    assert!(
        error_of("[[route]]\ntimeout = \"5\"\nrespond = { status = 200 }\n").contains("duration")
    );
    assert!(
        error_of("[[route]]\nmatch = { path = \"x\" }\nrespond = { status = 200 }\n")
            .contains("`/`")
    );
    assert!(
        error_of("[[route]]\nmatch = { path = \"/a\", path_prefix = \"/b\" }\nrespond = { status = 200 }\n")
            .contains("at most one")
    );
    assert!(
        error_of("[[route]]\nmatch = { host = \"a.*.com\" }\nrespond = { status = 200 }\n")
            .contains("`*`")
    );
    assert!(
        error_of("[cluster.a]\nendpoints = [{ addr = \"127.0.0.1:1\", weight = 0 }]\n")
            .contains("weight")
    );
    assert!(error_of("[cluster.a]\nendpoints = []\n").contains("at least one endpoint"));
    assert!(
        error_of("[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\nbalancer = \"magic\"\n")
            .contains("unknown balancer")
    );
    assert!(
        error_of(
            "[[route]]\nrespond = { status = 200, headers = { \"content-length\" = \"1\" } }\n"
        )
        .contains("framing")
    );
}

#[test]
fn unreadable_file_says_so() {
    let e = load_file(Path::new("/nonexistent/ringway.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/ringway.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn splits_retries_health_and_outlier_compile() {
    let s = compile_str(
        "t.toml",
        r#"
[[route]]
split = [{ cluster = "a", weight = 90 }, { cluster = "b", weight = 10 }]
retry = { attempts = 3, on = ["reset", "gateway-error", "429"], per_try_timeout = "200ms", budget = 0.5, min_retries = 1 }

[cluster.a]
endpoints = ["127.0.0.1:1"]
health = { path = "/h", interval = "1s", unhealthy_threshold = 3 }
outlier = { consecutive_failures = 2, base_ejection_time = "1s", max_ejection_percent = 100 }

[cluster.b]
endpoints = ["127.0.0.1:2"]
"#,
    );
    // 429 is not a 5xx: refused, pointing at it.
    let e = s.unwrap_err().to_string();
    assert!(e.starts_with("t.toml:4:57:"), "{e}");

    let s = compile_str(
        "t.toml",
        "[[route]]\nsplit = [{ cluster = \"a\", weight = 9 }]\nretry = { attempts = 3, on = [\"reset\", \"503\"], per_try_timeout = \"200ms\" }\n[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\nhealth = { path = \"/h\" }\noutlier = { consecutive_failures = 2 }\n",
    )
    .unwrap();
    match &s.routes[0].action {
        Action::Split(arms) => assert_eq!(arms[0].weight, 9),
        other => panic!("{other:?}"),
    }
    let retry = &s.routes[0].retry;
    assert_eq!(retry.attempts, 3);
    assert!(retry.on_reset && !retry.on_connect_failure);
    assert_eq!(retry.on_statuses, vec![503]);
    assert_eq!(retry.per_try_timeout, Some(Duration::from_millis(200)));
    let c = &s.clusters[0];
    assert_eq!(
        c.health.as_ref().unwrap().kind,
        crate::HealthKind::Http {
            path: "/h".to_owned()
        }
    );
    assert_eq!(c.outlier.consecutive_failures, 2);
    assert_eq!(
        c.outlier.panic_threshold,
        Outlier::default().panic_threshold
    );
}

#[test]
fn bad_traffic_settings_name_their_place() {
    assert!(error_of("[[route]]\nsplit = []\n").contains("at least one cluster"));
    assert!(
        error_of("[[route]]\nsplit = [{ cluster = \"x\", weight = 1 }]\n")
            .contains("no cluster named \"x\"")
    );
    assert!(
        error_of("[[route]]\nrespond = { status = 200 }\nretry = { attempts = 0 }\n")
            .contains("attempts in 1..=10")
    );
    assert!(
        error_of("[[route]]\nrespond = { status = 200 }\nretry = { budget = 2.0 }\n")
            .contains("budget")
    );
    assert!(
        error_of("[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\nhealth = { path = \"h\" }\n")
            .contains("`/`")
    );
    assert!(
        error_of(
            "[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\noutlier = { max_ejection_percent = 101 }\n"
        )
        .contains("percentage")
    );
}

#[test]
fn balancers_and_hash_keys_compile_or_say_why_not() {
    let ok = |b: &str| {
        let text = format!("[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\nbalancer = {b}\n");
        compile_str("t.toml", &text)
            .map(|s| (s.clusters[0].balancer, s.clusters[0].hash_key.clone()))
    };
    assert_eq!(ok("\"random\"").unwrap().0, BalancerKind::Random);
    assert!(matches!(
        ok("{ kind = \"least-request\", active_request_bias = 0.5 }").unwrap().0,
        BalancerKind::LeastRequest { active_request_bias } if active_request_bias == 0.5
    ));
    let (kind, key) =
        ok("{ kind = \"maglev\", key = \"cookie:sid\", bounded_load = 1.25 }").unwrap();
    assert!(
        matches!(kind, BalancerKind::Maglev { table_size: 65537, bounded_load: Some(b) } if b == 1.25)
    );
    assert_eq!(key, Some(HashKey::Cookie("sid".into())));
    let (_, key) =
        ok("{ kind = \"ring-hash\", key = \"header:X-User\", min_ring_size = 2048 }").unwrap();
    assert_eq!(key, Some(HashKey::Header("x-user".into())));

    let err = |b: &str| ok(b).unwrap_err().to_string();
    assert!(err("{ kind = \"maglev\", table_size = 1000 }").contains("invalid balancer"));
    assert!(err("{ kind = \"maglev\", key = \"body\" }").contains("unknown hash key"));
    assert!(err("{ kind = \"random\", key = \"path\" }").contains("`key` applies to"));
    assert!(err("{ kind = \"round-robin\", bounded_load = 1.5 }").contains("bounded_load"));
    assert!(err("{ kind = \"maglev\", colour = 1 }").contains("colour"));
    assert!(err("\"fastest\"").starts_with("t.toml:3:12:"));
}

#[test]
fn route_policy_compiles_or_says_why_not() {
    let s = compile_str(
        "t.toml",
        r#"
[[route]]
match = { path_prefix = "/a/" }
cluster = "c"
rewrite = { path_prefix = "/b/", host = "in" }
request_headers = { add = { "X-A" = "1" }, remove = ["x-b"] }
max_body = "64KiB"
rate_limit = { requests = 10, per = "2s", key = "header:x-api-key" }
fault = { abort = { percent = 2.5, status = 503 } }
[cluster.c]
endpoints = ["127.0.0.1:1"]
limits = { max_requests = 7 }
"#,
    )
    .unwrap();
    let p = &s.routes[0].policy;
    assert_eq!(p.rewrite_prefix, Some(("/a/".into(), "/b/".into())));
    assert_eq!(
        p.request_headers.add,
        vec![("x-a".to_owned(), "1".to_owned())]
    );
    assert_eq!(p.max_body, Some(64 * 1024));
    let rl = p.rate_limit.as_ref().unwrap();
    assert_eq!(rl.per_second, 5.0);
    assert_eq!(rl.key, Some(HashKey::Header("x-api-key".into())));
    assert_eq!(p.fault_abort, Some((0.025, 503)));
    assert_eq!(s.clusters[0].limits.max_requests, 7);

    let route = |extra: &str| format!("[[route]]\nrespond = {{ status = 200 }}\n{extra}\n");
    assert!(
        error_of(&route("rewrite = { path_prefix = \"/x/\" }"))
            .contains("needs the route to match")
    );
    assert!(error_of(&route("max_body = \"12 parsecs\"")).contains("size"));
    assert!(error_of(&route("rate_limit = { requests = 0 }")).contains("greater than zero"));
    assert!(
        error_of(&route("rate_limit = { requests = 1, key = \"path\" }")).contains("client-ip")
    );
    assert!(
        error_of(&route(
            "fault = { abort = { percent = 120, status = 503 } }"
        ))
        .contains("percentage")
    );
    assert!(
        error_of(&route("request_headers = { set = { host = \"x\" } }"))
            .contains("managed by ringway")
    );
    assert!(
        error_of("[[route]]\nredirect = { to = \"https://x\", status = 200 }\n")
            .contains("redirect status")
    );
}

#[test]
fn access_log_and_tracing_compile_or_say_why_not() {
    let s = compile_str(
        "t.toml",
        "[access_log]\npath = \"/var/log/ringway/access.log\"\nformat = \"combined\"\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_rate = 0.25\n",
    )
    .unwrap();
    let log = s.access_log.unwrap();
    assert_eq!(log.format, crate::LogFormat::Combined);
    assert_eq!(
        log.path.unwrap().to_str(),
        Some("/var/log/ringway/access.log")
    );
    let otlp = s.tracing.otlp.unwrap();
    assert_eq!(otlp.path, "/v1/traces");
    assert_eq!(otlp.addr, "127.0.0.1:4318".parse().unwrap());
    assert_eq!(s.tracing.sample_rate, 0.25);
    assert!(compile_str("t.toml", "").unwrap().access_log.is_none());

    assert!(
        error_of("[access_log]\npath = \"stdout\"\nformat = \"xml\"\n")
            .contains("unknown log format")
    );
    assert!(error_of("[tracing]\notlp_endpoint = \"https://x:4318\"\n").contains("OTLP/HTTP URL"));
    assert!(error_of("[tracing]\nsample_rate = 2.0\n").contains("sample rate"));
}

/// A test PKI in a fresh folder under the system's temporary one: `ca.pem`
/// and, per leaf, `NAME.pem` and `NAME.key`; removed on drop.
struct Pki {
    dir: std::path::PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringway-config-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringway config test CA");
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        };
        pki.leaf("server", "localhost");
        pki.leaf("client", "client.test");
        pki
    }

    fn leaf(&self, name: &str, dns: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![dns.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A listener `edge` with this PKI's server certificate and `extra`
    /// keys in its `tls` table, then `more` lines.
    fn listener(&self, extra: &str, more: &str) -> String {
        format!(
            "[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = {:?}, key = {:?}{extra} }}\n{more}",
            self.path("server.pem"),
            self.path("server.key"),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn listeners_offer_h2_first_by_default_and_accept_it_in_alpn() {
    let pki = Pki::new();
    let alpn = |extra: &str| {
        compile_str("t.toml", &pki.listener(extra, ""))
            .map(|s| s.listeners[0].tls.as_ref().unwrap().alpn.clone())
    };
    assert_eq!(
        alpn("").unwrap(),
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(
        alpn(", alpn = [\"http/1.1\", \"h2\", \"http/1.0\"]").unwrap(),
        vec![b"http/1.1".to_vec(), b"h2".to_vec(), b"http/1.0".to_vec()]
    );
    let e = alpn(", alpn = [\"h3\"]").unwrap_err().to_string();
    assert!(
        e.contains("expected \"h2\", \"http/1.1\" or \"http/1.0\""),
        "{e}"
    );
}

#[test]
fn http2_settings_default_and_say_where_they_are_wrong() {
    let listener =
        |table: &str| format!("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n{table}");
    let s = compile_str("t.toml", &listener("")).unwrap();
    let d = s.listeners[0].http2;
    assert_eq!(d, Http2Settings::default());
    assert_eq!(
        (d.max_concurrent_streams, d.initial_stream_window),
        (128, 1 << 20)
    );
    assert_eq!(d.initial_connection_window, 4 << 20);
    assert_eq!(
        (d.max_pending_reset_streams, d.max_local_error_resets, d.h2c),
        (20, 1024, true)
    );

    let s = compile_str(
        "t.toml",
        &listener(
            "[listener.http2]\nmax_concurrent_streams = 10\ninitial_stream_window = 65535\n\
             initial_connection_window = \"16MiB\"\nmax_pending_reset_streams = 5\n\
             max_local_error_resets = 50\nh2c = false\n",
        ),
    )
    .unwrap();
    assert_eq!(
        s.listeners[0].http2,
        Http2Settings {
            max_concurrent_streams: 10,
            initial_stream_window: 65535,
            initial_connection_window: 16 << 20,
            max_pending_reset_streams: 5,
            max_local_error_resets: 50,
            h2c: false,
        }
    );

    let e = error_of(&listener(
        "[listener.http2]\ninitial_stream_window = \"2GiB\"\n",
    ));
    assert!(
        e.starts_with("test.toml:5:25: expected a window size"),
        "{e}"
    );
    let e = error_of(&listener("http2 = { max_concurrent_streams = 0 }\n"));
    assert!(e.starts_with("test.toml:4:36:"), "{e}");
    assert!(e.contains("1..=10000"), "{e}");
    let e = error_of(&listener("http2 = { window = 1 }\n"));
    assert!(
        e.starts_with("test.toml:4:11:") && e.contains("window"),
        "{e}"
    );
}

#[test]
fn cluster_protocols_parse_or_list_the_choices() {
    let cluster =
        |extra: &str| format!("[cluster.a]\nendpoints = [\"127.0.0.1:1\", \"[::1]:2\"]\n{extra}");
    let s = compile_str("t.toml", &cluster("")).unwrap();
    let c = &s.clusters[0];
    assert_eq!(c.proxy_protocol, None);
    assert_eq!(c.protocol, UpstreamProtocol::Http1);
    assert_eq!(c.max_streams_per_connection, 100);
    assert!(c.tls.is_none());
    assert_eq!(c.endpoints[0].host, "127.0.0.1");
    assert_eq!(c.endpoints[1].host, "::1");
    for (text, protocol) in [
        ("http1", UpstreamProtocol::Http1),
        ("http/1.1", UpstreamProtocol::Http1),
        ("h2", UpstreamProtocol::Http2),
        ("http2", UpstreamProtocol::Http2),
    ] {
        let s = compile_str(
            "t.toml",
            &cluster(&format!(
                "protocol = {text:?}\nmax_streams_per_connection = 7\n"
            )),
        )
        .unwrap();
        assert_eq!(s.clusters[0].protocol, protocol, "{text}");
        assert_eq!(s.clusters[0].max_streams_per_connection, 7);
    }
    let e = error_of(&cluster("protocol = \"spdy\"\n"));
    assert!(
        e.starts_with("test.toml:3:12: unknown protocol \"spdy\""),
        "{e}"
    );
    assert!(e.contains("\"http1\"") && e.contains("\"h2\""), "{e}");
    let e = error_of(&cluster("max_streams_per_connection = 0\n"));
    assert!(
        e.starts_with("test.toml:3:30:") && e.contains("1..=10000"),
        "{e}"
    );
}

#[test]
fn cluster_tls_reads_its_ca_and_client_certificate() {
    let pki = Pki::new();
    let text = format!(
        "[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\nprotocol = \"h2\"\n[cluster.a.tls]\nca = {:?}\nserver_name = \"api.internal\"\nclient_cert = {:?}\nclient_key = {:?}\nmin_version = \"1.3\"\n",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let s = compile_str("t.toml", &text).unwrap();
    let tls = s.clusters[0].tls.as_ref().unwrap();
    assert_eq!(tls.roots.len(), 1);
    assert_eq!(tls.server_name.as_deref(), Some("api.internal"));
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.alpn, vec![b"h2".to_vec()]);
    let identity = tls.client_identity.as_ref().unwrap();
    assert_eq!(identity.cert.len(), 1);
    // Compiled twice from the same files, the clusters compare equal (a
    // reload that changes nothing keeps them).
    assert_eq!(compile_str("t.toml", &text).unwrap().clusters, s.clusters);

    // HTTP/1.1 clusters offer http/1.1 only.
    let text = format!(
        "[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\ntls = {{ ca = {:?} }}\n",
        pki.path("ca.pem")
    );
    let tls = compile_str("t.toml", &text).unwrap().clusters[0]
        .tls
        .clone();
    assert_eq!(tls.unwrap().alpn, vec![b"http/1.1".to_vec()]);
}

#[test]
fn cluster_tls_errors_name_their_place() {
    let pki = Pki::new();
    let cluster = |tls: String| format!("[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\n{tls}\n");
    let e = error_of(&cluster(format!(
        "tls = {{ client_cert = {:?} }}",
        pki.path("client.pem")
    )));
    assert!(
        e.starts_with("test.toml:3:23: `client_cert` needs its `client_key`"),
        "{e}"
    );
    let e = error_of(&cluster(format!(
        "tls = {{ client_key = {:?} }}",
        pki.path("client.key")
    )));
    assert!(
        e.starts_with("test.toml:3:22: `client_key` needs its `client_cert`"),
        "{e}"
    );
    let e = error_of(&cluster(format!(
        "tls = {{ ca = {:?}, client_cert = {:?}, client_key = {:?} }}",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("server.key"),
    )));
    assert!(e.contains("does not match the certificate"), "{e}");
    let e = error_of(&cluster(format!(
        "tls = {{ ca = {:?} }}",
        pki.path("client.key")
    )));
    assert!(
        e.starts_with("test.toml:3:14:") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = error_of(&cluster(format!(
        "tls = {{ ca = {:?}, server_name = \"not a name\" }}",
        pki.path("ca.pem")
    )));
    assert!(e.contains("expected a DNS name or an IP address"), "{e}");
    let e = error_of(&cluster(format!(
        "tls = {{ ca = {:?}, min_version = \"1.1\" }}",
        pki.path("ca.pem")
    )));
    assert!(e.contains("expected \"1.2\" or \"1.3\""), "{e}");
    let e = error_of(&cluster("tls = { insecure_skip_verify = true }".to_owned()));
    assert!(e.contains("insecure_skip_verify"), "{e}");
}

#[test]
fn cluster_tls_without_ca_uses_the_system_roots_or_says_there_are_none() {
    match compile_str(
        "t.toml",
        "[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\n[cluster.a.tls]\n",
    ) {
        Ok(s) => assert!(!s.clusters[0].tls.as_ref().unwrap().roots.is_empty()),
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with("t.toml:3:1:") && e.contains("`ca`"), "{e}");
        }
    }
}

#[test]
fn edge_keys_compile_or_say_where_they_are_wrong() {
    let listener = |extra: &str| {
        format!(
            "[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n{extra}\n[[route]]\nrespond = {{ status = 200 }}\n"
        )
    };
    let s = compile_str(
        "t.toml",
        &listener("escaped_slashes = \"decode\"\nmerge_slashes = false\nunderscores_in_headers = \"reject\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]"),
    )
    .unwrap();
    let l = &s.listeners[0];
    assert_eq!(
        l.paths.escaped_slashes,
        ringway_codec::path::EscapedSlashes::Decode
    );
    assert!(!l.paths.merge_slashes);
    assert_eq!(l.underscores, crate::Underscores::Reject);
    assert_eq!(l.trusted_proxies.len(), 2);
    let defaults = compile_str("t.toml", &listener("")).unwrap();
    assert_eq!(
        defaults.listeners[0].paths,
        ringway_codec::path::PathRules::default()
    );
    assert_eq!(defaults.listeners[0].underscores, crate::Underscores::Drop);
    assert!(!defaults.listeners[0].proxy_protocol);
    let proxied = compile_str("t.toml", &listener("proxy_protocol = true")).unwrap();
    assert!(proxied.listeners[0].proxy_protocol);

    let err = error_of(&listener("escaped_slashes = \"unescape\""));
    assert!(
        err.contains("test.toml:4:19: unknown escaped_slashes \"unescape\""),
        "{err}"
    );
    let err = error_of(&listener("underscores_in_headers = \"ignore\""));
    assert!(
        err.contains("expected one of \"drop\", \"keep\", \"reject\""),
        "{err}"
    );
    let err = error_of(&listener("trusted_proxies = [\"10.0.0.0/40\"]"));
    assert!(
        err.contains("test.toml:4:20:") && err.contains("0..=32"),
        "{err}"
    );
    let route = "[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n[[route]]\ndeny = [\"nope\"]\nrespond = { status = 200 }\n";
    assert!(
        error_of(route).contains("test.toml:5:9:"),
        "{}",
        error_of(route)
    );
}

#[test]
fn an_admin_token_file_is_read_relative_to_the_config_or_refused_with_its_place() {
    let dir = std::env::temp_dir().join(format!("ringway-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.token"), "0123456789abcdef-long\nignored\n").unwrap();
    std::fs::write(dir.join("short.token"), "short\n").unwrap();
    let config = |file: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{file}\"\n[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n[[route]]\nrespond = {{ status = 200 }}\n"
        )
    };
    let path = dir.join("ringway.toml");
    let s = compile_file_text(&path, &config("good.token")).unwrap();
    assert_eq!(s.admin_token.as_deref(), Some("0123456789abcdef-long"));
    let err = compile_file_text(&path, &config("short.token"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ringway.toml:3:14:") && err.contains("at least 16"),
        "{err}"
    );
    let err = compile_file_text(&path, &config("missing.token"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cluster_proxy_protocol_names_a_version_or_lists_them() {
    let cluster = |extra: &str| format!("[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\n{extra}");
    let version = |v: &str| {
        compile_str("t.toml", &cluster(&format!("proxy_protocol = \"{v}\"")))
            .map(|s| s.clusters[0].proxy_protocol)
    };
    assert_eq!(version("v1").unwrap(), Some(crate::ProxyProtocol::V1));
    assert_eq!(version("v2").unwrap(), Some(crate::ProxyProtocol::V2));
    let err = error_of(&cluster("proxy_protocol = \"v3\""));
    assert!(
        err.contains(
            "test.toml:3:18: unknown proxy_protocol \"v3\"; expected one of \"v1\", \"v2\""
        ),
        "{err}"
    );
}
