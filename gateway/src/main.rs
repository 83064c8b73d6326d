//! The `ringway` command: run the gateway, check a configuration, and
//! print what packaging needs (completions, man page, the file's schema,
//! a health probe for container runtimes without curl).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use ringway::Options;
use ringway::control::{self, Cause, Event, Supervisor};
use ringway::upgrade;
use ringway_config::{DEFAULT_CONFIG, IoDriver, compile_str, load_file};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

/// mimalloc rather than glibc's malloc: a request allocates a few KiB
/// blocks (a stream's task) among many small ones, and glibc consolidated
/// its fast bins on each of those larger requests (malloc_consolidate,
/// unlink_chunk: ~2% of the worker's samples under h2 load). Called
/// through `ringway::allocator`, which keeps it on its fast paths.
#[global_allocator]
static ALLOCATOR: ringway::allocator::Mimalloc = ringway::allocator::Mimalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them (madvise) on its arenas, and then a connection's few small blocks
/// pin a 2 MiB page each time the heap grows: measured with 18,000 idle
/// HTTP/1.1 connections, 2.1 KiB per connection and 21 MiB at start with
/// them, 1.7 KiB and 12 MiB without (benches/RESULTS.md). nginx and
/// HAProxy, on glibc's malloc, get none either. `RINGWAY_HUGE_PAGES=1`
/// keeps them, for a comparison.
fn no_huge_pages() {
    if std::env::var_os("RINGWAY_HUGE_PAGES").is_some_and(|v| v == "1") {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only. It applies
    // to every later page fault of the process, including in mappings
    // made before the call.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// ringway: an edge gateway and mesh proxy, thread-per-core on io_uring.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file; without it ringway runs a built-in default on
    /// 127.0.0.1:8080.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Worker threads (default: the file's [runtime] workers, or one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// I/O driver (default: the file's [runtime] io, or uring).
    #[arg(long, value_enum)]
    io: Option<Io>,
    /// Take over from the ringway running on the same upgrade socket
    /// (`[runtime] upgrade_socket`): receive its listening sockets, start,
    /// then tell it to drain and exit. SIGUSR2 to a running ringway does
    /// this with its own binary and arguments.
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and print what it would serve.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the configuration file, for editors
    /// (taplo, Even Better TOML) and validators.
    Schema,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `ringway manpage > ringway.1`.
    Manpage,
    /// Ask the admin listener for a path; exit 0 on 200 (a container
    /// HEALTHCHECK that needs no curl in the image).
    Health {
        /// The admin listener's address ([admin] listen).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// The path to GET: /healthz (alive) or /ready.
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Io {
    Uring,
    Epoll,
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { file }) => check(&file),
        Some(Command::Schema) => {
            println!("{}", ringway_config::schema::json_schema());
            ExitCode::SUCCESS
        }
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ringway",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Some(Command::Manpage) => {
            let mut out = std::io::stdout().lock();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    ringway::say!("ringway: cannot write the man page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Health { admin, path }) => match probe(&admin, &path) {
            Ok(200) => ExitCode::SUCCESS,
            Ok(status) => {
                ringway::say!("ringway: {admin}{path} answered {status}");
                ExitCode::FAILURE
            }
            Err(e) => {
                ringway::say!("ringway: {admin}{path}: {e:#}");
                ExitCode::FAILURE
            }
        },
        None => match run(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                ringway::say!("ringway: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    let before = resident_bytes();
    match load_file(file) {
        Ok(mut snapshot) => {
            for warning in ringway::resolve_once(&mut snapshot, Duration::from_secs(5)) {
                println!("warning: {warning}");
            }
            let tables = snapshot.build_tables(None);
            let held = resident_bytes().saturating_sub(before);
            print!("{}", snapshot.summary());
            println!(
                "memory: about {} KiB to hold this configuration (routes, clusters, TLS), \
                 of which {} KiB are {} balancer table(s) built once and shared by every \
                 worker; a reload holds the old and the new one until the old one's last \
                 request ends",
                held.div_ceil(1024),
                tables.bytes.div_ceil(1024),
                tables.built,
            );
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            ringway::say!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// GETs `path` from the admin listener at `admin` and returns the status,
/// within 2 s for each step.
fn probe(admin: &str, path: &str) -> anyhow::Result<u16> {
    use std::net::ToSocketAddrs;
    let timeout = Duration::from_secs(2);
    let addr = admin
        .to_socket_addrs()
        .context("not an address")?
        .next()
        .context("the name has no address")?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", line.trim_end()))
}

/// This process's resident anonymous memory (the heap, not the code it
/// maps), from `/proc/self/statm`: resident minus file-backed pages, 0
/// where it cannot be read.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let field = |i| {
        statm
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let pages = field(1).saturating_sub(field(2));
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

/// Raises the soft limit on open files to the hard limit: every client and
/// upstream connection is a descriptor, and the usual soft limit (1024)
/// is far below what one worker can serve. Says what it did.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let was = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            ringway::say!(
                "ringway: open file limit raised from {was} to {}",
                limit.rlim_max
            );
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    raise_file_limit();
    let snapshot = match &cli.config {
        Some(path) => load_file(path)?,
        None => {
            ringway::say!(
                "ringway: no --config given; running the built-in default (see examples/ringway.toml)"
            );
            compile_str("<built-in>", DEFAULT_CONFIG)?
        }
    };
    // A new release takes the running one's sockets before it starts
    // anything; if it then fails, the running one serves on, untouched.
    let (inherited, takeover) = if cli.upgrade {
        let path = control::upgrade_path(&snapshot);
        let (sockets, takeover) = upgrade::take_over(&path)?;
        // Another instance's upgrade socket (the default path is shared):
        // taking it over would stop a gateway this configuration does
        // not replace.
        if !sockets.covers(&snapshot) {
            anyhow::bail!(
                "the ringway at {} serves none of this configuration's listeners; \
                 not taking it over (set [runtime] upgrade_socket per instance)",
                path.display()
            );
        }
        ringway::say!(
            "ringway: upgrade: took {} listening socket(s) over through {}",
            sockets.len(),
            path.display()
        );
        (sockets, Some(takeover))
    } else {
        (upgrade::Sockets::default(), None)
    };
    // Signals are taken before the workers start, so that none is missed.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])
        .context("cannot install signal handlers")?;
    let options = Options {
        workers: cli.workers,
        io: cli.io.map(|io| match io {
            Io::Uring => IoDriver::Uring,
            Io::Epoll => IoDriver::Epoll,
        }),
    };
    let supervisor = Supervisor::start(cli.config.clone(), snapshot, &options, inherited)?;
    let gateway = supervisor.gateway();
    ringway::say!(
        "ringway: {} worker(s) on {}",
        gateway.worker_count(),
        gateway.driver()
    );
    for (name, addr) in gateway.listeners() {
        ringway::say!("ringway: listener {name} on {addr}");
    }
    if let Some(addr) = supervisor.admin_addr() {
        ringway::say!("ringway: admin on {addr}");
    }
    let took_over = takeover.is_some();
    if let Some(takeover) = takeover
        && let Err(e) = takeover.finish()
    {
        // The old process serves on: this one steps back rather than
        // share the sockets with it for good.
        ringway::say!("ringway: upgrade: {e}; this process stops, the old one serves on");
        let _ = supervisor.sender().send(Event::Shutdown);
        supervisor.run();
        anyhow::bail!("the upgrade was not confirmed by the old process");
    }
    if took_over {
        ringway::say!("ringway: upgrade: serving; the old process drains");
    }
    match supervisor.serve_upgrades(took_over) {
        Ok(path) => ringway::say!("ringway: upgrade socket {}", path.display()),
        Err(e) => ringway::say!("ringway: hot upgrade off: {e}"),
    }
    ringway::notify::ready(took_over);
    let events = supervisor.sender();
    std::thread::Builder::new()
        .name("ringway-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                let event = if signal == SIGHUP {
                    Event::Reload {
                        cause: Cause::Signal,
                        reply: None,
                    }
                } else if signal == SIGUSR1 {
                    Event::ReopenLogs
                } else if signal == SIGUSR2 {
                    match upgrade::spawn_successor() {
                        Ok(pid) => {
                            ringway::say!("ringway: SIGUSR2: started process {pid} to take over")
                        }
                        Err(e) => {
                            ringway::say!("ringway: SIGUSR2: cannot start a new process: {e}")
                        }
                    }
                    continue;
                } else {
                    ringway::say!("ringway: signal {signal}: draining");
                    Event::Shutdown
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the signal thread")?;
    supervisor.run();
    ringway::say!("ringway: stopped");
    Ok(())
}
