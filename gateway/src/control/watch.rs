//! Watching the configuration file with inotify.
//!
//! The directory is watched, not the file: editors save by writing a new
//! file and renaming it over the old one, and Kubernetes ConfigMap mounts
//! swap a `..data` symlink; both replace the inode a file watch would hold.
//! Every relevant event asks the control thread to reload, which skips
//! files whose content did not change.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::mpsc;

use inotify::{Inotify, WatchMask};

use super::events::{Cause, Event};

/// Starts a thread that sends [`Event::Reload`] when `path` may have changed.
pub(super) fn spawn(path: &Path, events: mpsc::Sender<Event>) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => Path::new(".").to_owned(),
    };
    let Some(name) = path.file_name().map(OsStr::to_owned) else {
        return Err(std::io::Error::other(
            "the configuration path names no file",
        ));
    };
    let mut inotify = Inotify::init()?;
    inotify.watches().add(
        &dir,
        WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::DELETE,
    )?;
    std::thread::Builder::new()
        .name("ringway-watch".to_owned())
        .spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                let Ok(batch) = inotify.read_events_blocking(&mut buffer) else {
                    return;
                };
                let relevant = batch.into_iter().any(|e| {
                    e.name.is_some_and(|n| {
                        // `..data` and friends: a ConfigMap's atomic swap.
                        n == name || n.as_encoded_bytes().starts_with(b"..")
                    })
                });
                if relevant {
                    let event = Event::Reload {
                        cause: Cause::FileChanged,
                        reply: None,
                    };
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(())
}
