//! What a run measured, as a table for people and as one JSON object for
//! scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::duration::human_us;
use crate::histogram::{self, Latency, Percentiles};
use crate::run::{ErrorKind, RunOptions, Tally};

/// The share of the offered rate an open-loop run must achieve to count
/// as having held it.
pub const HELD: f64 = 0.99;

/// Errors by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Errors {
    /// Connect, TLS or h2 handshake failures.
    pub connect: u64,
    /// Requests without a complete answer in time.
    pub timeout: u64,
    /// Connections closed or reset under a request.
    pub reset: u64,
    /// Invalid HTTP from the server.
    pub protocol: u64,
    /// All of them.
    pub total: u64,
}

/// A run's results.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// The URL loaded.
    pub url: String,
    /// `http/1.1` or `h2`.
    pub protocol: String,
    /// Over TLS?
    pub tls: bool,
    /// `closed` or `open`.
    pub mode: String,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// HTTP/1.1 pipeline depth.
    pub pipeline: usize,
    /// h2 streams per connection.
    pub streams: usize,
    /// Warm-up excluded from the figures, seconds.
    pub warmup_s: f64,
    /// Measured time, seconds (the duration, or until the last response
    /// of a `-n` run).
    pub duration_s: f64,
    /// Open loop: requests per second asked for.
    pub offered_rate: Option<f64>,
    /// Responses per second in the measured window.
    pub achieved_rate: f64,
    /// Open loop: achieved at least 99% of offered.
    pub target_held: Option<bool>,
    /// Responses received in the measured window (any status).
    pub requests: u64,
    /// Open loop: requests due in the window that were never sent
    /// because their connection was still busy or down.
    pub unsent: u64,
    /// Requests finished during the warm-up (not in any other figure).
    pub warmup_requests: u64,
    /// Connections opened, reconnects included.
    pub connects: u64,
    /// Response body bytes received.
    pub body_bytes: u64,
    /// Responses by status code.
    pub status: BTreeMap<String, u64>,
    /// Errors by kind.
    pub errors: Errors,
    /// The first message seen for each kind of error.
    pub first_errors: BTreeMap<String, String>,
    /// Latency in µs: from the intended send time in open loop, from the
    /// actual send in closed loop.
    pub latency_us: Percentiles,
    /// Open loop: how late requests left against their schedule, µs (the
    /// generator's own lag; part of `latency_us`).
    pub send_lag_us: Percentiles,
    /// The latency histogram itself, for `--hist`.
    #[serde(skip)]
    pub histogram: Option<Latency>,
}

impl Summary {
    /// Builds the summary of a finished run.
    pub(crate) fn new(
        opts: &RunOptions,
        measure_start: std::time::Instant,
        tls: bool,
        threads: usize,
        tally: Tally,
    ) -> Summary {
        let duration = match opts.duration {
            Some(d) => d.as_secs_f64(),
            None => tally.last_done.map_or(0.0, |t| {
                t.saturating_duration_since(measure_start).as_secs_f64()
            }),
        };
        let achieved = if duration > 0.0 {
            tally.responses as f64 / duration
        } else {
            0.0
        };
        let offered = opts.rate;
        let target_held = offered.map(|r| achieved >= r * HELD);
        let status = tally
            .status
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code.to_string(), *n))
            .collect();
        let e = &tally.errors;
        let errors = Errors {
            connect: e[ErrorKind::Connect as usize],
            timeout: e[ErrorKind::Timeout as usize],
            reset: e[ErrorKind::Reset as usize],
            protocol: e[ErrorKind::Protocol as usize],
            total: tally.error_total(),
        };
        let first_errors = ErrorKind::ALL
            .iter()
            .filter_map(|k| {
                Some((
                    k.name().to_string(),
                    tally.first_error[*k as usize].clone()?,
                ))
            })
            .collect();
        Summary {
            url: opts.url.clone(),
            protocol: if opts.h2 { "h2" } else { "http/1.1" }.into(),
            tls,
            mode: if offered.is_some() { "open" } else { "closed" }.into(),
            connections: opts.connections,
            threads,
            pipeline: if opts.h2 { 1 } else { opts.pipeline.max(1) },
            streams: if opts.h2 { opts.streams.max(1) } else { 1 },
            warmup_s: opts.warmup.as_secs_f64(),
            duration_s: duration,
            offered_rate: offered,
            achieved_rate: achieved,
            target_held,
            requests: tally.responses,
            unsent: tally.unsent,
            warmup_requests: tally.warmup,
            connects: tally.connects,
            body_bytes: tally.body_bytes,
            status,
            errors,
            first_errors,
            latency_us: histogram::percentiles(&tally.latency),
            send_lag_us: histogram::percentiles(&tally.lag),
            histogram: Some(tally.latency),
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let tls = if self.tls { " over TLS" } else { "" };
        let shape = if self.protocol == "h2" {
            format!("{} streams/connection", self.streams)
        } else {
            format!("pipeline {}", self.pipeline)
        };
        let _ = writeln!(
            out,
            "ringload: {} — {}{tls}, {} connection(s) ({shape}), {} thread(s), {} loop, {:.2}s measured{}",
            self.url,
            self.protocol,
            self.connections,
            self.threads,
            self.mode,
            self.duration_s,
            if self.warmup_s > 0.0 {
                format!(" after {:.2}s warm-up", self.warmup_s)
            } else {
                String::new()
            }
        );
        let _ = writeln!(out);
        let from = if self.mode == "open" {
            "from intended send time (coordinated omission corrected)"
        } else {
            "from send time"
        };
        let _ = writeln!(out, "  latency, {from}");
        let p = &self.latency_us;
        let _ = writeln!(
            out,
            "  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "stdev"
        );
        let _ = writeln!(
            out,
            "  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            human_us(p.p50 as f64),
            human_us(p.p90 as f64),
            human_us(p.p99 as f64),
            human_us(p.p99_9 as f64),
            human_us(p.p99_99 as f64),
            human_us(p.max as f64),
            human_us(p.mean),
            human_us(p.stdev)
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  requests   {:>12}   {:.1}/s",
            self.requests, self.achieved_rate
        );
        if let Some(offered) = self.offered_rate {
            let pct = 100.0 * self.achieved_rate / offered;
            let _ = writeln!(
                out,
                "  offered    {:>12.1}/s achieved {:.1}/s ({pct:.2}%), unsent {}, send lag p99 {} max {}",
                offered,
                self.achieved_rate,
                self.unsent,
                human_us(self.send_lag_us.p99 as f64),
                human_us(self.send_lag_us.max as f64),
            );
        }
        let statuses: Vec<String> = self
            .status
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  status     {}",
            if statuses.is_empty() {
                "none".into()
            } else {
                statuses.join(", ")
            }
        );
        let e = &self.errors;
        let _ = writeln!(
            out,
            "  errors     {} (connect {}, timeout {}, reset {}, protocol {})",
            e.total, e.connect, e.timeout, e.reset, e.protocol
        );
        for (kind, msg) in &self.first_errors {
            let _ = writeln!(out, "             first {kind} error: {msg}");
        }
        let _ = writeln!(
            out,
            "  transfer   {} body bytes, {} connection(s) opened, {} warm-up request(s)",
            self.body_bytes, self.connects, self.warmup_requests
        );
        if self.target_held == Some(false) {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "  WARNING: the offered rate was NOT held: {:.1}/s achieved of {:.1}/s offered ({:.2}%, {} unsent).",
                self.achieved_rate,
                self.offered_rate.unwrap_or_default(),
                100.0 * self.achieved_rate / self.offered_rate.unwrap_or(1.0),
                self.unsent
            );
            let _ = writeln!(
                out,
                "  WARNING: the server (or this generator) could not keep up; the latencies above include that queueing."
            );
        }
        out
    }
}
