//! A bounded cache of open segment and index files, shared by every
//! partition log of the broker, so that the number of partitions does not
//! dictate the number of open file descriptors.
//!
//! Files are opened on first use and closed again, least recently used
//! first, once more than `capacity` are open. A caller holds the `Arc<File>`
//! it got for the duration of one operation only; a file evicted meanwhile
//! stays open until that operation drops it, so the descriptors in use are at
//! most `capacity` plus one or two per operation in progress.
//!
//! Closing a file that has unsynced writes loses nothing: the data is in the
//! page cache of the file, and a later `fsync` through a new descriptor
//! flushes it (Linux reports a write-back error not yet seen by anyone to the
//! next `fsync` on the file, whichever descriptor it uses).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Files one [`crate::storage::SegmentedLog::open`] without a shared cache may keep open.
pub const PRIVATE_CAPACITY: usize = 8;

struct Entry {
    file: Arc<File>,
    /// Position in `Inner::order`.
    used: u64,
}

#[derive(Default)]
struct Inner {
    files: HashMap<PathBuf, Entry>,
    /// Last use -> path, oldest first.
    order: BTreeMap<u64, PathBuf>,
    clock: u64,
}

impl Inner {
    fn touch(&mut self, path: &Path) -> Option<Arc<File>> {
        self.clock += 1;
        let now = self.clock;
        let entry = self.files.get_mut(path)?;
        let before = std::mem::replace(&mut entry.used, now);
        let file = entry.file.clone();
        if let Some(p) = self.order.remove(&before) {
            self.order.insert(now, p);
        }
        Some(file)
    }

    fn insert(&mut self, path: PathBuf, file: Arc<File>, capacity: usize) -> u64 {
        self.clock += 1;
        let now = self.clock;
        if let Some(old) = self.files.insert(path.clone(), Entry { file, used: now }) {
            self.order.remove(&old.used);
        }
        self.order.insert(now, path);
        let mut evicted = 0;
        while self.files.len() > capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.files.remove(&oldest);
            evicted += 1;
        }
        evicted
    }

    fn remove(&mut self, path: &Path) {
        if let Some(old) = self.files.remove(path) {
            self.order.remove(&old.used);
        }
    }
}

/// Open files by path, at most `capacity` of them.
pub struct FileCache {
    capacity: usize,
    inner: Mutex<Inner>,
    opened: AtomicU64,
    evicted: AtomicU64,
}

impl FileCache {
    pub fn new(capacity: usize) -> Arc<FileCache> {
        Arc::new(FileCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            opened: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent whatever panicked while they were held.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Files open in the cache now.
    pub fn open_files(&self) -> usize {
        self.lock().files.len()
    }

    /// Files opened and closed again since the cache was made.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.evicted.load(Ordering::Relaxed),
        )
    }

    /// The existing file at `path`, open for reading and appending. A file
    /// that does not exist is an error: a deleted segment is never recreated
    /// empty by a late reader.
    pub fn get(&self, path: &Path) -> io::Result<Arc<File>> {
        if let Some(file) = self.lock().touch(path) {
            return Ok(file);
        }
        // Opened without the lock held; a racing open of the same path wins
        // or loses harmlessly (the loser's descriptor is closed on drop).
        let file = Arc::new(OpenOptions::new().read(true).append(true).open(path)?);
        self.remember(path, file.clone());
        Ok(file)
    }

    /// Creates `path` (or opens it when it exists) and caches it, replacing
    /// whatever was cached under that path before.
    pub fn create(&self, path: &Path) -> io::Result<Arc<File>> {
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)?,
        );
        self.remember(path, file.clone());
        Ok(file)
    }

    fn remember(&self, path: &Path, file: Arc<File>) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let evicted = self.lock().insert(path.to_path_buf(), file, self.capacity);
        self.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Closes `path` (before it is deleted or replaced).
    pub fn forget(&self, path: &Path) {
        self.lock().remove(path);
    }

    /// Closes every file under `dir`.
    pub fn forget_under(&self, dir: &Path) {
        let mut inner = self.lock();
        let gone: Vec<PathBuf> = inner
            .files
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for p in gone {
            inner.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn least_recently_used_files_are_closed_beyond_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(2);
        let paths: Vec<_> = (0..4).map(|i| dir.path().join(format!("{i}"))).collect();
        for p in &paths {
            (&*cache.create(p).unwrap()).write_all(b"x").unwrap();
        }
        assert_eq!(cache.open_files(), 2);
        assert_eq!(cache.stats(), (4, 2));
        // 2 and 3 are cached; using 2 makes 3 the oldest.
        cache.get(&paths[2]).unwrap();
        cache.get(&paths[0]).unwrap();
        assert_eq!(cache.stats(), (5, 3));
        cache.get(&paths[2]).unwrap();
        assert_eq!(cache.stats(), (5, 3), "2 was kept, 3 was evicted");
        // A reopened file still appends at its end and reads from the start.
        let f = cache.get(&paths[1]).unwrap();
        (&*f).write_all(b"y").unwrap();
        let mut s = String::new();
        (&*f).seek(SeekFrom::Start(0)).unwrap();
        (&*f).read_to_string(&mut s).unwrap();
        assert_eq!(s, "xy");
        // A missing file is not created by get.
        let missing = dir.path().join("missing");
        assert!(cache.get(&missing).is_err());
        assert!(!missing.exists());
        cache.forget_under(dir.path());
        assert_eq!(cache.open_files(), 0);
    }
}
