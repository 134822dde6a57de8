//! Writing output files atomically: all of the new content, or the old file untouched.
//!
//! A file is written to a temporary file **in the target's directory** (so the final
//! rename never crosses a file system), flushed, `fsync`ed and then renamed over the
//! target. A failure at any point (a full disk, a write error, an error of the code
//! producing the content) removes the temporary file and leaves an existing target as it
//! was; a process killed before the rename leaves the target as it was (and at most a
//! hidden temporary `.NAME.…tmp` beside it). Model files ([`crate::fit::io::save`]),
//! checkpoints, predictions, figures and reports all go through [`write_atomically`] or
//! [`write_via_path`].

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// The directory a path's file lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file beside `path`: hidden, named after it, ending in its extension (a
/// writer that picks its format by extension, e.g. a PNG encoder, sees the right one), and
/// with the permissions an existing target has (else the usual `0644`).
fn temp_beside(path: &Path) -> io::Result<NamedTempFile> {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let suffix = match path.extension() {
        Some(e) => format!(".tmp.{}", e.to_string_lossy()),
        None => ".tmp".to_string(),
    };
    let prefix = format!(".{name}.");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(&suffix);
    #[cfg(unix)]
    let perms = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map_or_else(
            |_| std::fs::Permissions::from_mode(0o644),
            |m| m.permissions(),
        )
    };
    #[cfg(unix)]
    b.permissions(perms);
    b.tempfile_in(parent_dir(path))
}

/// Flushes the temporary file to disk and renames it over `path`.
fn commit(tmp: NamedTempFile, path: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename itself is durable once the directory is synced; not every platform or
    // file system allows opening a directory, so this part is best effort.
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes `path` atomically with `fill`, which writes the content into a buffered writer
/// of the temporary file (so large outputs stream to disk as they are produced).
///
/// # Errors
/// `fill`'s error, or the I/O error of creating, writing, syncing or renaming the
/// temporary file; in every case the temporary file is removed and `path` is unchanged.
pub fn write_atomically<T, E: From<io::Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<T, E>,
) -> Result<T, E> {
    let tmp = temp_beside(path)?;
    let value = {
        let mut w = BufWriter::new(tmp.as_file());
        let value = fill(&mut w)?;
        w.flush()?;
        value
    };
    commit(tmp, path)?;
    Ok(value)
}

/// [`write_atomically`] of a byte string.
///
/// # Errors
/// As [`write_atomically`].
pub fn write_bytes(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically(path, |w| w.write_all(bytes))
}

/// Writes `path` atomically with a writer that insists on opening a path itself (a
/// plotting backend): `fill` gets the temporary file's path (same directory, same
/// extension) and writes it completely; the file is then synced and renamed over `path`.
///
/// # Errors
/// `fill`'s error, or (through `io_err`) the I/O error of creating, syncing or renaming
/// the temporary file; the temporary file is removed and `path` unchanged.
pub fn write_via_path<T, E>(
    path: &Path,
    io_err: impl Fn(io::Error) -> E,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let tmp = temp_beside(path).map_err(&io_err)?;
    let value = fill(tmp.path())?;
    commit(tmp, path).map_err(io_err)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mdem-atomic-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces_leaving_no_temporary_file() {
        let d = dir("ok");
        let p = d.join("m.json");
        write_bytes(&p, b"one").unwrap();
        write_bytes(&p, b"two!").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two!");
        assert_eq!(entries(&d), vec!["m.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644);
        }
    }

    #[test]
    fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
        let d = dir("fail");
        let p = d.join("preds.csv");
        std::fs::write(&p, "old").unwrap();
        // Fails half-way, after part of the new content reached the temporary file.
        let r: io::Result<()> = write_atomically(&p, |w| {
            w.write_all(&[b'x'; 100_000])?;
            Err(io::Error::other("disk full"))
        });
        assert_eq!(r.unwrap_err().to_string(), "disk full");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(entries(&d), vec!["preds.csv"]);
        // The same through a path-taking writer, with the extension kept.
        let q = d.join("fig.png");
        let seen = std::cell::RefCell::new(PathBuf::new());
        let r: Result<(), String> = write_via_path(
            &q,
            |e| e.to_string(),
            |tmp| {
                *seen.borrow_mut() = tmp.to_path_buf();
                std::fs::write(tmp, "half").map_err(|e| e.to_string())?;
                Err("drawing failed".into())
            },
        );
        assert_eq!(r.unwrap_err(), "drawing failed");
        assert_eq!(seen.borrow().extension().unwrap(), "png");
        assert_eq!(seen.borrow().parent().unwrap(), d);
        assert!(!q.exists());
        assert_eq!(entries(&d), vec!["preds.csv"]);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_nothing_written() {
        let d = dir("missing");
        let p = d.join("no/such/dir/m.json");
        assert!(write_bytes(&p, b"x").is_err());
        assert!(!p.exists());
        assert_eq!(parent_dir(Path::new("m.json")), PathBuf::from("."));
    }
}
