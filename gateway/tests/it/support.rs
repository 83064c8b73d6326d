//! Builders for the integration tests: real upstream servers on
//! 127.0.0.1:0, a real gateway in-process or as the built binary, and
//! small clients that read responses strictly. Nothing here sleeps and
//! hopes: every wait has a deadline and a condition.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod binary;
mod peers;

pub(crate) use binary::*;
pub(crate) use peers::*;

/// How long any single test I/O may block before the test fails.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- data

/// Size of one page of the deterministic test stream.
const PAGE: usize = 1 << 20;

/// A deterministic byte stream that can be checked at any offset: pages of
/// pseudo-random bytes, each page stamped with its index, so that a lost,
/// repeated or reordered piece shows.
pub(crate) struct Pattern {
    base: Vec<u8>,
}

impl Pattern {
    pub(crate) fn new() -> Pattern {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let base = (0..PAGE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Pattern { base }
    }

    /// Fills `out` with the stream's bytes from `offset`.
    pub(crate) fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let pos = offset + done as u64;
            let page = pos / PAGE as u64;
            let in_page = (pos % PAGE as u64) as usize;
            let n = (PAGE - in_page).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.base[in_page..in_page + n]);
            // Stamp: the first 8 bytes of every page hold its index.
            let stamp = page.to_le_bytes();
            for i in in_page..(in_page + n).min(8) {
                out[done + i - in_page] = stamp[i];
            }
            done += n;
        }
    }

    /// True when `data` equals the stream's bytes at `offset`.
    pub(crate) fn matches(&self, offset: u64, data: &[u8], scratch: &mut Vec<u8>) -> bool {
        scratch.resize(data.len(), 0);
        self.fill(offset, scratch);
        scratch[..] == *data
    }
}

// ------------------------------------------------------------ upstream

/// The first value of header `name` (any case) in `headers`.
fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// A real HTTP/1.1 upstream on 127.0.0.1:0, one thread per connection,
/// whose behaviour is chosen by the request path:
///
/// - `/verify/N`: checks that the body is the test [`Pattern`]'s first N
///   bytes, streaming, and answers `ok N` or `bad ...`;
/// - `/echo`: answers the body back;
/// - `/chunked/K`: a chunked response of K small chunks;
/// - `/stream/N`: a chunked response of the pattern's first N bytes;
/// - `/pattern/N`: the pattern's first N bytes with a length
///   (`/pattern/N/cut/M`: only M of them, then a close);
/// - `/pattern-close/N`: the pattern's first N bytes, ended by closing;
/// - `/until-close`: a response delimited by closing;
/// - `/status/S`: status S (with a length header, and no body for 204/304);
/// - `/delay/MS`: answers after MS milliseconds;
/// - `/close`: closes without answering; `/garbage`: answers garbage;
/// - `/early-413`: answers 413 at once, without reading the body;
/// - anything else: `NAME METHOD TARGET`.
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    sick: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    pub(crate) fn start(name: &'static str) -> Upstream {
        Upstream::start_with_delay(name, Duration::ZERO)
    }

    /// An upstream that waits `delay` before every answer.
    pub(crate) fn start_with_delay(name: &'static str, delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sick = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, o, s, k) = (
            connections.clone(),
            open.clone(),
            seen.clone(),
            sick.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (o, s, k) = (o.clone(), s.clone(), k.clone());
                std::thread::spawn(move || {
                    let _ = serve_upstream(name, stream, &s, &k, delay);
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            addr,
            name,
            connections,
            open,
            seen,
            sick,
        }
    }

    /// While sick, every request (health checks too) gets a 503.
    pub(crate) fn set_sick(&self, sick: bool) {
        self.sick.store(sick, Ordering::SeqCst);
    }

    /// Requests seen so far whose path starts with `prefix`.
    pub(crate) fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target.starts_with(prefix))
            .count()
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections open now (the gateway has not closed them).
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The complete lines of a JSON access log (a worker may be writing the
/// last one while the test reads), each parsed.
pub(crate) fn log_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A port nothing listens on now, for a server the test starts on it.
/// Another test's `bind(0)` or outgoing connection may take it in the
/// meantime: where the server must start, use [`unshared_port`].
pub(crate) fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// As [`free_port`], on a loopback address of this call's own
/// (127.77.x.y): no other test binds there, and connections out of this
/// process come from 127.0.0.1, so the port stays free until the test's
/// server takes it.
pub(crate) fn unshared_port() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ip = std::net::Ipv4Addr::new(127, 77, (n / 250 % 250) as u8, (n % 250 + 1) as u8);
    let l = TcpListener::bind((ip, 0)).unwrap();
    l.local_addr().unwrap()
}

/// A port that refuses connections for the rest of the test run.
pub(crate) fn closed_port() -> SocketAddr {
    // Bound but never listening, and kept for the rest of the test run:
    // connections to it are refused, and no other test running alongside
    // can be given the port (a listener bound and dropped freed it, and a
    // concurrent test's `bind(0)` could then take it and answer).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(socket);
    addr
}

fn serve_upstream(
    name: &str,
    stream: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    sick: &std::sync::atomic::AtomicBool,
    delay: Duration,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    loop {
        let Some((method, target, headers)) = read_head(&mut reader)? else {
            return Ok(());
        };
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length: u64 = header("content-length").map_or(0, |v| v.parse().unwrap());
        let parts: Vec<&str> = target.trim_start_matches('/').split('/').collect();
        let mut record = Seen {
            method: method.clone(),
            target: target.clone(),
            headers: headers.clone(),
            body: Vec::new(),
        };

        if parts[0] == "early-413" {
            seen.lock().unwrap().push(record);
            w.write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large")?;
            // Close the way servers do (lingering): stop writing, drop what
            // still arrives for a moment, so the answer is not reset away.
            w.shutdown(std::net::Shutdown::Write)?;
            w.set_read_timeout(Some(Duration::from_millis(500)))?;
            let mut sink = [0u8; 64 * 1024];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            return Ok(());
        }
        if parts[0] == "verify" {
            let expect: u64 = parts[1].parse().unwrap();
            let verdict = verify_body(&mut reader, chunked, length, expect)?;
            record.body = verdict.clone().into_bytes();
            seen.lock().unwrap().push(record);
            respond(&mut w, name, 200, &[], verdict.as_bytes())?;
            continue;
        }
        record.body = read_body(&mut reader, chunked, length)?;
        let body = record.body.clone();
        seen.lock().unwrap().push(record);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if sick.load(Ordering::SeqCst) {
            respond(&mut w, name, 503, &[], b"sick")?;
            continue;
        }
        match parts[0] {
            "echo" => respond(&mut w, name, 200, &[], &body)?,
            "chunked" => {
                let k: usize = parts[1].parse().unwrap();
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ntransfer-encoding: chunked\r\n\r\n"
                )?;
                for i in 0..k {
                    let piece = format!("chunk-{i}\n");
                    write!(w, "{:x}\r\n{piece}\r\n", piece.len())?;
                    w.flush()?;
                }
                w.write_all(b"0\r\n\r\n")?;
            }
            "stream" => {
                let n: u64 = parts[1].parse().unwrap();
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ntransfer-encoding: chunked\r\n\r\n"
                )?;
                let pattern = Pattern::new();
                let mut buf = vec![0u8; 256 * 1024];
                let mut off = 0u64;
                while off < n {
                    let len = (n - off).min(buf.len() as u64) as usize;
                    pattern.fill(off, &mut buf[..len]);
                    write!(w, "{len:x}\r\n")?;
                    w.write_all(&buf[..len])?;
                    w.write_all(b"\r\n")?;
                    off += len as u64;
                }
                w.write_all(b"0\r\n\r\n")?;
            }
            "pattern" => {
                // `/pattern/N`: N bytes of the pattern with a length;
                // `/pattern/N/cut/M`: the same head, then only M bytes
                // and a close (an upstream that dies mid-body).
                let n: u64 = parts[1].parse().unwrap();
                let cut = (parts.get(2) == Some(&"cut")).then(|| parts[3].parse::<u64>().unwrap());
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ncontent-length: {n}\r\n\r\n"
                )?;
                write_pattern(&mut w, cut.unwrap_or(n))?;
                if cut.is_some() {
                    return Ok(());
                }
            }
            "pattern-close" => {
                // `/pattern-close/N`: N bytes of the pattern, ended by closing.
                let n: u64 = parts[1].parse().unwrap();
                write!(w, "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\n\r\n")?;
                write_pattern(&mut w, n)?;
                return Ok(());
            }
            "until-close" => {
                write!(w, "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\n\r\n")?;
                w.write_all(b"first part, ")?;
                w.flush()?;
                w.write_all(b"second part")?;
                return Ok(());
            }
            "status" => {
                let status: u16 = parts[1].parse().unwrap();
                let mut head = format!("HTTP/1.1 {status} X\r\nx-upstream: {name}\r\n");
                if status == 204 || status == 304 {
                    head.push_str("\r\n");
                    w.write_all(head.as_bytes())?;
                } else if method == "HEAD" {
                    head.push_str("content-length: 1234\r\n\r\n");
                    w.write_all(head.as_bytes())?;
                } else {
                    respond(&mut w, name, status, &[], b"status body")?;
                }
            }
            "delay" => {
                let ms: u64 = parts[1].parse().unwrap();
                std::thread::sleep(Duration::from_millis(ms));
                respond(&mut w, name, 200, &[], b"slow")?;
            }
            "close" => return Ok(()),
            "garbage" => {
                w.write_all(b"THIS IS NOT HTTP\r\n\r\n")?;
                return Ok(());
            }
            _ => {
                let text = format!("{name} {method} {target}");
                respond(&mut w, name, 200, &[], text.as_bytes())?;
            }
        }
    }
}

/// Writes the pattern's first `n` bytes, in pieces.
fn write_pattern(w: &mut TcpStream, n: u64) -> std::io::Result<()> {
    let pattern = Pattern::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < n {
        let len = (n - off).min(buf.len() as u64) as usize;
        pattern.fill(off, &mut buf[..len]);
        w.write_all(&buf[..len])?;
        off += len as u64;
    }
    Ok(())
}

fn respond(
    w: &mut TcpStream,
    name: &str,
    status: u16,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} Whatever\r\nx-upstream: {name}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    w.write_all(&all)
}

type Head = (String, String, Vec<(String, String)>);

/// Reads a request head; `None` at a clean end of stream.
fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Ok(None);
        }
        if raw.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    assert!(
        req.parse(&raw).unwrap().is_complete(),
        "upstream got a bad head"
    );
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Some((
        req.method.unwrap().to_owned(),
        req.path.unwrap().to_owned(),
        headers,
    )))
}

/// Reads a whole (small) request body.
fn read_body(r: &mut BufReader<TcpStream>, chunked: bool, length: u64) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if chunked {
        read_chunked(r, |piece| {
            body.extend_from_slice(piece);
            Ok(())
        })?;
    } else {
        body.resize(length as usize, 0);
        r.read_exact(&mut body)?;
    }
    Ok(body)
}

/// Reads a chunked body, handing each piece of payload to `f`.
pub(crate) fn read_chunked<R: BufRead>(
    r: &mut R,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size_text = line.trim_end().split(';').next().unwrap_or("");
        let mut size = u64::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut t = String::new();
                r.read_line(&mut t)?;
                if t == "\r\n" || t.is_empty() {
                    return Ok(());
                }
            }
        }
        while size > 0 {
            let n = (size as usize).min(buf.len());
            r.read_exact(&mut buf[..n])?;
            f(&buf[..n])?;
            size -= n as u64;
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        assert_eq!(&crlf, b"\r\n", "chunk not followed by CRLF");
    }
}

/// Checks a streamed body against the pattern without keeping it.
fn verify_body(
    r: &mut BufReader<TcpStream>,
    chunked: bool,
    length: u64,
    expect: u64,
) -> std::io::Result<String> {
    let pattern = Pattern::new();
    let mut scratch = Vec::new();
    let mut offset = 0u64;
    let mut bad: Option<u64> = None;
    let mut check = |piece: &[u8]| {
        if bad.is_none() && !pattern.matches(offset, piece, &mut scratch) {
            bad = Some(offset);
        }
        offset += piece.len() as u64;
        Ok(())
    };
    if chunked {
        read_chunked(r, &mut check)?;
    } else {
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = length;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            let got = r.read(&mut buf[..n])?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            check(&buf[..got])?;
            left -= got as u64;
        }
    }
    Ok(match bad {
        Some(at) => format!("bad at {at}"),
        None if offset != expect => format!("bad length {offset}"),
        None => format!("ok {offset}"),
    })
}

// ------------------------------------------------------------- clients

/// A parsed response.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection that reads responses one at a time.
pub(crate) struct Conn {
    pub reader: BufReader<TcpStream>,
}

impl Conn {
    pub(crate) fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    pub(crate) fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).unwrap();
    }

    /// Reads one response; `head` says the request was HEAD.
    pub(crate) fn response(&mut self, head: bool) -> Response {
        read_response(&mut self.reader, head).expect("a complete response")
    }

    /// True when the gateway has closed the connection (EOF or reset),
    /// with nothing more sent.
    pub(crate) fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }
}

/// Reads one response from `r`.
pub(crate) fn read_response<R: BufRead>(r: &mut R, head: bool) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if raw.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    assert!(resp.parse(&raw).unwrap().is_complete());
    let status = resp.code.unwrap();
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(r, |p| {
            body.extend_from_slice(p);
            Ok(())
        })?;
    } else if let Some(len) = get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends `raw` on a new connection and reads one response.
pub(crate) fn exchange(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Conn::open(addr);
    c.send(raw);
    c.response(raw.starts_with(b"HEAD "))
}

/// A GET on a new connection.
pub(crate) fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Runs curl with `args`; returns (exit ok, stdout).
pub(crate) fn curl(args: &[&str]) -> (bool, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is installed (apt-get install curl)");
    if !out.status.success() {
        eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), out.stdout)
}

// -------------------------------------------------------------- gateway

/// A gateway running in this process on a config whose listeners bind
/// port 0.
pub(crate) struct InProcess {
    pub gateway: ringway::Gateway,
}

impl InProcess {
    /// One worker.
    pub(crate) fn start(toml: &str) -> InProcess {
        InProcess::with_workers(toml, 1)
    }

    /// `workers` workers.
    pub(crate) fn with_workers(toml: &str, workers: usize) -> InProcess {
        let snapshot = ringway_config::compile_str("test.toml", toml).unwrap();
        keep_config(toml);
        let options = ringway::Options {
            workers: Some(workers),
            io: None,
        };
        InProcess {
            gateway: ringway::Gateway::start(snapshot, &options).unwrap(),
        }
    }

    /// The address of the listener called `edge`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.gateway.listener_addr("edge").unwrap()
    }
}

/// With `RINGWAY_TEST_CONFIG_DIR` set, writes a configuration that ringway
/// accepted into that folder (named by its content's hash), so that
/// `scripts/check-deploy` can hold `ringway schema` to every file the
/// tests run, not just `examples/`.
pub(crate) fn keep_config(toml: &str) {
    use std::hash::{Hash, Hasher};
    let Some(dir) = std::env::var_os("RINGWAY_TEST_CONFIG_DIR") else {
        return;
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    toml.hash(&mut hasher);
    let path = std::path::Path::new(&dir).join(format!("{:016x}.toml", hasher.finish()));
    std::fs::write(path, toml).unwrap();
}

/// A cluster section with the given endpoints.
pub(crate) fn cluster(name: &str, endpoints: &[SocketAddr]) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[cluster.{name}]\nendpoints = [{}]\n", list.join(", "))
}

/// The usual listener section, on port 0.
pub(crate) const EDGE: &str = "[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n";

/// A temporary directory removed on drop.
pub(crate) struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringway-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Polls `condition` until it holds or `limit` passes.
pub(crate) fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}
