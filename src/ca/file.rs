//! The root kept in a directory (`ca-cert.pem`, `ca-key.pem`), for running without a cluster
//! to persist it in: generated once, then read back on every start.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::secret::{CA_CERT, CA_KEY};
use super::{Authority, CaError};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", dir.display())]
    Invalid { dir: PathBuf, source: CaError },
    #[error("{}: {present} exists but {missing} is missing; remove {present} to generate a new root", dir.display())]
    Incomplete {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: generating a root: {source}", dir.display())]
    Generate { dir: PathBuf, source: CaError },
}

/// Held while a root is looked for and generated: `pilotfish serve` and `pilotfish ca issue`
/// may both find the directory empty, and must end up with one root, not two half-written.
const LOCK: &str = ".ca.lock";

/// The root of `dir`: read when both files exist, else generated (`O=<trust_domain>`) and
/// written. One file alone is an error, never overwritten: it may be half of a root in use.
pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Authority, FileError> {
    let invalid = |source| FileError::Invalid {
        dir: dir.to_path_buf(),
        source,
    };
    // A complete root is read without the lock, so a read-only directory still serves.
    if let (Some(cert), Some(key)) = (read(&dir.join(CA_CERT))?, read(&dir.join(CA_KEY))?) {
        return Authority::from_pem(&cert, &key).map_err(invalid);
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    // Another process may have written the root while this one waited.
    match (read(&dir.join(CA_CERT))?, read(&dir.join(CA_KEY))?) {
        (Some(cert), Some(key)) => Authority::from_pem(&cert, &key).map_err(invalid),
        (Some(_), None) => Err(FileError::Incomplete {
            dir: dir.to_path_buf(),
            present: CA_CERT,
            missing: CA_KEY,
        }),
        (None, Some(_)) => Err(FileError::Incomplete {
            dir: dir.to_path_buf(),
            present: CA_KEY,
            missing: CA_CERT,
        }),
        (None, None) => {
            let authority =
                Authority::generate(trust_domain).map_err(|source| FileError::Generate {
                    dir: dir.to_path_buf(),
                    source,
                })?;
            // The key first: a crash before the certificate is written leaves a key alone,
            // refused on the next start, rather than a certificate without its key.
            write_atomically(&dir.join(CA_KEY), authority.key_pem(), 0o600)?;
            write_atomically(&dir.join(CA_CERT), authority.cert_pem(), 0o644)?;
            tracing::info!(
                "generated a CA root (O={trust_domain}) in {}",
                dir.display()
            );
            Ok(authority)
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError::Io { path, source }
}

fn read(path: &Path) -> Result<Option<String>, FileError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes a temporary file created with `mode` (so the key is never readable by others, even
/// briefly), syncs it and renames it over `path`: a crash leaves the old file or the new one,
/// never half of one.
fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), FileError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A leftover of an earlier crash may have another mode; create_new then sets ours.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    // The rename itself is durable only once the directory is synced.
    #[cfg(unix)]
    {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
