//! `ringload run URL`: the load generator.
//!
//! `-t` threads, each pinned with its own io_uring runtime, own the `-c`
//! connections between them. Closed loop sends the next request when the
//! previous answer is in; open loop (`-R`) sends on a fixed schedule and
//! measures latency from when each request was due. The main thread only
//! prints the progress line the workers send it once a second and merges
//! their tallies at the end.

mod h1;
mod h2;
mod options;
mod pacer;
mod recorder;
mod schedule;
mod session;
mod target;
mod worker;

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

pub use self::options::RunOptions;
pub use self::recorder::{ErrorKind, Tally};
use self::schedule::Schedule;
use self::session::{Plan, Protocol, Tick, Tls};
pub use self::target::{RequestTemplate, Target};
use crate::histogram;
use crate::report::Summary;
use crate::tls::{self};
use crate::{Error, Result, runtime};

/// Without `-d`, a `-n` run still ends after this long.
const N_ONLY_LIMIT: Duration = Duration::from_secs(600);
/// Time for the threads to start and connect before the first request.
const LEAD_IN: Duration = Duration::from_millis(100);

/// Runs the load and returns what was measured.
pub fn run(opts: &RunOptions) -> Result<Summary> {
    let plan = Arc::new(plan(opts)?);
    let cpus = runtime::allowed_cpus();
    let (tx, rx) = mpsc::channel::<Tick>();
    let mut threads = Vec::with_capacity(plan.threads);
    for tid in 0..plan.threads {
        let plan = plan.clone();
        let tx = tx.clone();
        let cpu = cpus.get(tid % cpus.len().max(1)).copied();
        let handle = std::thread::Builder::new()
            .name(format!("ringload-run-{tid}"))
            .spawn(move || worker::thread_main(tid, cpu, plan, tx))
            .map_err(|e| Error::io("spawning a load thread", e))?;
        threads.push(handle);
    }
    drop(tx);
    // Spawned tasks outlive `block_on` (the runtime does not drop them), so
    // a ticker's sender can linger: stop when every thread has finished.
    progress(&plan, &rx, opts.progress, || {
        threads.iter().all(|t| t.is_finished())
    });
    let mut tally = Tally::default();
    for t in threads {
        match t.join() {
            Ok(Ok(part)) => tally.merge(&part),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Runtime("a load thread panicked".into())),
        }
    }
    Ok(Summary::new(
        opts,
        plan.schedule.measure_start,
        plan.tls.is_some(),
        plan.threads,
        tally,
    ))
}

fn plan(opts: &RunOptions) -> Result<Plan> {
    let target = Target::parse(&opts.url)?;
    let template = RequestTemplate::new(&opts.method, &opts.headers, opts.body.clone())?;
    if opts.connections == 0 {
        return Err(Error::invalid("-c", "0", "at least one connection"));
    }
    if opts.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(Error::invalid(
            "-R",
            format!("{:?}", opts.rate),
            "a rate above 0",
        ));
    }
    if opts.rate.is_some() && opts.pipeline > 1 {
        return Err(Error::invalid(
            "--pipeline",
            opts.pipeline.to_string(),
            "open loop (-R) sends one request at a time per connection; use more connections",
        ));
    }
    let protocol = if opts.h2 {
        Protocol::H2 {
            streams: opts.streams.max(1),
        }
    } else {
        Protocol::H1 {
            depth: opts.pipeline.max(1),
        }
    };
    let tls = if target.tls {
        let trust = opts.trust.clone().ok_or_else(|| {
            Error::invalid("URL", &opts.url, "https needs --cacert FILE or --insecure")
        })?;
        let alpn: &[&[u8]] = if opts.h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let config = tls::client_config(&trust, alpn)?;
        Some(Tls {
            config,
            name: tls::server_name(&target.host)?,
        })
    } else {
        None
    };
    let threads = opts.threads.clamp(1, opts.connections);
    let start = Instant::now() + LEAD_IN;
    let measure_start = start + opts.warmup;
    let end = match (opts.duration, opts.requests) {
        (Some(d), _) => measure_start + d,
        (None, Some(_)) => measure_start + N_ONLY_LIMIT,
        (None, None) => measure_start + Duration::from_secs(10),
    };
    let lanes = match protocol {
        Protocol::H1 { .. } => opts.connections,
        Protocol::H2 { streams } => opts.connections * streams,
    } as u64;
    let end_slot = match (opts.rate, opts.requests) {
        (Some(rate), Some(n)) => Some((opts.warmup.as_secs_f64() * rate).ceil() as u64 + n),
        _ => None,
    };
    let h1_len = template.h1_bytes(&target, 1).len();
    let depth = match protocol {
        Protocol::H1 { depth } => depth,
        Protocol::H2 { .. } => 1,
    };
    Ok(Plan {
        h1_bytes: template.h1_bytes(&target, depth),
        h1_len,
        h2_uri: template.h2_uri(&target)?,
        head: template.method == http::Method::HEAD,
        schedule: Schedule {
            start,
            measure_start,
            end,
            hard_end: end + opts.timeout,
            rate: opts.rate,
            lanes,
            end_slot,
        },
        timeout: opts.timeout,
        connect_timeout: opts.connect_timeout,
        connections: opts.connections,
        threads,
        requests: if opts.rate.is_some() {
            None
        } else {
            opts.requests
        },
        target,
        template,
        protocol,
        tls,
    })
}

/// Prints a line per second until every thread has reported its last tick
/// (the channel closes when they are all gone).
fn progress(plan: &Plan, rx: &mpsc::Receiver<Tick>, print: bool, finished: impl Fn() -> bool) {
    let s = &plan.schedule;
    let mut cumulative = histogram::new();
    let mut next = s.start + Duration::from_secs(1) + Duration::from_millis(50);
    let (mut responses, mut errors) = (0u64, 0u64);
    let mut total_errors = 0u64;
    loop {
        // Short waits so that the end of the run is noticed promptly.
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(20));
        match rx.recv_timeout(wait) {
            Ok(tick) => {
                responses += tick.interval.responses;
                errors += tick.interval.errors;
                let _ = cumulative.add(&tick.interval.latency);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if finished() => {
                // Drain the final ticks the threads sent before finishing.
                while rx.try_recv().is_ok() {}
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < next => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        total_errors += errors;
        if print {
            let elapsed = next
                .saturating_duration_since(s.start)
                .as_secs_f64()
                .floor();
            let phase = if next <= s.measure_start + Duration::from_millis(50) {
                " (warm-up)"
            } else {
                ""
            };
            eprintln!(
                "ringload: {elapsed:4.0}s  {responses:>9} req/s  errors {total_errors}  p99 so far {}{phase}",
                crate::duration::human_us(cumulative.value_at_quantile(0.99) as f64)
            );
        }
        responses = 0;
        errors = 0;
        next += Duration::from_secs(1);
    }
}
