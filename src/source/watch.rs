//! Keeps the store in sync with a directory: inotify events → re-read the touched files →
//! replace the directory's objects in the store → publish.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::Directory;
use crate::diagnostic::Diagnostic;
use crate::store::{SourceId, Store};

/// Events that arrive this close together are read as one change: an editor's truncate and
/// write, or a `cp` of several files. Short enough that a lone edit still lands in milliseconds.
const SETTLE: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    // The cause is in the message (logs print only the message), so it is not also a `source`
    // that anyhow's chain would print a second time.
    #[error("cannot read config directory {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot watch config directory {path}: {cause}")]
    Watch { path: PathBuf, cause: notify::Error },
}

/// Pushes the directory's current objects into the store and publishes; logs diagnostics that
/// are new since `previous`, and returns the full current list.
pub fn sync(dir: &Directory, store: &Mutex<Store>, previous: &[Diagnostic]) -> Vec<Diagnostic> {
    let (entries, diagnostics) = dir.entries();
    {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.replace_source(SourceId::Files, entries);
        store.publish();
    }
    let previous: std::collections::HashSet<&Diagnostic> = previous.iter().collect();
    for d in diagnostics.iter().filter(|d| !previous.contains(d)) {
        if d.is_error() {
            tracing::error!("{d}");
        } else {
            tracing::warn!("{d}");
        }
    }
    diagnostics
}

/// Loads the directory once; the caller serves only after this.
pub fn load(dir: &mut Directory, store: &Mutex<Store>) -> Result<Vec<Diagnostic>, WatchError> {
    dir.rescan().map_err(|cause| WatchError::Read {
        path: dir.root().to_path_buf(),
        cause,
    })?;
    Ok(sync(dir, store, &[]))
}

/// Reads a directory once, for the commands that do not serve (`validate`, `render`): its
/// objects as a store snapshot, and the diagnostics of its files.
pub fn read_once(
    root: &std::path::Path,
) -> Result<(Arc<crate::store::Snapshot>, Vec<Diagnostic>), WatchError> {
    let mut dir = Directory::new(root);
    dir.rescan().map_err(|cause| WatchError::Read {
        path: root.to_path_buf(),
        cause,
    })?;
    let (entries, diagnostics) = dir.entries();
    Ok((crate::store::Snapshot::of(entries), diagnostics))
}

/// Watches the directory until the process ends, keeping the store in sync. Diagnostics of the
/// current state are published on `diagnostics` (debug output reads them).
pub async fn run(
    mut dir: Directory,
    store: Arc<Mutex<Store>>,
    diagnostics: watch::Sender<Arc<Vec<Diagnostic>>>,
) -> Result<(), WatchError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let root = dir.root().to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver is gone only at shutdown.
        let _ = tx.send(event);
    })
    .map_err(|cause| WatchError::Watch {
        path: root.clone(),
        cause,
    })?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|cause| WatchError::Watch {
            path: root.clone(),
            cause,
        })?;

    while let Some(first) = rx.recv().await {
        let mut events = vec![first];
        while let Ok(Some(more)) = tokio::time::timeout(SETTLE, rx.recv()).await {
            events.push(more);
        }
        let mut paths = BTreeSet::new();
        let mut rescan = false;
        for event in events {
            match event {
                Ok(e) => {
                    rescan |=
                        matches!(e.kind, EventKind::Other | EventKind::Any) || e.need_rescan();
                    for p in e.paths {
                        rescan |= p.is_dir();
                        paths.insert(p);
                    }
                }
                Err(e) => {
                    tracing::warn!("watching {}: {e}; re-reading the directory", root.display());
                    rescan = true;
                }
            }
        }
        let changed = if rescan {
            dir.rescan().unwrap_or_else(|e| {
                tracing::error!(
                    "re-reading {}: {e}; keeping the config last read",
                    root.display()
                );
                false
            })
        } else {
            paths.iter().fold(false, |acc, p| dir.reload(p) | acc)
        };
        if changed {
            let previous = diagnostics.borrow().clone();
            let current = sync(&dir, &store, &previous);
            diagnostics.send_replace(Arc::new(current));
        }
    }
    Ok(())
}
