//! Hot upgrade: a new process (`ringway --upgrade`) takes the running
//! one's listening sockets over a Unix socket (`SCM_RIGHTS`), starts its
//! workers on them, and only then tells the old one to drain. Both accept
//! on the same sockets in between, so no connection is refused, and a new
//! process that fails to start leaves the old one serving, untouched (as
//! HAProxy's `-x`, nginx's `USR2` and Pingora's `--upgrade` do).
//!
//! The exchange, on one connection to `[runtime] upgrade_socket`:
//!
//! 1. old → new: `ringway-upgrade 1\n`, then one `KEY\tCOUNT\n` line per
//!    group of sockets, then `end\n` (length-prefixed); then the sockets,
//!    in that order, at most [`FDS_PER_MESSAGE`] per message.
//! 2. new → old: `ready\n`, once its workers and admin listener run.
//! 3. old → new: `draining\n`; the old process stops accepting, finishes
//!    what it has, and exits 0. The new one takes the upgrade socket's
//!    path for the next upgrade.
//!
//! A socket is keyed by what the configuration says it is for
//! ([`listener_key`], [`admin_key`]), so a listener the new configuration
//! keeps is served on the very sockets the old process served it on.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, getsockopt, recvmsg, sendmsg, sockopt,
};

const HELLO: &str = "ringway-upgrade 1";
/// Descriptors per message: below the kernel's `SCM_MAX_FD` (253).
const FDS_PER_MESSAGE: usize = 200;
/// How long the old process waits for the new one to start its workers
/// (large configurations build their tables first).
const START_WAIT: Duration = Duration::from_secs(120);
/// How long the new process waits for the old one to confirm its drain.
const CONFIRM_WAIT: Duration = Duration::from_secs(30);
/// How long the new process waits for each step of the old one.
const STEP_WAIT: Duration = Duration::from_secs(10);
/// Longest list of keys accepted.
const MAX_INDEX: u32 = 1 << 20;
/// Most sockets accepted from a running process.
const MAX_SOCKETS: usize = 64 * FDS_PER_MESSAGE;

/// The key of a listener's sockets: its configured address, or, when the
/// port is 0 (the kernel picks one), its name and address.
pub(crate) fn listener_key(name: &str, configured: SocketAddr) -> String {
    if configured.port() == 0 {
        format!("listener {name} {configured}")
    } else {
        format!("listener {configured}")
    }
}

/// The key of the admin listener's socket.
pub(crate) fn admin_key(configured: SocketAddr) -> String {
    if configured.port() == 0 {
        "admin".to_owned()
    } else {
        format!("admin {configured}")
    }
}

/// Sockets handed from one process to the next, by key, and the state
/// that is cheap to carry along.
#[derive(Debug, Default)]
pub struct Sockets {
    sockets: Vec<(String, Vec<OwnedFd>)>,
    /// Health-check verdicts: (cluster, endpoint, healthy).
    pub(crate) verdicts: Vec<(String, SocketAddr, bool)>,
    /// The TLS session-ticket keys (`crate::tickets::export`), so that
    /// clients resume their sessions with the new process.
    pub(crate) tickets: Option<String>,
}

impl Sockets {
    /// Takes the health-check verdicts.
    pub(crate) fn take_verdicts(&mut self) -> Vec<(String, SocketAddr, bool)> {
        std::mem::take(&mut self.verdicts)
    }

    /// Adds `fds` under `key`.
    pub(crate) fn push(&mut self, key: String, fds: Vec<OwnedFd>) {
        self.sockets.push((key, fds));
    }

    /// Takes the sockets under `key` (none when there are none).
    pub(crate) fn take(&mut self, key: &str) -> Vec<OwnedFd> {
        match self.sockets.iter().position(|(k, _)| k == key) {
            Some(at) => self.sockets.remove(at).1,
            None => Vec::new(),
        }
    }

    /// Whether some listener of `snapshot` is among the sockets: the
    /// process that handed them over runs (a version of) this
    /// configuration.
    pub fn covers(&self, snapshot: &ringway_config::Snapshot) -> bool {
        snapshot.listeners.iter().any(|l| {
            let key = listener_key(&l.name, l.addr);
            self.sockets.iter().any(|(k, _)| *k == key)
        })
    }

    /// How many sockets are held.
    pub fn len(&self) -> usize {
        self.sockets.iter().map(|(_, fds)| fds.len()).sum()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the upgrade socket lives when `[runtime] upgrade_socket` does not
/// say: the runtime directory systemd made (`RuntimeDirectory=`), else
/// `/run/ringway`.
pub fn default_path() -> PathBuf {
    match std::env::var_os("RUNTIME_DIRECTORY") {
        Some(dir) if !dir.is_empty() => {
            // systemd may list several, separated by ':'.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_owned();
            Path::new(&first).join("upgrade.sock")
        }
        _ => PathBuf::from("/run/ringway/upgrade.sock"),
    }
}

// ----------------------------------------------------------- new process

/// The new process's side, between receiving the sockets and telling the
/// old process to go.
#[derive(Debug)]
pub struct Takeover {
    stream: BufReader<UnixStream>,
}

/// Connects to the running process at `path` and receives its sockets.
pub fn take_over(path: &Path) -> io::Result<(Sockets, Takeover)> {
    let stream = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no running ringway to upgrade from at {}: {e}",
                path.display()
            ),
        )
    })?;
    // Whoever binds the path hands this process its sockets and ticket
    // keys: only a process of this user (or root) is believed.
    let peer = getsockopt(stream.as_raw_fd(), sockopt::PeerCredentials).map_err(io::Error::from)?;
    let me = nix::unistd::geteuid().as_raw();
    if peer.uid() != me && peer.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is served by a process of user {}",
                path.display(),
                peer.uid()
            ),
        ));
    }
    stream.set_read_timeout(Some(STEP_WAIT))?;
    let mut len = [0u8; 4];
    (&stream).read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_INDEX {
        return Err(invalid("the running process sent an index too long"));
    }
    let mut index = vec![0u8; len as usize];
    (&stream).read_exact(&mut index)?;
    let index = String::from_utf8(index).map_err(|_| invalid("index is not UTF-8"))?;
    let mut lines = index.lines();
    if lines.next() != Some(HELLO) {
        return Err(invalid(
            "the running process speaks another upgrade protocol",
        ));
    }
    let mut groups = Vec::new();
    let mut verdicts = Vec::new();
    let mut tickets = None;
    for line in lines {
        if line == "end" {
            break;
        }
        if let Some(keys) = line.strip_prefix("tickets\t") {
            tickets = Some(keys.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("health\t") {
            let mut fields = rest.splitn(3, '\t');
            let healthy = fields.next() == Some("1");
            let addr = fields.next().and_then(|a| a.parse::<SocketAddr>().ok());
            let cluster = fields.next();
            if let (Some(addr), Some(cluster)) = (addr, cluster) {
                verdicts.push((cluster.to_owned(), addr, healthy));
            }
            continue;
        }
        // A line this version does not know (from a newer one) is left out.
        if let Some((key, count)) = line
            .rsplit_once('\t')
            .and_then(|(k, c)| Some((k.to_owned(), c.parse::<usize>().ok()?)))
        {
            groups.push((key, count));
        }
    }
    let total = groups
        .iter()
        .try_fold(0usize, |sum, (_, n)| sum.checked_add(*n))
        .filter(|&n| n <= MAX_SOCKETS)
        .ok_or_else(|| invalid("the running process listed too many sockets"))?;
    let mut fds = Vec::with_capacity(total);
    while fds.len() < total {
        let got = receive_fds(stream.as_raw_fd())?;
        if got.is_empty() {
            return Err(invalid(
                "the running process sent fewer sockets than it listed",
            ));
        }
        fds.extend(got);
    }
    let mut fds = fds.into_iter();
    let mut sockets = Sockets {
        verdicts,
        tickets,
        ..Sockets::default()
    };
    for (key, count) in groups {
        sockets.push(key, fds.by_ref().take(count).collect());
    }
    Ok((
        sockets,
        Takeover {
            stream: BufReader::new(stream),
        },
    ))
}

impl Takeover {
    /// Tells the old process that this one serves, and waits for it to say
    /// that it drains.
    pub fn finish(mut self) -> io::Result<()> {
        // The old process stops its admin listener and answers what it
        // had accepted before it confirms (up to 15 s).
        self.stream.get_ref().set_read_timeout(Some(CONFIRM_WAIT))?;
        self.stream.get_mut().write_all(b"ready\n")?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        if line.trim_end() != "draining" {
            return Err(invalid("the old process did not confirm its drain"));
        }
        Ok(())
    }
}

fn receive_fds(fd: RawFd) -> io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; FDS_PER_MESSAGE]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut out = Vec::new();
    for cmsg in msg.cmsgs() {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this
            // process for this message; nothing else owns them.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes == 0 && out.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(out)
}

// ----------------------------------------------------------- old process

/// Listens on `path` for a new process. Removes a stale socket file left
/// by a process that is gone, but never takes the path from a live one.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something other than a socket is there; not removed",
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another ringway listens there",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    // Whoever connects gets every listening socket: owner only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Takes the upgrade socket's path over from the old process (which has
/// handed over and drains): its file is replaced.
pub fn listen_after_takeover(path: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    listen(path)
}

/// What the upgrade server asks of the process it serves.
pub trait Handover: Send + 'static {
    /// Copies of every listening socket (the admin listener's too).
    fn sockets(&mut self) -> io::Result<Sockets>;
    /// The new process serves: stop the admin listener accepting, and
    /// return once what it accepted is answered.
    fn stop_admin(&mut self);
    /// The new process was told: stop accepting, drain and exit (this may
    /// end the process at once).
    fn upgraded(&mut self);
}

/// Serves new processes on `listener` until one has taken over: for each,
/// takes copies of every listening socket from `process`, hands them over,
/// and when the new process says it serves, tells `process` it was
/// upgraded.
pub fn spawn_server(listener: UnixListener, mut process: impl Handover) -> io::Result<()> {
    std::thread::Builder::new()
        .name("ringway-upgrade".to_owned())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                match hand_over(stream, &mut process) {
                    Ok(()) => return,
                    Err(e) => crate::say!("ringway: upgrade: {e}; still serving"),
                }
            }
        })?;
    Ok(())
}

fn hand_over(stream: UnixStream, process: &mut impl Handover) -> io::Result<()> {
    let peer = getsockopt(stream.as_raw_fd(), sockopt::PeerCredentials).map_err(io::Error::from)?;
    let me = nix::unistd::geteuid().as_raw();
    if peer.uid() != me && peer.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refused a process of user {}", peer.uid()),
        ));
    }
    crate::say!("ringway: upgrade: process {} takes over", peer.pid());
    let sockets = process.sockets()?;
    send(&stream, &sockets)?;
    // Ours are copies: closing them leaves the sockets open in the
    // workers and in the new process.
    drop(sockets);
    stream.set_read_timeout(Some(START_WAIT))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim_end() != "ready" {
        return Err(invalid(
            "the new process did not start (it closed the upgrade connection)",
        ));
    }
    process.stop_admin();
    // Written before the drain begins: once it does, the process may be
    // gone before a later write.
    (&stream).write_all(b"draining\n")?;
    process.upgraded();
    Ok(())
}

fn send(stream: &UnixStream, sockets: &Sockets) -> io::Result<()> {
    let mut index = format!("{HELLO}\n");
    for (key, fds) in &sockets.sockets {
        index.push_str(&format!("{key}\t{}\n", fds.len()));
    }
    if let Some(keys) = &sockets.tickets {
        index.push_str(&format!("tickets\t{keys}\n"));
    }
    for (cluster, addr, healthy) in &sockets.verdicts {
        let healthy = u8::from(*healthy);
        index.push_str(&format!("health\t{healthy}\t{addr}\t{cluster}\n"));
    }
    index.push_str("end\n");
    let mut out = (index.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(index.as_bytes());
    let mut writer = stream;
    writer.write_all(&out)?;
    let raw: Vec<RawFd> = sockets
        .sockets
        .iter()
        .flat_map(|(_, fds)| fds.iter().map(AsRawFd::as_raw_fd))
        .collect();
    for chunk in raw.chunks(FDS_PER_MESSAGE) {
        let iov = [IoSlice::new(b"F")];
        let cmsg = [ControlMessage::ScmRights(chunk)];
        sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Starts `ringway --upgrade` from this process's own binary and
/// arguments (SIGUSR2, nginx's habit). The binary is the one this process
/// was started from, found again by its path: after a package upgrade
/// replaced the file, that is the new release.
pub fn spawn_successor() -> io::Result<u32> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(original) => PathBuf::from(original),
        None => exe,
    };
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args.iter().any(|a| a == "--upgrade") {
        args.push("--upgrade".into());
    }
    let mut command = std::process::Command::new(&exe);
    command.args(&args);
    // SAFETY: between fork and exec the child only makes one
    // async-signal-safe system call.
    unsafe {
        command.pre_exec(|| {
            // Only stdin, stdout and stderr go over: a client connection
            // this process accepted without CLOEXEC (io_uring's accept
            // does not set it) would otherwise stay open in the new
            // process after this one is gone, and its client would wait.
            // CLOSE_RANGE_CLOEXEC: closed at exec, so that the standard
            // library's own pipe still reports an exec that fails.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    // Reaped here if it fails to start (the old process serves on); once
    // it runs, it outlives this process.
    std::thread::Builder::new()
        .name("ringway-successor".to_owned())
        .spawn(move || {
            if let Ok(status) = child.wait()
                && !status.success()
            {
                crate::say!("ringway: upgrade: process {pid} exited ({status}); still serving");
            }
        })?;
    Ok(pid)
}

/// The sockets of one listener, keyed for the next process.
pub(crate) fn copies(key: String, sockets: &[std::net::TcpListener]) -> (String, Vec<OwnedFd>) {
    let fds = sockets
        .iter()
        .filter_map(|s| s.try_clone().ok().map(OwnedFd::from))
        .collect();
    (key, fds)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::mpsc;

    /// Hands over `tcp` (two as a listener, one as the admin) and says
    /// when it was told it was upgraded.
    struct Fake {
        tcp: Vec<std::net::TcpListener>,
        upgraded: mpsc::Sender<()>,
    }

    impl Handover for Fake {
        fn sockets(&mut self) -> io::Result<Sockets> {
            let mut sockets = Sockets::default();
            let (key, fds) = copies("listener a".to_owned(), &self.tcp[..2]);
            sockets.push(key, fds);
            let (key, fds) = copies("admin".to_owned(), &self.tcp[2..]);
            sockets.push(key, fds);
            sockets.verdicts = vec![
                ("app".to_owned(), "10.0.0.1:80".parse().unwrap(), false),
                ("a b".to_owned(), "[::1]:8080".parse().unwrap(), true),
            ];
            Ok(sockets)
        }

        fn stop_admin(&mut self) {}

        fn upgraded(&mut self) {
            let _ = self.upgraded.send(());
        }
    }

    #[test]
    fn sockets_cross_a_unix_socket_in_order_under_their_keys() {
        let dir = std::env::temp_dir().join(format!("ringway-upgrade-test-{}", std::process::id()));
        let path = dir.join("upgrade.sock");
        let listener = listen(&path).unwrap();
        // A second process may not take a live path.
        assert_eq!(listen(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        let tcp: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = tcp.iter().map(|t| t.local_addr().unwrap().port()).collect();
        let (upgraded, told) = mpsc::channel();
        spawn_server(listener, Fake { tcp, upgraded }).unwrap();
        let (mut got, takeover) = take_over(&path).unwrap();
        assert_eq!(got.len(), 3);
        let port = |fd: OwnedFd| std::net::TcpListener::from(fd).local_addr().unwrap().port();
        let a: Vec<u16> = got.take("listener a").into_iter().map(port).collect();
        assert_eq!(a, ports[..2]);
        let admin: Vec<u16> = got.take("admin").into_iter().map(port).collect();
        assert_eq!(admin, ports[2..]);
        assert!(got.take("listener b").is_empty());
        assert_eq!(
            got.take_verdicts(),
            vec![
                ("app".to_owned(), "10.0.0.1:80".parse().unwrap(), false),
                ("a b".to_owned(), "[::1]:8080".parse().unwrap(), true),
            ]
        );
        takeover.finish().unwrap();
        assert!(
            told.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the old process was not told to drain"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
