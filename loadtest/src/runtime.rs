//! One io_uring runtime per thread, pinned to a core, as the gateway runs.
//! There is no silent epoll fallback: a benchmark tool that quietly
//! changed its I/O model would measure something else than it says.

use std::io;

use monoio::{IoUringDriver, RuntimeBuilder};

use crate::{Error, Result};

/// The runtime every ringload thread runs on.
pub type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<IoUringDriver>>;

/// Builds an io_uring runtime with the setup flags that cut CPU per request
/// on current kernels (the ring is only touched by this thread, so
/// SINGLE_ISSUER and DEFER_TASKRUN hold), falling back to a plain ring on
/// kernels older than 6.1 that reject them.
pub fn build() -> Result<UringRuntime> {
    let mut tuned = io_uring::IoUring::builder();
    tuned
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    let built = match RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(1024)
        .uring_builder(tuned)
        .enable_timer()
        .build()
    {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(1024)
            .enable_timer()
            .build(),
        other => other,
    };
    built.map_err(|e| Error::Runtime(explain(&e)))
}

fn explain(e: &io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::ENOMEM) => {
            "RLIMIT_MEMLOCK is too low for this user; raise it (`ulimit -l`, systemd \
             `LimitMEMLOCK=`, or the container's memlock limit)"
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "io_uring is not permitted (seccomp, or sysctl kernel.io_uring_disabled)"
        }
        Some(libc::ENOSYS) => "this kernel has no io_uring (Linux 5.11 or newer is needed)",
        _ => "io_uring_setup failed",
    };
    format!("cannot start io_uring ({e}): {why}")
}

/// The CPUs this process may run on, in order (honours `taskset`).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bitmask; all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size passed is that of `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` was filled by sched_getaffinity above.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`; failure is reported, not fatal, since
/// a container may forbid it and the run is still valid (just noisier).
pub fn pin_to(cpu: usize) {
    if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
        eprintln!("ringload: cannot pin a thread to CPU {cpu}: {e}");
    }
}
