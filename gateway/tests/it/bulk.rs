//! Issue 18: big bodies byte for byte over every way they move. Between
//! two plain sockets the gateway splices them (length-delimited, chunked
//! and close-delimited responses, request bodies), and
//! `ringway_spliced_bytes_total` shows that it did; over TLS, over h2, and
//! with `RINGWAY_SPLICE=0` it copies them through growing buffers. A
//! reader that stops holds the gateway's memory bounded, and a transfer
//! cut short in either direction arrives cut short, never as complete.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";
const MIB: u64 = 1024 * 1024;
/// `RINGWAY_SPLICE=0`: every body copies.
const NO_SPLICE: &[(&str, &str)] = &[("RINGWAY_SPLICE", "0")];

/// The built gateway, one worker, every request to `upstream`.
fn gateway(upstream: SocketAddr, env: &[(&str, &str)]) -> Binary {
    let toml = format!(
        "{ADMIN}{EDGE}[[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[upstream])
    );
    Binary::start_with_env(&toml, env, &["--workers", "1"])
}

fn spliced(gw: &Binary) -> u64 {
    gw.metric("ringway_spliced_bytes_total")
}

/// GETs `url` with curl (`args` first) and checks that the body is the
/// pattern's first `n` bytes.
fn download_matches(args: &[&str], url: &str, n: u64) {
    let mut all = args.to_vec();
    all.push(url);
    let (ok, body) = curl(&all);
    assert!(ok, "curl {url} failed");
    assert_eq!(body.len() as u64, n, "{url}: length");
    let mut want = vec![0u8; body.len()];
    Pattern::new().fill(0, &mut want);
    let first = body.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first, None, "{url}: the bytes differ from this offset");
}

/// POSTs the pattern's first `n` bytes with curl (`args` first), chunked
/// if asked, to the upstream's `/verify/n`, which checks every byte.
fn upload_verified(args: &[&str], base: &str, n: u64, chunked: bool) {
    let dir = TempDir::new();
    let file = dir.path.join("body");
    let mut data = vec![0u8; n as usize];
    Pattern::new().fill(0, &mut data);
    std::fs::write(&file, &data).unwrap();
    let at = format!("@{}", file.display());
    let url = format!("{base}/verify/{n}");
    let mut all = args.to_vec();
    all.extend(["--data-binary", &at, "-H", "Expect:"]);
    if chunked {
        all.extend(["-H", "Transfer-Encoding: chunked"]);
    }
    all.push(&url);
    let (ok, body) = curl(&all);
    assert!(ok, "upload to {url} failed");
    assert_eq!(String::from_utf8_lossy(&body), format!("ok {n}"));
}

/// An upstream that dies mid-response reaches the client as a response
/// cut short: the bytes it did send, then a close, never a whole body.
fn upstream_cut_short_is_seen_cut_short(gw: &Binary) {
    let mut c = TcpStream::connect(gw.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (n, cut) = (32 * MIB, 8 * MIB + 5);
    c.write_all(format!("GET /pattern/{n}/cut/{cut} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
    let mut r = BufReader::new(c);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(r.read_line(&mut head).unwrap() > 0, "closed in the head");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {n}")), "{head}");
    let mut body = Vec::new();
    // The connection ends (closed, or reset) before the length is met.
    let _ = r.read_to_end(&mut body);
    assert_eq!(body.len() as u64, cut, "exactly what the upstream sent");
    assert!(Pattern::new().matches(0, &body, &mut Vec::new()));
}

/// A client that dies mid-upload leaves no request behind: the upstream
/// never sees a whole body, and its connection is closed, not pooled.
fn client_cut_short_is_not_a_request(env: &[(&str, &str)]) {
    // A gateway and upstream of its own: no pooled connection besides
    // the one that carries the cut upload.
    let up = Upstream::start("app");
    let gw = gateway(up.addr, env);
    let n = 32 * MIB;
    let mut c = TcpStream::connect(gw.addr).unwrap();
    c.write_all(
        format!("POST /verify/{n} HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut piece = vec![0u8; MIB as usize];
    for i in 0..8 {
        Pattern::new().fill(i * MIB, &mut piece);
        c.write_all(&piece).unwrap();
    }
    drop(c);
    assert!(
        wait_until(Duration::from_secs(10), || up.open() == 0),
        "the upstream connection of a cut upload was not closed"
    );
    assert_eq!(up.count("/verify"), 0, "no whole request reached it");
    // And the gateway serves on.
    assert_eq!(get(gw.addr, "a", "/after").text(), "app GET /after");
}

/// A client that leaves mid-download takes the upstream connection with
/// it (closed, not pooled half-read), and the gateway serves on.
fn client_gone_mid_download_closes_the_upstream(env: &[(&str, &str)]) {
    let up = Upstream::start("app");
    let gw = gateway(up.addr, env);
    let mut c = TcpStream::connect(gw.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(format!("GET /pattern/{} HTTP/1.1\r\nHost: a\r\n\r\n", 256 * MIB).as_bytes())
        .unwrap();
    let mut some = vec![0u8; MIB as usize];
    c.read_exact(&mut some).unwrap();
    assert!(some.starts_with(b"HTTP/1.1 200"));
    drop(c);
    assert!(
        wait_until(Duration::from_secs(10), || up.open() == 0),
        "the upstream connection of an abandoned download was not closed"
    );
    if env.is_empty() {
        assert!(spliced(&gw) > 0, "the abandoned download was being spliced");
    }
    assert_eq!(get(gw.addr, "a", "/after").text(), "app GET /after");
}

#[test]
fn plain_bodies_are_spliced_and_arrive_byte_exact() {
    let up = Upstream::start("app");
    let gw = gateway(up.addr, &[]);
    let base = format!("http://{}", gw.addr);
    let before = spliced(&gw);
    download_matches(
        &[],
        &format!("{base}/pattern/{}", 64 * MIB + 7),
        64 * MIB + 7,
    );
    let after_length = spliced(&gw);
    assert!(
        after_length - before > 60 * MIB,
        "a length-delimited body was spliced: {} bytes",
        after_length - before
    );
    // Chunked: chunk by chunk, the framing read between the chunks.
    download_matches(
        &[],
        &format!("{base}/stream/{}", 48 * MIB + 3),
        48 * MIB + 3,
    );
    let after_chunked = spliced(&gw);
    assert!(
        after_chunked - after_length > 40 * MIB,
        "a chunked body was spliced: {} bytes",
        after_chunked - after_length
    );
    // Close-delimited: as is to an HTTP/1.0 client, and re-chunked (a
    // chunk per pipe load) to an HTTP/1.1 one.
    let close_url = format!("{base}/pattern-close/{}", 16 * MIB);
    download_matches(&["--http1.0"], &close_url, 16 * MIB);
    let after_close = spliced(&gw);
    assert!(after_close - after_chunked > 15 * MIB);
    download_matches(&[], &close_url, 16 * MIB);
    assert!(
        spliced(&gw) - after_close >= 16 * MIB,
        "a close-delimited body to an HTTP/1.1 client was spliced"
    );
    let rechunked = exchange(
        gw.addr,
        format!("GET /pattern-close/{} HTTP/1.1\r\nHost: a\r\n\r\n", 3 * MIB).as_bytes(),
    );
    assert_eq!(rechunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(rechunked.body.len() as u64, 3 * MIB);
    assert!(Pattern::new().matches(0, &rechunked.body, &mut Vec::new()));
    // Uploads, length-delimited and chunked.
    let before_up = spliced(&gw);
    upload_verified(&[], &base, 64 * MIB + 1, false);
    assert!(spliced(&gw) - before_up > 60 * MIB, "an upload was spliced");
    upload_verified(&[], &base, 24 * MIB, true);
    // The connections stay in step after spliced bodies: a client's next
    // request, over a pooled upstream connection, gets its own answer.
    let mut c = Conn::open(gw.addr);
    c.send(format!("GET /pattern/{} HTTP/1.1\r\nHost: a\r\n\r\n", 4 * MIB).as_bytes());
    let resp = c.response(false);
    assert_eq!(resp.body.len() as u64, 4 * MIB);
    assert!(Pattern::new().matches(0, &resp.body, &mut Vec::new()));
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).text(), "app GET /next");
    upstream_cut_short_is_seen_cut_short(&gw);
    client_cut_short_is_not_a_request(&[]);
    client_gone_mid_download_closes_the_upstream(&[]);
}

/// The access log's `bytes_out` is what reached the client, head and
/// framing included, for a close-delimited body re-chunked (spliced, or
/// copied with `env`).
fn bytes_out_is_what_the_client_got(env: &[(&str, &str)]) {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let log = dir.path.join("access.log");
    let toml = format!(
        "{ADMIN}[access_log]\npath = \"{}\"\n{EDGE}[[route]]\ncluster = \"app\"\n{}",
        log.display(),
        cluster("app", &[up.addr])
    );
    let gw = Binary::start_with_env(&toml, env, &["--workers", "1"]);
    let n = 3 * MIB;
    let mut c = TcpStream::connect(gw.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(format!("GET /pattern-close/{n} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
    // Everything up to the last chunk, as it came off the socket.
    let mut wire = Vec::new();
    let mut piece = vec![0u8; 64 * 1024];
    while !wire.ends_with(b"\r\n0\r\n\r\n") {
        let got = c.read(&mut piece).unwrap();
        assert!(got > 0, "closed before the last chunk");
        wire.extend_from_slice(&piece[..got]);
    }
    assert!(wire.len() as u64 > n);
    assert!(
        wait_until(Duration::from_secs(5), || log_lines(&log).len() == 1),
        "no log line"
    );
    assert_eq!(log_lines(&log)[0]["bytes_out"], wire.len() as u64);
}

#[test]
fn bytes_out_counts_a_rechunked_body_as_sent() {
    bytes_out_is_what_the_client_got(&[]);
    bytes_out_is_what_the_client_got(NO_SPLICE);
}

#[test]
fn with_splice_off_bodies_are_copied_byte_exact() {
    let up = Upstream::start("app");
    let gw = gateway(up.addr, NO_SPLICE);
    let base = format!("http://{}", gw.addr);
    download_matches(
        &[],
        &format!("{base}/pattern/{}", 48 * MIB + 7),
        48 * MIB + 7,
    );
    download_matches(
        &[],
        &format!("{base}/stream/{}", 24 * MIB + 3),
        24 * MIB + 3,
    );
    download_matches(&[], &format!("{base}/pattern-close/{}", 8 * MIB), 8 * MIB);
    upload_verified(&[], &base, 48 * MIB + 1, false);
    upload_verified(&[], &base, 16 * MIB, true);
    upstream_cut_short_is_seen_cut_short(&gw);
    client_cut_short_is_not_a_request(NO_SPLICE);
    client_gone_mid_download_closes_the_upstream(NO_SPLICE);
    assert_eq!(spliced(&gw), 0, "nothing spliced with RINGWAY_SPLICE=0");
}

#[test]
fn tls_and_h2_bodies_are_copied_byte_exact_both_ways() {
    let up = Upstream::start("app");
    let ca = TestCa::new();
    ca.leaf("edge", &["localhost"]);
    let toml = format!(
        "{ADMIN}{EDGE}{}\n[[route]]\ncluster = \"app\"\n{}",
        ca.listener_tls("edge", ", alpn = [\"h2\", \"http/1.1\"]"),
        cluster("app", &[up.addr])
    );
    let gw = Binary::start(&toml, &["--workers", "1"]);
    let base = format!("https://localhost:{}", gw.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.addr.port());
    let cacert = ca.path("ca.pem");
    for version in ["--http1.1", "--http2"] {
        let args = ["--cacert", &cacert, "--resolve", &resolve, version];
        download_matches(
            &args,
            &format!("{base}/pattern/{}", 32 * MIB + 7),
            32 * MIB + 7,
        );
        download_matches(
            &args,
            &format!("{base}/stream/{}", 16 * MIB + 3),
            16 * MIB + 3,
        );
        upload_verified(&args, &base, 32 * MIB + 1, false);
    }
    assert_eq!(spliced(&gw), 0, "TLS bodies cannot be spliced");
}

/// An origin for the backpressure tests: answers one GET with the
/// pattern's first `n` bytes, counting what it managed to write; the body
/// is delimited by a length or (`length` false) by closing the connection.
fn counting_origin(n: u64, length: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let mut w = stream;
        let _ = if length {
            write!(w, "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n")
        } else {
            write!(w, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
        };
        let mut piece = vec![0u8; 64 * 1024];
        let mut off = 0;
        while off < n {
            let len = (n - off).min(piece.len() as u64) as usize;
            Pattern::new().fill(off, &mut piece[..len]);
            if w.write_all(&piece[..len]).is_err() {
                return;
            }
            off += len as u64;
            count.store(off, Ordering::SeqCst);
        }
    });
    (addr, written)
}

/// Waits until `value` stops changing for half a second.
fn wait_still(value: impl Fn() -> u64) -> u64 {
    let mut last = value();
    let mut still = 0;
    let settled = wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(100));
        let now = value();
        still = if now == last { still + 1 } else { 0 };
        last = now;
        still >= 5
    });
    assert!(settled, "the transfer never stopped moving");
    last
}

/// The body bytes of a response as a client reads them: as they come
/// (a length) or with the chunk framing taken out.
struct BodyBytes {
    chunked: bool,
    /// What is left of the current chunk.
    pending: u64,
}

impl BodyBytes {
    /// Fills `out` with the body's next bytes.
    fn read(&mut self, r: &mut impl BufRead, out: &mut [u8]) {
        if !self.chunked {
            return r.read_exact(out).unwrap();
        }
        let mut at = 0;
        while at < out.len() {
            if self.pending == 0 {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    // The CRLF that ends the chunk before.
                    line.clear();
                    r.read_line(&mut line).unwrap();
                }
                self.pending = u64::from_str_radix(line.trim_end(), 16)
                    .unwrap_or_else(|_| panic!("a chunk size line, not {line:?}"));
                assert!(self.pending > 0, "the body ended early");
            }
            let take = self.pending.min((out.len() - at) as u64) as usize;
            r.read_exact(&mut out[at..at + take]).unwrap();
            at += take;
            self.pending -= take as u64;
        }
    }
}

/// A client that reads a little of a large body and stops: the transfer
/// stops at the gateway's bounded buffers (the upstream's writes block),
/// the gateway's memory stays far below the body, and once the client
/// reads on, every byte arrives. The upstream's body is delimited by a
/// length or (`length` false) by its close, which the gateway re-frames
/// as chunks for this HTTP/1.1 client.
fn a_reader_that_stops_holds_memory_bounded(env: &[(&str, &str)], length: bool) {
    let n = 512 * MIB;
    let (origin, written) = counting_origin(n, length);
    let gw = gateway(origin, env);
    let rss_before = gw.status_kb("VmRSS");
    let mut c = TcpStream::connect(gw.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut r = BufReader::with_capacity(64 * 1024, c);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(r.read_line(&mut head).unwrap() > 0);
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    assert_eq!(chunked, !length, "{head}");
    let mut body = BodyBytes {
        chunked,
        pending: 0,
    };
    let mut got = vec![0u8; MIB as usize];
    body.read(&mut r, &mut got);
    let stalled_at = wait_still(|| written.load(Ordering::SeqCst));
    assert!(
        stalled_at < n / 4,
        "the upstream wrote {stalled_at} bytes into a stalled reader"
    );
    let grown_kb = gw.status_kb("VmRSS").saturating_sub(rss_before);
    assert!(
        grown_kb < 24 * 1024,
        "the gateway grew by {grown_kb} KiB holding a stalled body"
    );
    // Reading on, the whole body arrives in order.
    let pattern = Pattern::new();
    let mut scratch = Vec::new();
    assert!(pattern.matches(0, &got, &mut scratch));
    let mut offset = MIB;
    got.resize(4 * MIB as usize, 0);
    while offset < n {
        let want = ((n - offset) as usize).min(got.len());
        body.read(&mut r, &mut got[..want]);
        assert!(
            pattern.matches(offset, &got[..want], &mut scratch),
            "at {offset}"
        );
        offset += want as u64;
    }
    if chunked {
        // The upstream closed: the last chunk follows the data.
        assert_eq!(body.pending, 0);
        let mut tail = String::new();
        r.read_line(&mut tail).unwrap();
        assert_eq!(tail, "\r\n");
        tail.clear();
        r.read_line(&mut tail).unwrap();
        assert_eq!(tail, "0\r\n");
    }
    // Spliced unless turned off: all but what came in with the head (the
    // workers' counts reach the metric within a report).
    if env.is_empty() {
        assert!(
            wait_until(Duration::from_secs(5), || spliced(&gw) > n - 16 * MIB),
            "spliced: {}",
            spliced(&gw)
        );
    } else {
        assert_eq!(spliced(&gw), 0);
    }
}

#[test]
fn a_stalled_reader_of_a_spliced_body_holds_memory_bounded() {
    a_reader_that_stops_holds_memory_bounded(&[], true);
}

#[test]
fn a_stalled_reader_of_a_copied_body_holds_memory_bounded() {
    a_reader_that_stops_holds_memory_bounded(NO_SPLICE, true);
}

#[test]
fn a_stalled_reader_of_a_rechunked_spliced_body_holds_memory_bounded() {
    a_reader_that_stops_holds_memory_bounded(&[], false);
}

/// An upstream that stops reading an upload: the client's writes block
/// at the gateway's bounded buffers, and once the upstream reads on it
/// gets every byte.
fn an_upstream_that_stops_reading_holds_memory_bounded(env: &[(&str, &str)]) {
    let n = 512 * MIB;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    let (go_on, wait) = std::sync::mpsc::channel::<()>();
    let verdict = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut r = BufReader::with_capacity(64 * 1024, stream.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        wait.recv().unwrap();
        let pattern = Pattern::new();
        let (mut buf, mut scratch, mut offset) = (vec![0u8; 4 * MIB as usize], Vec::new(), 0);
        while offset < n {
            let want = ((n - offset) as usize).min(buf.len());
            r.read_exact(&mut buf[..want]).unwrap();
            if !pattern.matches(offset, &buf[..want], &mut scratch) {
                return false;
            }
            offset += want as u64;
        }
        let mut w = stream;
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap();
        true
    });
    let gw = gateway(origin, env);
    let rss_before = gw.status_kb("VmRSS");
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let addr = gw.addr;
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        c.write_all(
            format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut piece = vec![0u8; 256 * 1024];
        let mut off = 0;
        while off < n {
            Pattern::new().fill(off, &mut piece);
            c.write_all(&piece).unwrap();
            off += piece.len() as u64;
            counter.store(off, Ordering::SeqCst);
        }
        read_response(&mut BufReader::new(c), false).unwrap()
    });
    let stalled_at = wait_still(|| sent.load(Ordering::SeqCst));
    assert!(
        stalled_at < n / 4,
        "the client sent {stalled_at} bytes to a stalled upstream"
    );
    let grown_kb = gw.status_kb("VmRSS").saturating_sub(rss_before);
    assert!(
        grown_kb < 24 * 1024,
        "the gateway grew by {grown_kb} KiB holding a stalled upload"
    );
    go_on.send(()).unwrap();
    assert!(
        verdict.join().unwrap(),
        "the upload arrived with wrong bytes"
    );
    assert_eq!(client.join().unwrap().text(), "ok");
}

#[test]
fn a_stalled_upstream_of_a_spliced_upload_holds_memory_bounded() {
    an_upstream_that_stops_reading_holds_memory_bounded(&[]);
}

#[test]
fn a_stalled_upstream_of_a_copied_upload_holds_memory_bounded() {
    an_upstream_that_stops_reading_holds_memory_bounded(NO_SPLICE);
}
