//! Watching the configuration file, and the endpoints files its clusters
//! discover endpoints from, with inotify.
//!
//! Directories are watched, not files: editors save by writing a new file
//! and renaming it over the old one, tools that publish endpoints
//! (consul-template, a Kubernetes sidecar) do the same or swap a symlink,
//! and Kubernetes ConfigMap mounts swap a `..data` symlink; all replace the
//! inode a file watch would hold. Every relevant event asks the control
//! thread to reload, which skips a reload that would change nothing.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};

use super::events::{Cause, Event};

/// The watched files, by the directory watch that sees them.
type Names = Arc<Mutex<HashMap<WatchDescriptor, HashSet<OsString>>>>;

/// The files being watched; more can be added while it runs.
#[derive(Debug)]
pub(super) struct Watcher {
    watches: Watches,
    names: Names,
}

impl Watcher {
    /// Starts a thread that sends [`Event::Reload`] when one of `files`
    /// may have changed.
    pub(super) fn spawn(
        files: &[PathBuf],
        events: mpsc::Sender<Event>,
    ) -> std::io::Result<Watcher> {
        let mut inotify = Inotify::init()?;
        let watcher = Watcher {
            watches: inotify.watches(),
            names: Arc::default(),
        };
        watcher.watch(files)?;
        let names = watcher.names.clone();
        std::thread::Builder::new()
            .name("ringway-watch".to_owned())
            .spawn(move || {
                let mut buffer = [0u8; 4096];
                loop {
                    let Ok(batch) = inotify.read_events_blocking(&mut buffer) else {
                        return;
                    };
                    let Ok(names) = names.lock() else { return };
                    let relevant = batch.into_iter().any(|e| {
                        e.name.is_some_and(|n| {
                            // `..data` and friends: a ConfigMap's atomic swap.
                            n.as_encoded_bytes().starts_with(b"..")
                                || names.get(&e.wd).is_some_and(|set| set.contains(n))
                        })
                    });
                    drop(names);
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
        Ok(watcher)
    }

    /// Watches `files` too (those already watched stay).
    pub(super) fn watch(&self, files: &[PathBuf]) -> std::io::Result<()> {
        let mut names = self
            .names
            .lock()
            .map_err(|_| std::io::Error::other("the watcher thread failed"))?;
        for file in files {
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => Path::new(".").to_owned(),
            };
            let Some(name) = file.file_name() else {
                return Err(std::io::Error::other(format!(
                    "{} names no file",
                    file.display()
                )));
            };
            let wd = self.watches.clone().add(
                &dir,
                WatchMask::CLOSE_WRITE
                    | WatchMask::MOVED_TO
                    | WatchMask::CREATE
                    | WatchMask::DELETE,
            )?;
            names.entry(wd).or_default().insert(name.to_owned());
        }
        Ok(())
    }
}
