//! systemd's readiness protocol (`Type=notify`): a datagram to
//! `$NOTIFY_SOCKET`, when systemd set one. After a hot upgrade the new
//! process names itself the service's main process (`MAINPID=`), so that
//! `systemctl reload` and the next upgrade's signal reach it; the unit
//! needs `NotifyAccess=all` for that. Without `$NOTIFY_SOCKET` nothing is
//! sent.

use std::os::unix::net::UnixDatagram;

/// Tells systemd this process serves; `main` also makes it the service's
/// main process (after taking over from another).
pub fn ready(main: bool) {
    let state = if main {
        format!("MAINPID={}\nREADY=1\n", std::process::id())
    } else {
        "READY=1\n".to_owned()
    };
    if let Err(e) = send(&state) {
        crate::say!("ringway: cannot notify systemd: {e}");
    }
}

fn send(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = UnixDatagram::unbound()?;
    let path = path.to_string_lossy().into_owned();
    match path.strip_prefix('@') {
        // An abstract socket: its name follows the '@'.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_goes_to_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("ringway-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this is the only test that touches NOTIFY_SOCKET, and it
        // reads it back on this thread.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        send("MAINPID=42\nREADY=1\n").unwrap();
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=42\nREADY=1\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
