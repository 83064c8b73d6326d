//! Per-worker counters and their Prometheus rendering.
//!
//! Every counter lives in one worker (`Cell`, no atomics): the request path
//! writes only to memory its own core owns. A scrape asks each worker for
//! a copy of its counters over its command channel, sums them, and renders
//! the Prometheus text format (which OpenMetrics parsers accept too).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write;
use std::rc::Rc;

use rustc_hash::FxHashMap;

/// Upper bounds of the latency histograms, in seconds.
pub(crate) const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of one worker.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Non-cumulative counts per bucket; the last is +Inf.
    buckets: [Cell<u64>; BUCKETS.len() + 1],
    sum_micros: Cell<u64>,
}

impl Histogram {
    /// Records one observation of `micros` microseconds.
    pub(crate) fn observe(&self, micros: u64) {
        let seconds = micros as f64 / 1e6;
        let i = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].set(self.buckets[i].get() + 1);
        self.sum_micros.set(self.sum_micros.get() + micros);
    }

    fn values(&self) -> HistogramValues {
        HistogramValues {
            buckets: std::array::from_fn(|i| self.buckets[i].get()),
            sum_micros: self.sum_micros.get(),
        }
    }
}

/// A copy of a histogram, summable across workers.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistogramValues {
    buckets: [u64; BUCKETS.len() + 1],
    sum_micros: u64,
}

impl HistogramValues {
    fn add(&mut self, other: &HistogramValues) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_micros += other.sum_micros;
    }
}

/// Labels of a request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesLabels {
    /// Listener name.
    pub listener: String,
    /// Route name (empty when no route matched).
    pub route: String,
    /// Cluster name (empty for direct answers).
    pub cluster: String,
}

/// The counters of one (listener, route, cluster) on one worker.
#[derive(Debug, Default)]
pub(crate) struct Series {
    /// Responses by status class: index 1 for 1xx ... 5 for 5xx, 0 other.
    by_class: [Cell<u64>; 6],
    /// Whole request time, first byte in to last byte out.
    pub duration: Histogram,
    /// Time from sending upstream to the upstream's response head.
    pub upstream: Histogram,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
}

impl Series {
    /// Counts one finished request.
    pub(crate) fn record(&self, status: u16, micros: u64, bytes_in: u64, bytes_out: u64) {
        let class = usize::from(status / 100).min(5);
        self.by_class[class].set(self.by_class[class].get() + 1);
        self.duration.observe(micros);
        self.bytes_in.set(self.bytes_in.get() + bytes_in);
        self.bytes_out.set(self.bytes_out.get() + bytes_out);
    }
}

/// A copy of a series' counters.
#[derive(Debug, Clone, Default)]
pub struct SeriesValues {
    by_class: [u64; 6],
    duration: HistogramValues,
    upstream: HistogramValues,
    bytes_in: u64,
    bytes_out: u64,
}

/// All counters of one worker.
#[derive(Debug, Default)]
pub(crate) struct WorkerMetrics {
    /// Downstream connections open now.
    pub connections_active: Cell<u64>,
    /// Downstream connections accepted.
    pub connections_total: Cell<u64>,
    /// Retries sent.
    pub retries: Cell<u64>,
    /// Outlier ejections.
    pub ejections: Cell<u64>,
    /// Requests refused by a rate limit.
    pub rate_limited: Cell<u64>,
    /// Requests refused by a circuit breaker.
    pub overflowed: Cell<u64>,
    /// Access log batches dropped because the writer fell behind.
    pub log_dropped: Cell<u64>,
    /// Spans dropped because the exporter fell behind.
    pub spans_dropped: Cell<u64>,
    /// TLS handshakes completed.
    pub tls_handshakes: Cell<u64>,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Cell<u64>,
    /// Times an accept loop stopped accepting at a connection cap.
    pub accept_paused: Cell<u64>,
    /// Accepts that failed (out of descriptors or memory).
    pub accept_errors: Cell<u64>,
    /// Connections closed at the PROXY protocol header: sent by a peer
    /// not in `trusted_proxies`, malformed, or not in time.
    pub proxy_protocol_refused: Cell<u64>,
    /// By listener, route and cluster names (from the configuration, not
    /// from clients: a fast hash is safe), looked up on every request.
    series: RefCell<FxHashMap<String, (SeriesLabels, Rc<Series>)>>,
}

impl WorkerMetrics {
    /// The series of `labels`, found by `key` (the labels joined, built by
    /// the caller into a reused buffer so that lookups do not allocate).
    pub(crate) fn series(&self, key: &str, labels: impl FnOnce() -> SeriesLabels) -> Rc<Series> {
        if let Some((_, s)) = self.series.borrow().get(key) {
            return s.clone();
        }
        let s = Rc::new(Series::default());
        self.series
            .borrow_mut()
            .insert(key.to_owned(), (labels(), s.clone()));
        s
    }

    /// A copy of every counter, to send to the scraper.
    pub(crate) fn report(&self) -> MetricsReport {
        MetricsReport {
            connections_active: self.connections_active.get(),
            read_buffers_held: crate::buffer::held(),
            spliced_bytes: crate::splice::spliced(),
            read_ring_empty: crate::watch::ring_empty(),
            connections_total: self.connections_total.get(),
            retries: self.retries.get(),
            ejections: self.ejections.get(),
            rate_limited: self.rate_limited.get(),
            overflowed: self.overflowed.get(),
            log_dropped: self.log_dropped.get(),
            spans_dropped: self.spans_dropped.get(),
            tls_handshakes: self.tls_handshakes.get(),
            tls_handshake_failures: self.tls_handshake_failures.get(),
            accept_paused: self.accept_paused.get(),
            accept_errors: self.accept_errors.get(),
            proxy_protocol_refused: self.proxy_protocol_refused.get(),
            series: self
                .series
                .borrow()
                .values()
                .map(|(labels, s)| {
                    (
                        labels.clone(),
                        SeriesValues {
                            by_class: std::array::from_fn(|i| s.by_class[i].get()),
                            duration: s.duration.values(),
                            upstream: s.upstream.values(),
                            bytes_in: s.bytes_in.get(),
                            bytes_out: s.bytes_out.get(),
                        },
                    )
                })
                .collect(),
            ..MetricsReport::default()
        }
    }
}

/// One endpoint as one worker sees it.
#[derive(Debug, Clone, Default)]
pub struct EndpointReport {
    /// Cluster name.
    pub cluster: String,
    /// Endpoint address.
    pub addr: String,
    /// Configured weight.
    pub weight: u32,
    /// Active health verdict.
    pub healthy: bool,
    /// Requests in flight from this worker.
    pub active: u64,
    /// Ejected by this worker now.
    pub ejected: bool,
    /// Idle pooled connections of this worker.
    pub idle: u64,
}

/// What a worker reports to a scrape.
#[derive(Debug, Clone, Default)]
pub struct MetricsReport {
    /// Downstream connections open.
    pub connections_active: u64,
    /// Read buffers connections hold now (none while they wait).
    pub read_buffers_held: u64,
    /// Body bytes moved socket to socket by splice(2).
    pub spliced_bytes: u64,
    /// Reads whose bytes found the worker's buffer ring empty.
    pub read_ring_empty: u64,
    /// Downstream connections accepted.
    pub connections_total: u64,
    /// Retries sent.
    pub retries: u64,
    /// Outlier ejections.
    pub ejections: u64,
    /// Rate-limited requests.
    pub rate_limited: u64,
    /// Circuit-breaker refusals.
    pub overflowed: u64,
    /// Dropped access log batches.
    pub log_dropped: u64,
    /// Dropped spans.
    pub spans_dropped: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes failed.
    pub tls_handshake_failures: u64,
    /// Times accepting stopped at a connection cap.
    pub accept_paused: u64,
    /// Accepts that failed.
    pub accept_errors: u64,
    /// Connections refused at the PROXY protocol header.
    pub proxy_protocol_refused: u64,
    /// Upstream connections opened.
    pub upstream_opened: u64,
    /// Upstream connections reused from the pool.
    pub upstream_reused: u64,
    /// Upstream connections closed instead of pooled or lent: out of step
    /// (bytes past the response, or readable while idle).
    pub upstream_dirty: u64,
    /// Request series.
    pub series: Vec<(SeriesLabels, SeriesValues)>,
    /// Endpoints of the current generation.
    pub endpoints: Vec<EndpointReport>,
}

/// Process-wide values the control side adds to a scrape.
#[derive(Debug, Clone, Default)]
pub(crate) struct ControlValues {
    /// Current generation.
    pub generation: u64,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads refused.
    pub reloads_failed: u64,
    /// Balancer tables built since start.
    pub tables_built: u64,
    /// Balancer tables reloads took over unchanged.
    pub tables_kept: u64,
    /// Heap bytes of the served configuration's balancer tables.
    pub table_bytes: u64,
}

/// Renders the summed reports in the Prometheus text format.
pub(crate) fn render(reports: &[MetricsReport], control: &ControlValues) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let sum = |f: fn(&MetricsReport) -> u64| reports.iter().map(f).sum::<u64>();
    let scalar = |out: &mut String, name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    scalar(
        &mut out,
        "ringway_downstream_connections_active",
        "gauge",
        "Client connections open now.",
        sum(|r| r.connections_active),
    );
    scalar(
        &mut out,
        "ringway_read_buffers_held",
        "gauge",
        "Read buffers held by connections now: those reading or serving a request (a connection waiting for its next request holds none).",
        sum(|r| r.read_buffers_held),
    );
    scalar(
        &mut out,
        "ringway_spliced_bytes_total",
        "counter",
        "Body bytes moved between two plain sockets inside the kernel (splice), not copied through the gateway.",
        sum(|r| r.spliced_bytes),
    );
    scalar(
        &mut out,
        "ringway_read_ring_empty_total",
        "counter",
        "Reads of a waiting plain socket whose bytes arrived when the worker's buffer ring had no buffer left (read again the usual way: one more operation each).",
        sum(|r| r.read_ring_empty),
    );
    scalar(
        &mut out,
        "ringway_downstream_connections_total",
        "counter",
        "Client connections accepted.",
        sum(|r| r.connections_total),
    );
    scalar(
        &mut out,
        "ringway_upstream_connections_opened_total",
        "counter",
        "Upstream connections opened.",
        sum(|r| r.upstream_opened),
    );
    scalar(
        &mut out,
        "ringway_upstream_connections_reused_total",
        "counter",
        "Upstream requests sent on a pooled connection.",
        sum(|r| r.upstream_reused),
    );
    scalar(
        &mut out,
        "ringway_upstream_connections_dirty_total",
        "counter",
        "Upstream connections closed instead of reused: bytes arrived past a response or while idle.",
        sum(|r| r.upstream_dirty),
    );
    scalar(
        &mut out,
        "ringway_retries_total",
        "counter",
        "Retries sent to another endpoint.",
        sum(|r| r.retries),
    );
    scalar(
        &mut out,
        "ringway_outlier_ejections_total",
        "counter",
        "Endpoints ejected by a worker after consecutive failures.",
        sum(|r| r.ejections),
    );
    scalar(
        &mut out,
        "ringway_rate_limited_total",
        "counter",
        "Requests answered 429 by a rate limit.",
        sum(|r| r.rate_limited),
    );
    scalar(
        &mut out,
        "ringway_circuit_open_total",
        "counter",
        "Requests answered 503 by a circuit breaker.",
        sum(|r| r.overflowed),
    );
    scalar(
        &mut out,
        "ringway_access_log_dropped_total",
        "counter",
        "Access log batches dropped because the writer fell behind.",
        sum(|r| r.log_dropped),
    );
    scalar(
        &mut out,
        "ringway_spans_dropped_total",
        "counter",
        "Spans dropped because the exporter fell behind.",
        sum(|r| r.spans_dropped),
    );
    scalar(
        &mut out,
        "ringway_tls_handshakes_total",
        "counter",
        "TLS handshakes completed on listeners.",
        sum(|r| r.tls_handshakes),
    );
    scalar(
        &mut out,
        "ringway_tls_handshake_failures_total",
        "counter",
        "TLS handshakes on listeners that failed or timed out (connection closed).",
        sum(|r| r.tls_handshake_failures),
    );
    scalar(
        &mut out,
        "ringway_accept_paused_total",
        "counter",
        "Times a worker stopped accepting at a connection cap (max_connections); new connections waited in the backlog.",
        sum(|r| r.accept_paused),
    );
    scalar(
        &mut out,
        "ringway_accept_errors_total",
        "counter",
        "Accepts that failed (out of file descriptors or memory); the worker backed off and kept serving.",
        sum(|r| r.accept_errors),
    );
    scalar(
        &mut out,
        "ringway_proxy_protocol_refused_total",
        "counter",
        "Connections closed at the PROXY protocol header: from a peer outside trusted_proxies, malformed, or not in time.",
        sum(|r| r.proxy_protocol_refused),
    );
    scalar(
        &mut out,
        "ringway_config_generation",
        "gauge",
        "Generation of the configuration being served.",
        control.generation,
    );
    scalar(
        &mut out,
        "ringway_config_reloads_total",
        "counter",
        "Configuration reloads applied.",
        control.reloads_ok,
    );
    scalar(
        &mut out,
        "ringway_config_reload_failures_total",
        "counter",
        "Configuration reloads refused (the running one stayed).",
        control.reloads_failed,
    );
    scalar(
        &mut out,
        "ringway_balancer_tables_built_total",
        "counter",
        "Maglev tables and hash rings built (at start, and by reloads for clusters whose endpoints or sizes changed).",
        control.tables_built,
    );
    scalar(
        &mut out,
        "ringway_balancer_tables_kept_total",
        "counter",
        "Maglev tables and hash rings a reload took over unchanged.",
        control.tables_kept,
    );
    scalar(
        &mut out,
        "ringway_balancer_table_bytes",
        "gauge",
        "Memory of the served configuration's balancer tables, held once and shared by every worker.",
        control.table_bytes,
    );

    // Request series, summed over workers.
    let mut merged: HashMap<&SeriesLabels, SeriesValues> = HashMap::new();
    for r in reports {
        for (labels, v) in &r.series {
            let m = merged.entry(labels).or_default();
            for (a, b) in m.by_class.iter_mut().zip(&v.by_class) {
                *a += b;
            }
            m.duration.add(&v.duration);
            m.upstream.add(&v.upstream);
            m.bytes_in += v.bytes_in;
            m.bytes_out += v.bytes_out;
        }
    }
    let mut series: Vec<_> = merged.into_iter().collect();
    series.sort_by(|a, b| a.0.cmp(b.0));
    let labels = |l: &SeriesLabels| {
        format!(
            "listener=\"{}\",route=\"{}\",cluster=\"{}\"",
            escape(&l.listener),
            escape(&l.route),
            escape(&l.cluster)
        )
    };
    let _ = writeln!(
        out,
        "# HELP ringway_requests_total Requests answered, by status class.\n# TYPE ringway_requests_total counter"
    );
    for (l, v) in &series {
        for (class, n) in v.by_class.iter().enumerate().skip(1) {
            let _ = writeln!(
                out,
                "ringway_requests_total{{{},code=\"{class}xx\"}} {n}",
                labels(l)
            );
        }
    }
    for (name, help, bytes) in [
        (
            "ringway_request_bytes_total",
            "Bytes received from clients (heads and bodies).",
            true,
        ),
        (
            "ringway_response_bytes_total",
            "Bytes sent to clients (heads and bodies).",
            false,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (l, v) in &series {
            let n = if bytes { v.bytes_in } else { v.bytes_out };
            let _ = writeln!(out, "{name}{{{}}} {n}", labels(l));
        }
    }
    for (name, help, upstream) in [
        (
            "ringway_request_duration_seconds",
            "Time from a request's first byte to its response's last.",
            false,
        ),
        (
            "ringway_upstream_response_seconds",
            "Time from sending a request upstream to its response head.",
            true,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (l, v) in &series {
            let h = if upstream { &v.upstream } else { &v.duration };
            let count: u64 = h.buckets.iter().sum();
            if upstream && count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i];
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{},le=\"{bound}\"}} {cumulative}",
                    labels(l)
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{},le=\"+Inf\"}} {count}", labels(l));
            let _ = writeln!(
                out,
                "{name}_sum{{{}}} {}",
                labels(l),
                h.sum_micros as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{{}}} {count}", labels(l));
        }
    }

    // Endpoints: health is process-wide; in-flight and idle are summed,
    // ejection is counted by the workers that eject.
    let mut endpoints: HashMap<(&str, &str), EndpointReport> = HashMap::new();
    let mut ejected_by: HashMap<(&str, &str), u64> = HashMap::new();
    for r in reports {
        for e in &r.endpoints {
            let key = (e.cluster.as_str(), e.addr.as_str());
            let m = endpoints.entry(key).or_insert_with(|| EndpointReport {
                active: 0,
                idle: 0,
                ..e.clone()
            });
            m.active += e.active;
            m.idle += e.idle;
            *ejected_by.entry(key).or_default() += u64::from(e.ejected);
        }
    }
    let mut endpoints: Vec<_> = endpoints.into_iter().collect();
    endpoints.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, help, kind) in [
        (
            "ringway_endpoint_healthy",
            "1 when the endpoint passes its active health checks (or has none).",
            "gauge",
        ),
        (
            "ringway_endpoint_active_requests",
            "Requests in flight to the endpoint.",
            "gauge",
        ),
        (
            "ringway_endpoint_idle_connections",
            "Idle pooled connections to the endpoint.",
            "gauge",
        ),
        (
            "ringway_endpoint_ejected_workers",
            "Workers that have the endpoint ejected now.",
            "gauge",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((cluster, addr), e) in &endpoints {
            let value = match name {
                "ringway_endpoint_healthy" => u64::from(e.healthy),
                "ringway_endpoint_active_requests" => e.active,
                "ringway_endpoint_idle_connections" => e.idle,
                _ => ejected_by.get(&(*cluster, *addr)).copied().unwrap_or(0),
            };
            let _ = writeln!(
                out,
                "{name}{{cluster=\"{}\",endpoint=\"{}\"}} {value}",
                escape(cluster),
                escape(addr)
            );
        }
    }
    out
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the endpoints for `GET /clusters`, one line each.
pub(crate) fn render_clusters(reports: &[MetricsReport]) -> String {
    let mut rows: HashMap<(String, String), (EndpointReport, u64)> = HashMap::new();
    for r in reports {
        for e in &r.endpoints {
            let row = rows
                .entry((e.cluster.clone(), e.addr.clone()))
                .or_insert_with(|| {
                    (
                        EndpointReport {
                            active: 0,
                            idle: 0,
                            ..e.clone()
                        },
                        0,
                    )
                });
            row.0.active += e.active;
            row.0.idle += e.idle;
            row.1 += u64::from(e.ejected);
        }
    }
    let mut rows: Vec<_> = rows.into_values().collect();
    rows.sort_by(|a, b| (&a.0.cluster, &a.0.addr).cmp(&(&b.0.cluster, &b.0.addr)));
    let mut out = String::new();
    for (e, ejected) in rows {
        let _ = writeln!(
            out,
            "{} {} weight={} health={} active={} idle={} ejected_by_workers={ejected}/{}",
            e.cluster,
            e.addr,
            e.weight,
            if e.healthy { "healthy" } else { "unhealthy" },
            e.active,
            e.idle,
            reports.len()
        );
    }
    out
}

/// Adds one to a worker counter.
pub(crate) fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// Counts something in flight on a worker gauge until dropped.
#[derive(Debug)]
pub(crate) struct Counted<'a>(&'a Cell<u32>);

impl<'a> Counted<'a> {
    /// Counts one more until dropped.
    pub(crate) fn new(counter: &'a Cell<u32>) -> Counted<'a> {
        counter.set(counter.get() + 1);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}
