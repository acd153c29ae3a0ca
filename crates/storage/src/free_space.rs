//! The free-space guard: refuse a write while the disk has less than a headroom free (BAD-INPUT.md
//! row 24), before the engine sees it.
//!
//! Why refuse early instead of letting the engine fail: fjall is fail-stop, and ENOSPC in a
//! journal write, a memtable flush or a compaction poisons it until restart. A refusal here
//! changes nothing and needs no recovery: writes succeed again as soon as space frees. The
//! headroom (`StoreOptions::min_free_bytes`) must cover what the engine writes on its own after
//! the last accepted write: flushing the memtables and compacting (up to the size of the largest
//! level being merged).
//!
//! Cost: one `statvfs` at most every [`REFRESH_INTERVAL`], not one per write. Between samples the
//! guard subtracts the bytes it let through, so a burst cannot overrun the headroom on a stale
//! sample. Only on-disk stores have a guard.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::StorageError;

/// How stale a free-space sample may get.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

struct Sample {
    /// None until the first successful `statvfs`.
    taken_at: Option<Instant>,
    free_bytes: u64,
    /// Bytes admitted since the sample was taken.
    admitted_since: u64,
    /// Whether the last answer was a refusal: logs go out on transitions only, not once per
    /// refused write (which could be thousands a second).
    refusing: bool,
}

pub(crate) struct FreeSpaceGuard {
    path: PathBuf,
    min_free_bytes: u64,
    // A blocking mutex: held for a subtraction, or for one statvfs every 100 ms.
    sample: Mutex<Sample>,
}

impl FreeSpaceGuard {
    pub(crate) fn new(path: PathBuf, min_free_bytes: u64) -> Self {
        FreeSpaceGuard {
            path,
            min_free_bytes,
            sample: Mutex::new(Sample {
                taken_at: None,
                free_bytes: 0,
                admitted_since: 0,
                refusing: false,
            }),
        }
    }

    /// Admits a write of about `bytes`, or refuses it with `DiskFull`.
    pub(crate) fn admit(&self, bytes: u64) -> Result<(), StorageError> {
        let mut sample = self.sample.lock();
        let now = Instant::now();
        if sample
            .taken_at
            .is_none_or(|at| now.duration_since(at) >= REFRESH_INTERVAL)
        {
            match free_bytes(&self.path) {
                Ok(free) => {
                    sample.free_bytes = free;
                    sample.admitted_since = 0;
                    sample.taken_at = Some(now);
                }
                Err(e) if sample.taken_at.is_some() => {
                    // Keep the old sample (minus what was admitted since) rather than fail
                    // writes over a transient statvfs error; retry at the next interval.
                    tracing::warn!(path = %self.path.display(), error = %e, "statvfs failed");
                    sample.taken_at = Some(now);
                }
                Err(e) => {
                    // Never measured: fail open. A missing guard is a degraded mode, not a
                    // reason to refuse every write.
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "statvfs failed; free-space guard inactive until it succeeds");
                    return Ok(());
                }
            }
        }
        let free = sample.free_bytes.saturating_sub(sample.admitted_since);
        let needed = self.min_free_bytes.saturating_add(bytes);
        if free < needed {
            if !sample.refusing {
                sample.refusing = true;
                tracing::warn!(
                    path = %self.path.display(),
                    free_bytes = free,
                    min_free_bytes = self.min_free_bytes,
                    "disk short of space: refusing writes until space frees"
                );
            }
            return Err(StorageError::DiskFull {
                free_bytes: free,
                needed_bytes: needed,
            });
        }
        if sample.refusing {
            sample.refusing = false;
            tracing::info!(path = %self.path.display(), free_bytes = free,
                "disk space available again: accepting writes");
        }
        sample.admitted_since = sample.admitted_since.saturating_add(bytes);
        Ok(())
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_with_headroom_and_refuses_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);

        let roomy = FreeSpaceGuard::new(dir.path().to_path_buf(), 0);
        roomy.admit(1).unwrap();

        let greedy = FreeSpaceGuard::new(dir.path().to_path_buf(), u64::MAX / 2);
        match greedy.admit(1) {
            Err(StorageError::DiskFull {
                free_bytes,
                needed_bytes,
            }) => {
                assert!(free_bytes < needed_bytes);
                assert_eq!(needed_bytes, u64::MAX / 2 + 1);
            }
            other => panic!("expected DiskFull, got {other:?}"),
        }
    }

    #[test]
    fn admitted_bytes_count_against_a_stale_sample() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        // The headroom leaves ~100 MiB; two 60 MiB writes within one sample: the second is
        // refused although statvfs has not been asked again. (Margins absorb other processes
        // changing the disk's free space by tens of MiB meanwhile.)
        const MIB: u64 = 1 << 20;
        let guard = FreeSpaceGuard::new(dir.path().to_path_buf(), free - 100 * MIB);
        guard.admit(60 * MIB).unwrap();
        assert!(matches!(
            guard.admit(60 * MIB),
            Err(StorageError::DiskFull { .. })
        ));
    }

    #[test]
    fn missing_directory_fails_open() {
        let guard = FreeSpaceGuard::new(PathBuf::from("/nonexistent/ringkv/dir"), u64::MAX);
        guard.admit(1).unwrap();
    }
}
