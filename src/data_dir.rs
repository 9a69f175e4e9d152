//! The data directory's lock: one `serve` (or `backup restore`) at a time per data
//! directory. The kernel drops the lock when the process dies, however it dies.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "smimegate.lock";

/// Holds the data directory for this process: a second `serve` on it is refused.
/// The kernel drops the lock when the process dies, however it dies.
pub struct DataDirLock {
    _file: File,
}

pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            anyhow::bail!(
                "another smimegate serve is running on {} (pid {}): stop it first, or use another --data-dir",
                data_dir.display(),
                if holder.is_empty() { "unknown" } else { holder }
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(DataDirLock { _file: file })
}
