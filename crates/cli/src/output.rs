//! Output files: checked before any work starts, written atomically.
//!
//! Every subcommand calls [`check_outputs`] (or [`prepare_dir`] for an output directory)
//! at its top, before reading data or fitting, so a bad path costs nothing and exits with
//! code 2: the directory must exist and accept a new file, the extension must be one the
//! command writes, an existing file of that name must be a regular file (never a device
//! such as `/dev/full`), and the path must not be the same file as an input (compared by
//! device and inode, so `./d.csv`, `d.csv` and a hard link are all caught) or as another
//! output. The files are then written with [`em_as_md::fit::atomic`]: a temporary file in
//! the same directory, synced and renamed, so a failure or a kill leaves an existing file
//! as it was ([`write_file`], [`write_text`]).

use crate::error::CliError;
use em_as_md::fit::atomic::{parent_dir, write_atomically};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Extensions of figures (`experiments::plot::Chart::save` draws SVG or PNG).
pub const FIGURE_EXTENSIONS: &[&str] = &["svg", "png"];

/// One output file of a command: its flag (for messages), its path and the extensions it
/// may have (lower case, without the dot).
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// The flag that named it, e.g. `--out`.
    pub flag: &'static str,
    /// The path.
    pub path: &'a Path,
    /// Allowed extensions.
    pub extensions: &'static [&'static str],
}

/// The identity of an existing file: (device, inode) on Unix, its canonical path elsewhere.
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The identity of an existing file: (device, inode) on Unix, its canonical path elsewhere.
#[cfg(not(unix))]
fn identity(path: &Path) -> Option<std::path::PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Where a not-yet-existing output would be: its directory's canonical path and its name.
fn future_location(path: &Path) -> Option<std::path::PathBuf> {
    let dir = std::fs::canonicalize(parent_dir(path)).ok()?;
    Some(dir.join(path.file_name()?))
}

/// Checks `outputs` before any work (see the [module documentation](self)); `inputs` are
/// the files the command reads (`-` for standard input is skipped).
///
/// # Errors
/// [`CliError::BadInput`] (exit code 2) naming the flag, the path and what is wrong.
pub fn check_outputs(outputs: &[Output<'_>], inputs: &[&Path]) -> Result<(), CliError> {
    for (i, o) in outputs.iter().enumerate() {
        let bad = |reason: String| {
            CliError::BadInput(format!("{} {}: {reason}", o.flag, o.path.display()))
        };
        let ext = o
            .path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !o.extensions.is_empty() && !ext.as_deref().is_some_and(|e| o.extensions.contains(&e)) {
            let list: Vec<String> = o.extensions.iter().map(|e| format!(".{e}")).collect();
            return Err(bad(format!(
                "unsupported extension; expected {}",
                list.join(" or ")
            )));
        }
        if let Ok(meta) = std::fs::metadata(o.path) {
            if !meta.is_file() {
                let kind = if meta.is_dir() {
                    "a directory"
                } else {
                    "a device, FIFO or socket"
                };
                return Err(bad(format!(
                    "exists and is not a regular file ({kind}); expected a file path"
                )));
            }
        }
        let dir = parent_dir(o.path);
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad(format!("{} is not a directory", dir.display()))),
            Err(e) => return Err(bad(format!("directory {}: {e}", dir.display()))),
        }
        // Writability, as the atomic write will need it: a new file in the directory.
        tempfile::Builder::new()
            .prefix(".mdem-check.")
            .tempfile_in(&dir)
            .map_err(|e| bad(format!("cannot create a file in {}: {e}", dir.display())))?;
        if let Some(id) = identity(o.path) {
            for input in inputs.iter().filter(|p| p.as_os_str() != "-") {
                if identity(input).as_ref() == Some(&id) {
                    return Err(bad(format!(
                        "is the input file {}; refusing to overwrite an input",
                        input.display()
                    )));
                }
            }
        }
        let here = future_location(o.path);
        for other in &outputs[..i] {
            if here.is_some() && future_location(other.path) == here {
                return Err(bad(format!("is also given to {}", other.flag)));
            }
        }
    }
    Ok(())
}

/// Creates an output directory (and its parents) before any work, and checks that files
/// can be created in it.
///
/// # Errors
/// [`CliError::BadInput`] (exit code 2) naming the flag and the directory.
pub fn prepare_dir(flag: &str, dir: &Path) -> Result<(), CliError> {
    let bad = |reason: String| CliError::BadInput(format!("{flag} {}: {reason}", dir.display()));
    if dir.exists() && !dir.is_dir() {
        return Err(bad("exists and is not a directory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create the directory: {e}")))?;
    tempfile::Builder::new()
        .prefix(".mdem-check.")
        .tempfile_in(dir)
        .map_err(|e| bad(format!("cannot create a file in it: {e}")))?;
    Ok(())
}

/// Writes `path` atomically through a buffered writer (rows stream to the temporary file
/// as `fill` produces them).
///
/// # Errors
/// [`CliError::Output`] (exit code 1) naming the path; the previous file is untouched.
pub fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<(), CliError> {
    write_atomically(path, fill).map_err(|e: std::io::Error| CliError::output(path.display(), e))
}

/// [`write_file`] of a string.
///
/// # Errors
/// As [`write_file`].
pub fn write_text(path: &Path, text: &str) -> Result<(), CliError> {
    write_file(path, |w| w.write_all(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mdem-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn out<'a>(path: &'a Path, extensions: &'static [&'static str]) -> Output<'a> {
        Output {
            flag: "--out",
            path,
            extensions,
        }
    }

    fn refused(outputs: &[Output<'_>], inputs: &[&Path]) -> String {
        let e = check_outputs(outputs, inputs).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        e.to_string()
    }

    #[test]
    fn every_bad_path_is_refused_with_its_reason() {
        let d = dir("check");
        let data = d.join("d.csv");
        std::fs::write(&data, "a,y\n").unwrap();
        let model = d.join("m.json");
        assert!(check_outputs(&[out(&model, &["json"])], &[&data]).is_ok());
        let m = refused(&[out(&d.join("m.txt"), &["json"])], &[]);
        assert!(m.contains("unsupported extension; expected .json"), "{m}");
        assert!(check_outputs(&[out(&d.join("M.JSON"), &["json"])], &[]).is_ok());
        let m = refused(&[out(&d.join("no/m.json"), &["json"])], &[]);
        assert!(m.starts_with("--out ") && m.contains("directory"), "{m}");
        let m = refused(&[out(Path::new("/dev/full"), &[])], &[]);
        assert!(m.contains("not a regular file"), "{m}");
        let m = refused(&[out(&d, &[])], &[]);
        assert!(m.contains("(a directory)"), "{m}");
        let below_file = data.join("x.json");
        let m = refused(&[out(&below_file, &["json"])], &[]);
        assert!(m.contains("is not a directory"), "{m}");
        // The same file as an input, however it is spelled.
        let m = refused(&[out(&data, &["csv"])], &[&data]);
        assert!(m.contains("is the input file"), "{m}");
        let spelled = d.join(".").join("d.csv");
        refused(&[out(&spelled, &["csv"])], &[&data]);
        let link = d.join("link.csv");
        std::fs::hard_link(&data, &link).unwrap();
        refused(&[out(&link, &["csv"])], &[&data]);
        // Two outputs on one path.
        let twice = [
            out(&model, &["json"]),
            Output {
                flag: "--plot",
                path: &model,
                extensions: &["json"],
            },
        ];
        let m = refused(&twice, &[]);
        assert!(
            m.contains("--plot") && m.contains("also given to --out"),
            "{m}"
        );
        // Nothing was left behind by the checks.
        let mut left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, vec!["d.csv", "link.csv"]);
    }

    #[test]
    fn output_directories_are_created_or_refused() {
        let d = dir("dirs");
        assert!(prepare_dir("--out", &d.join("a/b")).is_ok());
        assert!(d.join("a/b").is_dir());
        std::fs::write(d.join("f"), "x").unwrap();
        let e = prepare_dir("--out", &d.join("f")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("not a directory"), "{e}");
        let e = prepare_dir("--out", &d.join("f/sub")).unwrap_err();
        assert!(e.to_string().contains("cannot create the directory"), "{e}");
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let d = dir("write");
        let p = d.join("p.csv");
        write_text(&p, "old\n").unwrap();
        let e = write_file(&p, |w| {
            w.write_all(b"row,1\n")?;
            Err(std::io::Error::other("no space left on device"))
        })
        .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("no space left"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }
}
