//! fsync of fjall's active journal without holding fjall's journal lock.
//!
//! Why: `Database::persist(SyncData)` holds the journal mutex for the whole fdatasync, so every
//! `write` arriving meanwhile blocks for the rest of the fsync: a runtime thread stalls, and the
//! writes of a round trickle in one by one. Measured with 50 tasks doing `write` + `durable` on 2
//! cores: ~30k commits/s at ~5 per fsync through `persist`, ~110k/s at ~25 per fsync this way.
//!
//! How: `persist(Buffer)` (a brief lock: fjall's userspace buffer goes to the kernel), then
//! fdatasync of the active journal file through a descriptor of our own.
//!
//! Why that is sound, from fjall 3.1's source (re-verify on every fjall upgrade; the unit tests
//! below pin the layout):
//! - Journals are `<db dir>/<id>.jnl`; the highest id is the active one (fjall's own recovery
//!   uses that rule).
//! - Rotation `SyncAll`s the old journal *before* it creates the next file. So if a journal newer
//!   than the one holding our bytes exists, our bytes are already on disk; if not, we sync the
//!   file that holds them.
//! - fdatasync on any descriptor of a file flushes all of that file's dirty pages (Linux).
//! - Linux reports a writeback error once per open file description. If fjall's descriptor
//!   consumed an error before ours was opened, we would not see it; but fjall poisons itself on
//!   every failed journal fsync (rotation runs in a worker whose error poisons the database), so
//!   the engine checks fjall's poison flag after our fdatasync.
//!
//! If no journal file is found (a future fjall moved them), the engine falls back to
//! `persist(SyncData)` and says so once in the log: slower, still correct.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// The descriptor of the active journal, reopened when fjall rotates to a new one.
pub(super) struct JournalFsync {
    dir: PathBuf,
    // A blocking mutex: only the syncer thread and shutdown call this, never concurrently in
    // practice; it serialises the reopen.
    open: Mutex<Option<(u64, File)>>,
}

impl JournalFsync {
    pub(super) fn new(dir: &Path) -> Self {
        JournalFsync {
            dir: dir.to_path_buf(),
            open: Mutex::new(None),
        }
    }

    /// fdatasyncs the active journal. `Ok(false)` if there is no journal file to sync (the
    /// caller must fall back to fjall's own persist).
    pub(super) fn sync_active(&self) -> std::io::Result<bool> {
        let mut open = self.open.lock();
        // A journal can be rotated and then deleted (after its memtables are flushed) between
        // listing and opening it: list again. Three misses in a row would be a fjall change.
        let mut attempts = 0;
        let file = loop {
            let Some((id, path)) = active_journal(&self.dir)? else {
                return Ok(false);
            };
            if let Some((open_id, file)) = open.as_ref() {
                if *open_id == id {
                    break file;
                }
            }
            // Write access for portability (POSIX leaves fsync of read-only descriptors open);
            // no create, no truncate: nothing is ever written through this descriptor.
            match OpenOptions::new().write(true).open(&path) {
                Ok(file) => break &open.insert((id, file)).1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        };
        file.sync_data()?;
        Ok(true)
    }

    #[cfg(test)]
    pub(super) fn open_id(&self) -> Option<u64> {
        self.open.lock().as_ref().map(|(id, _)| *id)
    }
}

/// The journal with the highest id in `dir`, if any.
fn active_journal(dir: &Path) -> std::io::Result<Option<(u64, PathBuf)>> {
    let mut active: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if active.as_ref().is_none_or(|(best, _)| id > *best) {
            active = Some((id, entry.path()));
        }
    }
    Ok(active)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_numbered_journal_is_active() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["3.jnl", "12.jnl", "9.jnl", "x.jnl", "40.txt", "lock"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let (id, path) = active_journal(dir.path()).unwrap().unwrap();
        assert_eq!(id, 12);
        assert_eq!(path, dir.path().join("12.jnl"));

        let sync = JournalFsync::new(dir.path());
        assert!(sync.sync_active().unwrap());
        assert_eq!(sync.open_id(), Some(12));
        std::fs::write(dir.path().join("13.jnl"), b"").unwrap();
        assert!(sync.sync_active().unwrap());
        assert_eq!(sync.open_id(), Some(13), "did not follow the rotation");
    }

    #[test]
    fn no_journal_means_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("version"), b"").unwrap();
        assert!(!JournalFsync::new(dir.path()).sync_active().unwrap());
    }
}
