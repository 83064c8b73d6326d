//! What one request did, and recording it once it is over: metrics, the
//! access log line and the trace span, in one place for every protocol.

use std::net::SocketAddr;

use ringway_codec::http1::request;
use ringway_config::{ClusterId, Listener};
use ringway_router::RouteId;

use crate::access_log;
use crate::metrics::SeriesLabels;
use crate::trace::{self, SpanRecord, TraceContext};
use crate::worker::state::{Generation, Worker};

/// Request texts kept per worker for the next requests: about as many as
/// are served at once, each a few hundred bytes.
const SPARE_TEXTS_KEPT: usize = 64;
/// A text holding more than this goes rather than stays a spare.
const SPARE_TEXT_MAX_BYTES: usize = 4096;

thread_local! {
    static SPARE_TEXTS: std::cell::RefCell<Vec<RequestText>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// What a request said and which ids it carries, copied out of the read
/// buffer (into buffers reused from request to request) because the log
/// line and the span are written after the buffer has moved on.
#[derive(Debug)]
pub(crate) struct RequestText {
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) target: String,
    pub(crate) request_id: String,
    /// ringway made the request id up (the client sent none).
    pub(crate) generated_id: bool,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) traceparent: Vec<u8>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`, as the combined log writes it.
    pub(crate) protocol: &'static str,
    /// `Referer` and `User-Agent`, copied only when a combined access log
    /// will print them.
    pub(crate) referer: String,
    pub(crate) user_agent: String,
}

impl RequestText {
    pub(crate) fn new() -> RequestText {
        RequestText {
            method: String::new(),
            host: String::new(),
            target: String::new(),
            request_id: String::new(),
            generated_id: false,
            trace: None,
            traceparent: Vec::new(),
            protocol: "HTTP/1.1",
            referer: String::new(),
            user_agent: String::new(),
        }
    }

    /// A text from the worker's spares (its strings keep the capacity an
    /// earlier request gave them), or a new one: an HTTP/1.1 connection
    /// holds one only while a request is served, and making its five
    /// strings again for every request was a measurable part of a small
    /// request's cost.
    pub(crate) fn take_spare() -> RequestText {
        SPARE_TEXTS
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(RequestText::new)
    }

    /// Gives this text's strings to the worker's spares, unless enough are
    /// kept or one grew large (a long target or id).
    pub(crate) fn give_back(self) {
        let held = self.method.capacity()
            + self.host.capacity()
            + self.target.capacity()
            + self.request_id.capacity()
            + self.traceparent.capacity()
            + self.referer.capacity()
            + self.user_agent.capacity();
        if held == 0 || held > SPARE_TEXT_MAX_BYTES {
            return;
        }
        SPARE_TEXTS.with_borrow_mut(|spares| {
            if spares.len() < SPARE_TEXTS_KEPT {
                spares.push(self);
            }
        });
    }

    /// Copies what the log and span need from `req`, and settles its
    /// request id and trace context.
    pub(crate) fn capture(
        &mut self,
        worker: &Worker,
        generation: &Generation,
        req: &request::Request<'_, '_>,
    ) {
        let sample_rate = generation.snapshot.tracing.sample_rate;
        self.protocol = match (req.http2, req.minor_version) {
            (true, _) => "HTTP/2.0",
            (false, 0) => "HTTP/1.0",
            (false, _) => "HTTP/1.1",
        };
        self.method.clear();
        self.method.push_str(req.method);
        self.host.clear();
        push_lossy(&mut self.host, req.host);
        self.target.clear();
        push_lossy(&mut self.target, req.target);
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
        };
        self.referer.clear();
        self.user_agent.clear();
        let combined = generation
            .sinks
            .log
            .as_ref()
            .is_some_and(|l| l.format == ringway_config::LogFormat::Combined);
        if combined {
            if let Some(h) = header("referer") {
                push_lossy(&mut self.referer, h.value);
            }
            if let Some(h) = header("user-agent") {
                push_lossy(&mut self.user_agent, h.value);
            }
        }
        self.request_id.clear();
        match header("x-request-id").map(|h| h.value.trim_ascii()) {
            Some(id)
                if !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic) =>
            {
                push_lossy(&mut self.request_id, id);
                self.generated_id = false;
            }
            _ => {
                let mut id = Vec::with_capacity(32);
                trace::hex(&worker.random_u64().to_be_bytes(), &mut id);
                trace::hex(&worker.random_u64().to_be_bytes(), &mut id);
                push_lossy(&mut self.request_id, &id);
                self.generated_id = true;
            }
        }
        let span_id = worker.random_u64().to_be_bytes();
        let incoming = header("traceparent").and_then(|h| TraceContext::parse(h.value, span_id));
        let context = incoming.unwrap_or_else(|| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&worker.random_u64().to_be_bytes());
            trace_id[8..].copy_from_slice(&worker.random_u64().to_be_bytes());
            TraceContext {
                trace_id,
                parent: None,
                span_id,
                sampled: worker.random() < sample_rate,
            }
        });
        self.traceparent.clear();
        context.write_traceparent(&mut self.traceparent);
        self.trace = Some(context);
    }
}

/// Appends `bytes` to `to`, invalid UTF-8 replaced. Checked with
/// `str::from_utf8` first: `from_utf8_lossy` walks its input in chunks and
/// was measurably slower on the valid text that nearly all requests carry.
pub(crate) fn push_lossy(to: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => to.push_str(text),
        Err(_) => to.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// A request served, for the record.
pub(crate) struct Served<'a> {
    pub worker: &'a Worker,
    pub listener: &'a Listener,
    pub peer: SocketAddr,
    pub log: &'a RequestLog,
    pub text: &'a RequestText,
}

thread_local! {
    /// The worker's buffer for metric series keys: one per worker rather
    /// than one per connection.
    static SERIES_KEY: std::cell::RefCell<String> =
        std::cell::RefCell::new(String::with_capacity(128));
}

impl Served<'_> {
    /// Counts the request in its worker's metrics, logs it and keeps its span.
    pub(crate) fn record(&self, generation: &Generation) {
        SERIES_KEY.with_borrow_mut(|key| self.record_with(generation, key));
    }

    /// [`Served::record`], with `key` a reused buffer for the series key.
    fn record_with(&self, generation: &Generation, key: &mut String) {
        let snapshot = &generation.snapshot;
        let route = self
            .log
            .route
            .and_then(|r| snapshot.routes.get(r.0 as usize))
            .map_or("", |r| &*r.name);
        let cluster = self
            .log
            .cluster
            .and_then(|c| snapshot.clusters.get(c.0 as usize))
            .map_or("", |c| c.name.as_str());
        key.clear();
        key.push_str(&self.listener.name);
        key.push('\0');
        key.push_str(route);
        key.push('\0');
        key.push_str(cluster);
        let series = self.worker.metrics.series(key, || SeriesLabels {
            listener: self.listener.name.clone(),
            route: route.to_owned(),
            cluster: cluster.to_owned(),
        });
        let duration = crate::clock::since(self.log.started);
        let micros = duration.as_micros() as u64;
        // The wall clock only for the sinks that print it: most requests
        // have none to feed.
        let wall_start = || {
            let now = std::time::SystemTime::now();
            now.checked_sub(duration).unwrap_or(now)
        };
        series.record(
            self.log.status,
            micros,
            self.log.bytes_in,
            self.log.bytes_out,
        );
        if let Some(upstream) = self.log.upstream_micros {
            series.upstream.observe(upstream);
        }
        if let Some(log) = &generation.sinks.log {
            let entry = access_log::Entry {
                time: wall_start(),
                client: self
                    .log
                    .client
                    .map_or(self.peer, |ip| SocketAddr::new(ip, self.peer.port())),
                method: &self.text.method,
                host: &self.text.host,
                target: &self.text.target,
                status: self.log.status,
                bytes_in: self.log.bytes_in,
                bytes_out: self.log.bytes_out,
                upstream: self.log.upstream,
                upstream_micros: self.log.upstream_micros,
                duration_micros: micros,
                request_id: &self.text.request_id,
                trace_id: self.text.trace.map(|t| t.trace_id),
                protocol: self.text.protocol,
                referer: &self.text.referer,
                user_agent: &self.text.user_agent,
            };
            let mut buf = self.worker.log_buf.borrow_mut();
            access_log::write_line(&mut buf, log.format, &entry);
        }
        if let (Some(_), Some(context)) = (&generation.sinks.spans, self.text.trace)
            && context.sampled
        {
            let start = wall_start()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            self.worker.span_buf.borrow_mut().push(SpanRecord {
                context,
                name: generation.span_name(self.log.route),
                start_unix_nanos: start,
                end_unix_nanos: start + micros * 1000,
                method: trace::method_name(&self.text.method),
                target: self.text.target.clone(),
                status: self.log.status,
                upstream: self.log.upstream,
            });
        }
        self.worker.flush(false);
    }
}

/// What one request did, filled in as it is served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLog {
    pub(crate) started: std::time::Instant,
    /// Status answered; 0 when nothing could be answered.
    pub(crate) status: u16,
    /// A request head was read (or refused): there is something to count.
    pub(crate) seen: bool,
    pub(crate) route: Option<RouteId>,
    pub(crate) cluster: Option<ClusterId>,
    pub(crate) bytes_in: u64,
    /// Request body bytes read so far (as framed on the wire).
    pub(crate) body_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) upstream_micros: Option<u64>,
    /// The endpoint tried last.
    pub(crate) upstream: Option<SocketAddr>,
    /// The client's derived address (behind a trusted proxy, the one its
    /// `X-Forwarded-For` names), once the request was planned.
    pub(crate) client: Option<std::net::IpAddr>,
}

impl RequestLog {
    pub(crate) fn new() -> RequestLog {
        RequestLog {
            started: crate::clock::now(),
            status: 0,
            seen: false,
            route: None,
            cluster: None,
            bytes_in: 0,
            body_in: 0,
            bytes_out: 0,
            upstream_micros: None,
            upstream: None,
            client: None,
        }
    }
}
