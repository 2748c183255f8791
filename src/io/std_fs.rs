//! [`FileSystem`] over `std::fs`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use super::{FileSystem, FsFile, StoredFile};

/// The real file system through `std::fs`: `File::sync_data` is
/// `fdatasync`, a directory is synced by opening it and calling `sync_all`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StdFs;

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl FsFile for StdFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Seek, SeekFrom, Write};
            self.file.seek(SeekFrom::Start(offset))?;
            self.file.write_all(buf)
        }
    }

    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            self.file.seek(SeekFrom::Start(offset))?;
            self.file.read_exact(buf)
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn file_len(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

impl FileSystem for StdFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = File::open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn map(&self, path: &Path) -> io::Result<StoredFile> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            // A zero-length map is an error on some platforms.
            return Ok(StoredFile::from_vec(Vec::new()));
        }
        // SAFETY: the files mapped are checkpoint files, written once under
        // a temporary name and never modified after publication; the
        // directories' lock keeps other managers of this crate out. A file
        // truncated by someone else while mapped would fault on access,
        // which is the documented limit of reading by memory map.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(StoredFile::from_mmap(map))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            // Directory handles cannot be fsynced through std elsewhere;
            // NTFS journals its metadata.
            let _ = dir;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_io_len_and_directory_ops() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let dir = tmp.path().join("d/e");
        fs.create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        let mut f = fs.create(&a).unwrap();
        f.set_len(10).unwrap();
        f.write_all_at(b"xy", 4).unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.file_len().unwrap(), 10);
        let mut r = fs.open_read(&a).unwrap();
        let mut two = [0u8; 2];
        r.read_exact_at(&mut two, 4).unwrap();
        assert_eq!(&two, b"xy");
        assert!(r.read_exact_at(&mut two, 9).is_err());
        let mut w = fs.open_write(&a).unwrap();
        w.write_all_at(b"z", 0).unwrap();
        assert_eq!(fs.read(&a).unwrap(), b"z\0\0\0xy\0\0\0\0");
        let b = dir.join("b");
        fs.rename(&a, &b).unwrap();
        fs.sync_dir(&dir).unwrap();
        assert_eq!(fs.list_dir(&dir).unwrap(), vec![std::ffi::OsString::from("b")]);
        fs.remove_file(&b).unwrap();
        assert!(fs.list_dir(&dir).unwrap().is_empty());
        assert!(fs.open_write(&b).is_err());
    }
}
