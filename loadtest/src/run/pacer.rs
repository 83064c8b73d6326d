//! Sub-millisecond waits for the open-loop schedule.
//!
//! monoio's timers tick once a millisecond, so a request due at 10.2 ms
//! leaves at 11 ms or later; in open loop that lag is latency (it counts
//! from the due time), and measured ~0.8 ms at the median here, more than
//! a fast server's whole answer. A timerfd armed for the exact due time
//! and read through io_uring wakes within tens of microseconds instead,
//! without a spinning core or an extra thread.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Instant;

/// One lane's timer; falls back to monoio's timer when a timerfd cannot
/// be had (never seen on Linux, but no reason to fail a run over it).
#[derive(Debug)]
pub(super) struct Pacer {
    timer: Option<(i32, monoio::fs::File)>,
    buf: Option<Vec<u8>>,
}

impl Pacer {
    pub(super) fn new() -> Pacer {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        let timer = (fd >= 0)
            .then(|| {
                // SAFETY: `fd` is a descriptor we just created and own.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                monoio::fs::File::from_std(std::fs::File::from(owned))
                    .ok()
                    .map(|f| (fd, f))
            })
            .flatten();
        Pacer {
            timer,
            buf: Some(vec![0u8; 8]),
        }
    }

    /// Returns at `due` (at once if it has passed).
    pub(super) async fn wait_until(&mut self, due: Instant) {
        let now = Instant::now();
        if due <= now {
            return;
        }
        if let (Some((fd, file)), Some(buf)) = (&self.timer, self.buf.take()) {
            if arm(*fd, due - now) {
                // Reads the expiry count (8 bytes) once the timer fires.
                let (res, buf) = file.read_at(buf, 0).await;
                self.buf = Some(buf);
                if res.is_ok() {
                    return;
                }
            } else {
                self.buf = Some(buf);
            }
        }
        monoio::time::sleep_until(monoio::time::Instant::from_std(due)).await;
    }
}

/// Arms `fd` to fire once, `after` from now on CLOCK_MONOTONIC (the clock
/// behind `Instant`), as an absolute time so that the delay between
/// reading the clock and arming does not add up.
fn arm(fd: i32, after: std::time::Duration) -> bool {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the kernel to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return false;
    }
    let nanos = now.tv_nsec as u64 + u64::from(after.subsec_nanos());
    let at = libc::timespec {
        tv_sec: now.tv_sec
            + after.as_secs() as libc::time_t
            + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: at,
    };
    // SAFETY: `fd` is our open timerfd; `spec` is valid; no old value asked.
    unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) == 0 }
}
