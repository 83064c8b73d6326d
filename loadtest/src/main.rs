//! `ringload`: the load generator (`ringload run URL`) and benchmark origin
//! (`ringload serve`) that ship with ringway. See the library's docs for
//! the design; this file only turns the command line into options.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use ringload::duration::{Delay, parse_duration};
use ringload::run::RunOptions;
use ringload::serve::ServeOptions;
use ringload::tls::Trust;
use ringload::{histogram, runtime, serve, tls};

/// ringload: load generator and benchmark origin for ringway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate load against a URL and report throughput and latency.
    Run(RunArgs),
    /// Serve a fast benchmark origin (HTTP/1.1, h2c, TLS with h2).
    Serve(ServeArgs),
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The URL to load (http:// or https://).
    url: String,
    /// Connections in total.
    #[arg(short = 'c', long, default_value_t = 10)]
    connections: usize,
    /// Threads; each owns its share of the connections and is pinned to a core.
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Measured duration (10s unless -n is given).
    #[arg(short = 'd', long, value_parser = duration_arg)]
    duration: Option<Duration>,
    /// Measured requests in total.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Open loop: total requests per second, spread evenly over the
    /// connections; latency counts from when each request was due.
    #[arg(short = 'R', long)]
    rate: Option<f64>,
    /// HTTP/1.1 pipeline depth (closed loop only).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Speak HTTP/2: h2c with prior knowledge on http://, h2 by ALPN on https://.
    #[arg(long)]
    h2: bool,
    /// HTTP/2 concurrent streams per connection.
    #[arg(short = 'm', long, default_value_t = 1)]
    streams: usize,
    /// Request method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// Request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body from a file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Accept any server certificate (https).
    #[arg(long, short = 'k')]
    insecure: bool,
    /// Trust the CA certificates in this PEM file (https).
    #[arg(long, conflicts_with = "insecure")]
    cacert: Option<PathBuf>,
    /// Run this long first and leave it out of the figures.
    #[arg(long, value_parser = duration_arg, default_value = "0s")]
    warmup: Duration,
    /// Per-request deadline; requests still in flight at the end get this long.
    #[arg(long, value_parser = duration_arg, default_value = "5s")]
    timeout: Duration,
    /// Deadline for connecting (TCP, TLS and h2 handshakes).
    #[arg(long, value_parser = duration_arg, default_value = "2s")]
    connect_timeout: Duration,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the latency histogram here (HdrHistogram percentile distribution, ms).
    #[arg(long)]
    hist: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: std::net::SocketAddr,
    /// Worker threads (default: one per allowed CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Delay before each response: `10ms`, `uniform:1ms..20ms` or `exp:5ms`.
    #[arg(long, default_value = "0s")]
    delay: String,
    /// Response status code.
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Answer with the request's head and body.
    #[arg(long)]
    echo: bool,
    /// Value of the `x-ringload-server` header on every response.
    #[arg(long, default_value = "ringload")]
    name: String,
    /// TLS certificate chain (PEM); with --key, every connection is TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringload: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let body = match (&a.body, &a.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(path)) => {
            Bytes::from(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        (None, None) => Bytes::new(),
    };
    let trust = match (&a.cacert, a.insecure) {
        (Some(path), _) => Some(Trust::CaFile(path.clone())),
        (None, true) => Some(Trust::Insecure),
        (None, false) => None,
    };
    let opts = RunOptions {
        url: a.url,
        connections: a.connections,
        threads: a.threads,
        duration: a.duration,
        requests: a.requests,
        rate: a.rate,
        pipeline: a.pipeline,
        h2: a.h2,
        streams: a.streams,
        method: a.method,
        headers: a.headers,
        body,
        trust,
        warmup: a.warmup,
        timeout: a.timeout,
        connect_timeout: a.connect_timeout,
        progress: !a.quiet,
    };
    let summary = ringload::run::run(&opts)?;
    if let (Some(path), Some(h)) = (&a.hist, &summary.histogram) {
        std::fs::write(path, histogram::percentile_distribution(h))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
        if summary.target_held == Some(false) {
            eprintln!(
                "ringload: WARNING: the offered rate was NOT held: {:.1}/s achieved of {:.1}/s offered",
                summary.achieved_rate,
                summary.offered_rate.unwrap_or_default()
            );
        }
    } else {
        print!("{}", summary.table());
    }
    Ok(if summary.requests == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Block the signals before the workers start so that only the
    // iterator below sees them.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let tls = match (&a.cert, &a.key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let workers = a
        .workers
        .unwrap_or_else(|| runtime::allowed_cpus().len().max(1));
    let protocols = if tls.is_some() {
        "TLS (h2, http/1.1 by ALPN)"
    } else {
        "http/1.1 + h2c"
    };
    let origin = serve::start(ServeOptions {
        listen: a.listen,
        workers,
        body_size: a.body_size,
        delay: Delay::parse(&a.delay)?,
        status: a.status,
        echo: a.echo,
        name: a.name,
        tls,
    })?;
    println!(
        "ringload serve: listening on {} ({workers} worker(s) on io_uring, {protocols}); stats at {}",
        origin.addr,
        serve::STATS_PATH
    );
    let _ = std::io::stdout().flush();
    let _ = signals.forever().next();
    println!(
        "ringload serve: stats {}",
        serde_json::to_string(&origin.stats.totals())?
    );
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}
