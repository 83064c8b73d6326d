//! W3C trace context (`traceparent`) and span export over OTLP/HTTP.
//!
//! Every proxied request gets a span of its own: its trace id and parent
//! come from the client's `traceparent` when valid (and its sampling
//! decision is kept), or a new trace is started, sampled at the configured
//! rate. The upstream receives ringway's span as its parent. Sampled spans
//! are batched per worker and sent to an exporter thread through a bounded
//! queue: when the queue is full spans are dropped and counted, never
//! waited for. The exporter posts OTLP protobuf (what Jaeger and the
//! OpenTelemetry collector accept) encoded by hand: the few messages
//! needed do not justify a code generator.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use ringway_config::OtlpEndpoint;

/// A request's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The client's span, when it sent one.
    pub parent: Option<[u8; 8]>,
    /// ringway's span for this request.
    pub span_id: [u8; 8],
    /// Recorded and exported.
    pub sampled: bool,
}

impl TraceContext {
    /// The context from a client's `traceparent` value, if it is valid:
    /// `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero.
    pub fn parse(value: &[u8], span_id: [u8; 8]) -> Option<TraceContext> {
        let v = value.trim_ascii();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        // Version ff is forbidden; later versions keep this prefix.
        if &v[..2] == b"ff" || (v.len() > 55 && &v[..2] == b"00") {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent = [0u8; 8];
        let mut flags = [0u8; 1];
        unhex(&v[3..35], &mut trace_id)?;
        unhex(&v[36..52], &mut parent)?;
        unhex(&v[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent: Some(parent),
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// Writes the `traceparent` value that makes ringway's span the
    /// upstream's parent.
    pub fn write_traceparent(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"00-");
        hex(&self.trace_id, out);
        out.push(b'-');
        hex(&self.span_id, out);
        out.extend_from_slice(if self.sampled { b"-01" } else { b"-00" });
    }
}

/// Lowercase hex of `bytes`, appended to `out`.
pub(crate) fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Grown once and filled in place: a push per digit, each checking
    // the capacity, cost ~1,000 instructions per request for the ids and
    // the traceparent.
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    for (pair, b) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

fn unhex(text: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in text.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Where it sits.
    pub context: TraceContext,
    /// Span name: the route's name (shared, built once per generation).
    pub name: Arc<str>,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Request method (static for the standard ones: no allocation).
    pub method: Cow<'static, str>,
    /// Request target.
    pub target: String,
    /// Status answered.
    pub status: u16,
    /// The endpoint that answered, if any.
    pub upstream: Option<SocketAddr>,
}

/// The method as a `'static` string when it is a standard one.
pub(crate) fn method_name(method: &str) -> Cow<'static, str> {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    match STANDARD.iter().find(|m| **m == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.to_owned()),
    }
}

/// Where workers hand their spans.
#[derive(Debug, Clone)]
pub struct SpanSink {
    sender: SyncSender<Vec<SpanRecord>>,
}

impl SpanSink {
    /// Queues a batch; a full queue drops it (returning how many spans
    /// were lost) rather than making a worker wait.
    pub fn send(&self, batch: Vec<SpanRecord>) -> usize {
        match self.sender.try_send(batch) {
            Ok(()) => 0,
            Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => b.len(),
        }
    }
}

/// Batches queued at most, per exporter.
const QUEUE: usize = 64;
/// Spans sent in one request at most.
const MAX_BATCH: usize = 512;
/// How long the exporter waits to fill a batch.
const LINGER: Duration = Duration::from_millis(200);

/// Starts an exporter thread posting to `endpoint`; it ends when every
/// sink is dropped.
pub(crate) fn spawn_exporter(
    endpoint: OtlpEndpoint,
    service_name: String,
) -> std::io::Result<SpanSink> {
    let (sender, receiver) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("ringway-otlp".to_owned())
        .spawn(move || export_loop(&endpoint, &service_name, &receiver))?;
    Ok(SpanSink { sender })
}

fn export_loop(endpoint: &OtlpEndpoint, service: &str, batches: &Receiver<Vec<SpanRecord>>) {
    let mut pending: Vec<SpanRecord> = Vec::new();
    loop {
        let first = match batches.recv() {
            Ok(b) => b,
            Err(_) => return,
        };
        pending.extend(first);
        let deadline = Instant::now() + LINGER;
        let mut closed = false;
        while pending.len() < MAX_BATCH {
            match batches.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(b) => pending.extend(b),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let body = encode_request(service, &pending);
        if let Err(e) = post(endpoint, &body) {
            crate::say!(
                "ringway: OTLP export of {} span(s) failed: {e}",
                pending.len()
            );
        }
        pending.clear();
        if closed {
            return;
        }
    }
}

fn post(endpoint: &OtlpEndpoint, body: &[u8]) -> std::io::Result<()> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&endpoint.addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.authority,
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut status = [0u8; 12];
    stream.read_exact(&mut status)?;
    if &status[9..10] != b"2" {
        return Err(std::io::Error::other(format!(
            "collector answered {}",
            String::from_utf8_lossy(&status[9..12])
        )));
    }
    Ok(())
}

// --- protobuf, as opentelemetry/proto/collector/trace/v1 defines it ---

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn tag(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(field) << 3 | u64::from(wire), out);
}

fn bytes_field(field: u32, value: &[u8], out: &mut Vec<u8>) {
    tag(field, 2, out);
    varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

fn message(field: u32, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    bytes_field(field, &inner, out);
}

fn fixed64(field: u32, value: u64, out: &mut Vec<u8>) {
    tag(field, 1, out);
    out.extend_from_slice(&value.to_le_bytes());
}

/// `KeyValue { key = 1; AnyValue value = 2 }` with a string or int value.
fn attribute(key: &str, value: AttrValue<'_>, out: &mut Vec<u8>, field: u32) {
    message(field, out, |kv| {
        bytes_field(1, key.as_bytes(), kv);
        message(2, kv, |any| match value {
            AttrValue::Str(s) => bytes_field(1, s.as_bytes(), any),
            AttrValue::Int(i) => {
                tag(3, 0, any);
                varint(i as u64, any);
            }
        });
    });
}

enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
}

/// Encodes an `ExportTraceServiceRequest` holding `spans`.
pub(crate) fn encode_request(service: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 * spans.len() + 64);
    // resource_spans = 1
    message(1, &mut out, |rs| {
        // resource = 1 { attributes = 1 }
        message(1, rs, |res| {
            attribute("service.name", AttrValue::Str(service), res, 1)
        });
        // scope_spans = 2
        message(2, rs, |ss| {
            message(1, ss, |scope| bytes_field(1, b"ringway", scope));
            for span in spans {
                message(2, ss, |s| encode_span(span, s));
            }
        });
    });
    out
}

fn encode_span(span: &SpanRecord, s: &mut Vec<u8>) {
    bytes_field(1, &span.context.trace_id, s);
    bytes_field(2, &span.context.span_id, s);
    if let Some(parent) = &span.context.parent {
        bytes_field(4, parent, s);
    }
    bytes_field(5, span.name.as_bytes(), s);
    // kind = 6: SPAN_KIND_SERVER (2)
    tag(6, 0, s);
    varint(2, s);
    fixed64(7, span.start_unix_nanos, s);
    fixed64(8, span.end_unix_nanos, s);
    attribute("http.request.method", AttrValue::Str(&span.method), s, 9);
    attribute("url.path", AttrValue::Str(&span.target), s, 9);
    attribute(
        "http.response.status_code",
        AttrValue::Int(i64::from(span.status)),
        s,
        9,
    );
    if let Some(upstream) = span.upstream {
        attribute(
            "server.address",
            AttrValue::Str(&upstream.to_string()),
            s,
            9,
        );
    }
    // status = 15 { code = 3 }: ERROR (2) for 5xx, else UNSET.
    if span.status >= 500 {
        message(15, s, |st| {
            tag(3, 0, st);
            varint(2, st);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_appends_lowercase_digits() {
        let mut out = b"id=".to_vec();
        hex(&[0x00, 0x09, 0xa0, 0xff, 0x5c], &mut out);
        assert_eq!(out, b"id=0009a0ff5c");
        hex(&[], &mut out);
        assert_eq!(out, b"id=0009a0ff5c");
    }

    #[test]
    fn traceparent_round_trips_and_invalid_ones_are_refused() {
        let v = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ctx = TraceContext::parse(v, [1; 8]).unwrap();
        assert!(ctx.sampled);
        assert_eq!(
            ctx.parent,
            Some([0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31])
        );
        let mut out = Vec::new();
        ctx.write_traceparent(&mut out);
        assert_eq!(
            out,
            b"00-0af7651916cd43dd8448eb211c80319c-0101010101010101-01"
        );
        for bad in [
            &b"00-00000000000000000000000000000000-b7ad6b7169203331-01"[..],
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            b"garbage",
        ] {
            assert!(
                TraceContext::parse(bad, [1; 8]).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn varints_encode_as_protobuf_does() {
        let mut out = Vec::new();
        varint(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
    }
}
