//! Output files written whole or not at all, and never over an input.
//!
//! [`write`](fn@write) writes to a new temporary file beside the target (same directory, so the
//! same file system), flushes it to disk, renames it over the target and flushes the
//! directory. A failure at any step (a full disk, a file-size limit, a panic) removes
//! the temporary file and leaves the target as it was; a `SIGKILL` can leave the
//! temporary file (`.NAME.riffle-tmp-PID-N`) behind, never a truncated target.
//! [`check_not_input`] refuses an output that is one of the inputs (same device and
//! inode, so links and other spellings of a path are caught), before any work.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::fail::{bad, runtime, Result};
use crate::files::io_problem;

/// Refuses `output` when it exists and is not a regular file (a directory, a device, a
/// FIFO: renaming over it would replace it), or is the same file as one of `inputs`.
///
/// # Errors
/// Exit 2 naming `output`.
pub fn check_not_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    let name = output.display().to_string();
    let Ok(out) = fs::metadata(output) else {
        return Ok(()); // A new file.
    };
    if out.is_dir() {
        return Err(bad(&name, "is a directory"));
    }
    if !out.is_file() {
        return Err(bad(
            &name,
            "exists and is not a regular file (refusing to replace it)",
        ));
    }
    for input in inputs {
        if let Ok(m) = fs::metadata(input) {
            if same_file(&out, &m) {
                return Err(bad(
                    &name,
                    format!(
                        "is the same file as the input {} (write the output elsewhere)",
                        input.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    // Without inode numbers: the same length and modification time is treated as the
    // same file (a false refusal is harmless, a false acceptance loses data).
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// Removes the temporary file unless the rename happened (also when unwinding).
struct Temp {
    path: PathBuf,
    done: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to `output` atomically (see the module documentation), after
/// [`check_not_input`] against `inputs`.
///
/// # Errors
/// Exit 2 for an output that is an input or not a regular file; exit 1 for an I/O
/// failure (the target is then unchanged).
pub fn write(output: &Path, inputs: &[&Path], bytes: &[u8]) -> Result<()> {
    write_with(output, inputs, |f| f.write_all(bytes))
}

/// As [`write`](fn@write), with the content produced by `fill` into the temporary file.
///
/// # Errors
/// As [`write`](fn@write).
pub fn write_with(
    output: &Path,
    inputs: &[&Path],
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    check_not_input(output, inputs)?;
    let name = output.display().to_string();
    let file_name = output
        .file_name()
        .ok_or_else(|| bad(&name, "names no file"))?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".riffle-tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut temp = Temp {
        path: dir.join(tmp_name),
        done: false,
    };
    let fail = |e: std::io::Error| runtime(&name, io_problem(&e));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp.path)
        .map_err(fail)?;
    fill(&mut file)
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    drop(file);
    fs::rename(&temp.path, output).map_err(fail)?;
    temp.done = true;
    // The rename is durable once the directory is flushed (not possible everywhere).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("riffle-atomic-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(d: &Path) -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("riffle-tmp"))
            .collect()
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let d = dir("fail");
        let out = d.join("out.gguf");
        fs::write(&out, b"good").unwrap();
        let r = write_with(&out, &[], |f| {
            f.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        });
        assert_eq!(r.unwrap_err().code, crate::fail::EXIT_RUNTIME);
        assert_eq!(fs::read(&out).unwrap(), b"good");
        assert!(leftovers(&d).is_empty());
        // A panic while filling: the same.
        let r = std::panic::catch_unwind(|| {
            let _ = write_with(&out, &[], |f| {
                f.write_all(b"partial")?;
                panic!("bug");
            });
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&out).unwrap(), b"good");
        assert!(leftovers(&d).is_empty());
        write(&out, &[], b"new").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"new");
        assert!(leftovers(&d).is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_output_that_is_an_input_is_refused() {
        let d = dir("same");
        let input = d.join("in.gguf");
        fs::write(&input, b"input").unwrap();
        let other = d.join("sub/../in.gguf");
        fs::create_dir_all(d.join("sub")).unwrap();
        let e = write(&other, &[&input], b"x").unwrap_err();
        assert_eq!(e.code, crate::fail::EXIT_INPUT);
        #[cfg(unix)]
        {
            let link = d.join("hard.gguf");
            fs::hard_link(&input, &link).unwrap();
            assert_eq!(write(&link, &[&input], b"x").unwrap_err().code, 2);
            let sym = d.join("sym.gguf");
            std::os::unix::fs::symlink(&input, &sym).unwrap();
            assert_eq!(write(&sym, &[&input], b"x").unwrap_err().code, 2);
        }
        assert_eq!(fs::read(&input).unwrap(), b"input");
        assert_eq!(write(&d, &[], b"x").unwrap_err().code, 2);
        fs::remove_dir_all(&d).unwrap();
    }
}
