//! The PROXY protocol both ways, against a real HAProxy: HAProxy in front
//! (`send-proxy` / `send-proxy-v2`) of a `proxy_protocol = true` listener,
//! and HAProxy behind (`accept-proxy`) a `proxy_protocol = "v1" | "v2"`
//! cluster. Clients connect from other loopback addresses (127.0.0.5,
//! 127.0.0.6) so that the address a header names differs from the
//! connection's own.

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// A running `haproxy -db` on a config written for the test, killed by
/// its PID on drop.
struct Haproxy {
    child: Child,
    _dir: TempDir,
}

impl Haproxy {
    /// Starts HAProxy on `config` and waits until `listens` accepts.
    fn start(config: &str, listens: SocketAddr) -> Haproxy {
        let dir = TempDir::new();
        let path = dir.path.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .output()
            .expect("haproxy is installed (apt-get install haproxy)");
        assert!(
            check.status.success(),
            "haproxy refused its config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let haproxy = Haproxy { child, _dir: dir };
        assert!(
            wait_until(IO_TIMEOUT, || TcpStream::connect(listens).is_ok()),
            "haproxy did not listen on {listens}"
        );
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HAPROXY_DEFAULTS: &str = "global\n  maxconn 100\ndefaults\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n";

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns until
    // it hands it to the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as libc::sa_family_t;
        local.sin_addr.s_addr = u32::from(from).to_be();
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, (&raw const local).cast(), size), 0);
        let stream = TcpStream::from_raw_fd(fd);
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as libc::sa_family_t;
        remote.sin_port = to.port().to_be();
        let IpAddr::V4(ip) = to.ip() else {
            panic!("IPv4 only")
        };
        remote.sin_addr.s_addr = u32::from(ip).to_be();
        assert_eq!(libc::connect(fd, (&raw const remote).cast(), size), 0);
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }
}

/// One GET of `path` from `from` to `to`, on a connection closed after.
fn get_from(from: Ipv4Addr, to: SocketAddr, path: &str) -> Response {
    let mut stream = connect_from(from, to);
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    read_response(&mut BufReader::new(stream), false).unwrap()
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// A gateway whose `edge` listener reads the PROXY protocol (with
/// `listener_extra`), denying 127.0.0.5 on `/private/`, proxying the rest
/// to `up`.
fn reading_gateway(up: &Upstream, listener_extra: &str) -> InProcess {
    InProcess::start(&format!(
        "{EDGE}proxy_protocol = true\n{listener_extra}\n\
         [[route]]\nmatch = {{ path_prefix = \"/private/\" }}\ndeny = [\"127.0.0.5\"]\ncluster = \"app\"\n\
         [[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    ))
}

/// HAProxy in TCP mode in front of `gateway`, sending `send` (`send-proxy`
/// or `send-proxy-v2`).
fn haproxy_in_front(gateway: SocketAddr, send: &str) -> (Haproxy, SocketAddr) {
    let front = free_port();
    let config = format!(
        "{HAPROXY_DEFAULTS}  mode tcp\nfrontend fe\n  bind {front}\n  default_backend be\nbackend be\n  server gw {gateway} {send}\n"
    );
    (Haproxy::start(&config, front), front)
}

#[test]
fn behind_haproxy_the_client_is_the_one_its_header_names_v1_and_v2() {
    let up = Upstream::start("app");
    let gw = reading_gateway(&up, "");
    for send in ["send-proxy", "send-proxy-v2"] {
        let (_haproxy, front) = haproxy_in_front(gw.addr(), send);
        // The gateway's peer is HAProxy (127.0.0.1); the header names the
        // client, 127.0.0.5, which /private/ denies.
        assert_eq!(get_from(CLIENT, front, "/private/x").status, 403, "{send}");
        assert_eq!(
            get_from(OTHER_CLIENT, front, "/private/x").status,
            200,
            "{send}"
        );
        let r = get_from(CLIENT, front, "/echo-from");
        assert_eq!(r.status, 200, "{send}");
        let seen = up.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.target, "/echo-from");
        assert_eq!(last.header("x-forwarded-for"), Some("127.0.0.5"), "{send}");
    }
}

#[test]
fn a_header_from_a_peer_outside_trusted_proxies_is_refused() {
    let up = Upstream::start("app");
    // Only 127.0.0.2 may send headers; HAProxy connects from 127.0.0.1.
    let gw = reading_gateway(&up, "trusted_proxies = [\"127.0.0.2\"]");
    let (_haproxy, front) = haproxy_in_front(gw.addr(), "send-proxy-v2");
    let mut stream = connect_from(CLIENT, front);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(up.count("/"), 0);
    let refused: u64 = gw
        .gateway
        .scrape()
        .iter()
        .map(|r| r.proxy_protocol_refused)
        .sum();
    assert!(refused >= 1, "refused {refused}");
}

#[test]
fn a_connection_without_a_header_is_closed_unanswered() {
    let up = Upstream::start("app");
    let gw = reading_gateway(&up, "");
    // A plain request where the header should be.
    let mut conn = Conn::open(gw.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(conn.is_closed());
    // A header split over several writes still works, and exactly its
    // bytes are taken: the request right behind it is served.
    let mut stream = TcpStream::connect(gw.addr()).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    for part in [
        &b"PROXY TCP4 192.0"[..],
        b".2.7 10.0.0.1 51234 80\r",
        b"\nGET /split HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ] {
        stream.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = read_response(&mut BufReader::new(stream), false).unwrap();
    assert_eq!(r.status, 200);
    let seen = up.seen();
    assert_eq!(
        seen.last().unwrap().header("x-forwarded-for"),
        Some("192.0.2.7")
    );
    assert_eq!(up.count("/"), 1);
}

#[test]
fn tls_after_the_header_is_served() {
    let ca = TestCa::new();
    ca.leaf("edge", &["localhost"]);
    let up = Upstream::start("app");
    let gw = InProcess::start(&format!(
        "{EDGE}proxy_protocol = true\n{}\n[[route]]\ncluster = \"app\"\n{}",
        ca.listener_tls("edge", ""),
        cluster("app", &[up.addr])
    ));
    let (_haproxy, front) = haproxy_in_front(gw.addr(), "send-proxy-v2");
    let url = format!("https://localhost:{}/tls-through", front.port());
    let resolve = format!("localhost:{}:127.0.0.1", front.port());
    for http in ["--http1.1", "--http2"] {
        let (ok, _) = curl(&[
            http,
            "--cacert",
            &ca.path("ca.pem"),
            "--resolve",
            &resolve,
            "--interface",
            "127.0.0.5",
            "-o",
            "/dev/null",
            "--fail",
            &url,
        ]);
        assert!(ok, "{http}");
        let seen = up.seen();
        assert_eq!(
            seen.last().unwrap().header("x-forwarded-for"),
            Some("127.0.0.5"),
            "{http}"
        );
    }
}

/// HAProxy in HTTP mode accepting the PROXY protocol, in front of `up`;
/// it tells `up` what the header said in `x-proxy-src`/`x-proxy-dst`.
fn haproxy_behind(up: &Upstream) -> (Haproxy, SocketAddr) {
    let back = free_port();
    let config = format!(
        "{HAPROXY_DEFAULTS}  mode http\nfrontend fe\n  bind {back} accept-proxy\n  \
         http-request set-header x-proxy-src %[src]\n  http-request set-header x-proxy-dst %[dst]:%[dst_port]\n  \
         default_backend be\nbackend be\n  server up {}\n",
        up.addr
    );
    (Haproxy::start(&config, back), back)
}

#[test]
fn clusters_send_the_header_haproxy_accepts_v1_and_v2() {
    let up = Upstream::start("app");
    let (_haproxy, back) = haproxy_behind(&up);
    for version in ["v1", "v2"] {
        // Health checks go through HAProxy too: without a header of their
        // own it would refuse them and the endpoint would turn unhealthy.
        let gw = InProcess::start(&format!(
            "{EDGE}[[route]]\ncluster = \"app\"\n{}proxy_protocol = \"{version}\"\n\
             health = {{ path = \"/health\", interval = \"100ms\", timeout = \"500ms\", unhealthy_threshold = 1, healthy_threshold = 1 }}\n",
            cluster("app", &[back])
        ));
        let edge = gw.addr();
        assert!(wait_until(Duration::from_secs(5), || up.count("/health") >= 3));
        // Keep-alive from two clients, interleaved: each request reaches
        // HAProxy on a connection whose header names its own client.
        let mut first = BufReader::new(connect_from(CLIENT, edge));
        let mut second = BufReader::new(connect_from(OTHER_CLIENT, edge));
        for round in 0..3 {
            for (reader, client) in [(&mut first, "127.0.0.5"), (&mut second, "127.0.0.6")] {
                let path = format!("/{version}/{client}/{round}");
                reader
                    .get_mut()
                    .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
                    .unwrap();
                let r = read_response(reader, false).unwrap();
                assert_eq!(r.status, 200, "{path}");
                let seen = up.seen();
                let s = seen.iter().rev().find(|s| s.target == path).unwrap();
                assert_eq!(s.header("x-proxy-src"), Some(client), "{path}");
                assert_eq!(
                    s.header("x-proxy-dst"),
                    Some(edge.to_string().as_str()),
                    "{path}"
                );
            }
        }
        let reports = gw.gateway.scrape();
        let opened: u64 = reports.iter().map(|r| r.upstream_opened).sum();
        let reused: u64 = reports.iter().map(|r| r.upstream_reused).sum();
        // One connection per client, reused within it.
        assert_eq!(opened, 2, "{version}");
        assert_eq!(reused, 4, "{version}");
    }
}
