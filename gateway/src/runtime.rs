//! Worker threads: one per core, pinned, each on its own io_uring (or,
//! only when asked, epoll) runtime.

use std::io;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use ringway_config::IoDriver;

/// What a worker's runtime turned out to be, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// The driver in use.
    pub driver: IoDriver,
    /// The io_uring setup flags in use, if any.
    pub flags: &'static str,
}

impl std::fmt::Display for DriverInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.driver {
            IoDriver::Uring if self.flags.is_empty() => f.write_str("io_uring"),
            IoDriver::Uring => write!(f, "io_uring ({})", self.flags),
            IoDriver::Epoll => f.write_str("epoll"),
        }
    }
}

/// Runs `work` on a new runtime of the requested kind on this thread.
/// `ready` is called once the runtime exists (with what it is) or could
/// not be made (with why, in words an operator can act on).
pub(crate) fn run<F, Fut>(io: IoDriver, ready: impl FnOnce(Result<DriverInfo, String>), work: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    match io {
        IoDriver::Uring => match build_uring() {
            Ok((mut rt, info)) => {
                ready(Ok(info));
                rt.block_on(work());
            }
            Err(e) => ready(Err(explain_uring_error(&e))),
        },
        IoDriver::Epoll => match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
            Ok(mut rt) => {
                ready(Ok(DriverInfo {
                    driver: IoDriver::Epoll,
                    flags: "",
                }));
                rt.block_on(work());
            }
            Err(e) => ready(Err(format!("cannot start the epoll driver: {e}"))),
        },
    }
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<IoUringDriver>>;

/// Builds an io_uring runtime, first with the setup flags that cut CPU per
/// request on current kernels (the ring is only ever touched by this
/// thread, so SINGLE_ISSUER and DEFER_TASKRUN hold), then without them for
/// kernels older than 6.1.
fn build_uring() -> io::Result<(UringRuntime, DriverInfo)> {
    // For side-by-side measurement of the flags (benches/RESULTS.md).
    if std::env::var_os("RINGWAY_PLAIN_RING").is_some() {
        let rt = RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .build()?;
        return Ok((
            rt,
            DriverInfo {
                driver: IoDriver::Uring,
                flags: "",
            },
        ));
    }
    let mut tuned = io_uring::IoUring::builder();
    tuned
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    match RuntimeBuilder::<IoUringDriver>::new()
        .uring_builder(tuned)
        .enable_timer()
        .build()
    {
        Ok(rt) => Ok((
            rt,
            DriverInfo {
                driver: IoDriver::Uring,
                flags: "coop_taskrun, single_issuer, defer_taskrun",
            },
        )),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let rt = RuntimeBuilder::<IoUringDriver>::new()
                .enable_timer()
                .build()?;
            Ok((
                rt,
                DriverInfo {
                    driver: IoDriver::Uring,
                    flags: "",
                },
            ))
        }
        Err(e) => Err(e),
    }
}

/// Says why io_uring could not start and what the operator can change.
pub(crate) fn explain_uring_error(e: &io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::ENOMEM) => {
            "the ring could not lock its memory: RLIMIT_MEMLOCK is too low for this user. \
             Raise it (`ulimit -l`, systemd `LimitMEMLOCK=`, or the container's memlock limit)"
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "io_uring is not permitted here: a seccomp profile blocks io_uring_setup (Docker's \
             default has since 25.0), or sysctl kernel.io_uring_disabled is set. Allow \
             io_uring_setup/io_uring_enter/io_uring_register (Docker: `--security-opt \
             seccomp=deploy/seccomp-io-uring.json`; Kubernetes: a Localhost seccompProfile \
             with that file, see deploy/kubernetes/), or clear the sysctl"
        }
        Some(libc::ENOSYS) => "this kernel has no io_uring (Linux 5.11 or newer is needed)",
        _ => "io_uring_setup failed",
    };
    format!(
        "cannot start io_uring ({e}): {why}; or run on epoll with `--io epoll` / [runtime] io = \"epoll\""
    )
}

/// The CPUs this process may run on, in order (honours `taskset`).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask the kernel fills; sizes match.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size is that of `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: `set` was initialised by sched_getaffinity above.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_to(cpu: usize) -> Result<(), String> {
    monoio::utils::bind_to_cpu_set([cpu]).map_err(|e| format!("cannot pin to CPU {cpu}: {e}"))
}
