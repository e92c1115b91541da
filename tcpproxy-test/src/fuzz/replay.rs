//! A failing schedule kept for replaying: saved to a private file of its own, and the command
//! that runs it again, quoted as a shell needs it. The fuzzer's failures and the suite's flow
//! phases both end with these.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Words as a shell would need them typed: plain words bare, the rest in single quotes.
pub(crate) fn shell_words<S: AsRef<OsStr>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| {
            let w = w.as_ref().to_string_lossy();
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                w.into_owned()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `text` to a new file in `dir` named `prefix`, random letters and `.txt`. In a shared
/// temp directory anyone may plant a link at a name: the file is created exclusively (never
/// through a link, never over a file) and readable by its owner only, and the random part keeps
/// a planted name from blocking it.
pub(crate) fn save_private(dir: &Path, prefix: &str, text: &str) -> Result<PathBuf, String> {
    save_private_as(dir, prefix, ".txt", text)
}

/// As [`save_private`], the file's name ending in `suffix` (`.html`).
pub(crate) fn save_private_as(
    dir: &Path,
    prefix: &str,
    suffix: &str,
    text: &str,
) -> Result<PathBuf, String> {
    let why = |e: std::io::Error| format!("cannot save it in {}: {e}", dir.display());
    let mut file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .tempfile_in(dir)
        .map_err(why)?;
    file.write_all(text.as_bytes()).map_err(why)?;
    file.keep().map(|(_, path)| path).map_err(|e| why(e.error))
}

/// Writes `text` to a new file at `path`, readable by its owner only, as [`save_private`] does
/// but at a name already made unguessable (one taken from a file it saved): never through a
/// link, never over a file. Err says why not.
pub(crate) fn save_private_at(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    file.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_schedule_is_a_new_private_file_never_a_planted_one() {
        use std::os::unix::fs::{MetadataExt as _, symlink};
        let dir = tempfile::tempdir().unwrap();
        // What another user could plant at the old fixed name.
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep me").unwrap();
        symlink(&target, dir.path().join("tcpproxy-test-fuzz-3-9.txt")).unwrap();
        let a = save_private(dir.path(), "tcpproxy-test-fuzz-3-9-", "case\n").unwrap();
        let b = save_private(dir.path(), "tcpproxy-test-fuzz-3-9-", "case\n").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        for p in [&a, &b] {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("tcpproxy-test-fuzz-3-9-") && name.ends_with(".txt"));
            let meta = std::fs::symlink_metadata(p).unwrap();
            assert!(meta.file_type().is_file());
            assert_eq!(meta.mode() & 0o077, 0, "{name}: readable by others");
            assert_eq!(std::fs::read_to_string(p).unwrap(), "case\n");
        }
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        assert_eq!(
            shell_words(&["./fixtures", "flip-byte", "--stall-timeout", "60"]),
            "./fixtures flip-byte --stall-timeout 60"
        );
        assert_eq!(
            shell_words(&["python3", "my proxy.py", "it's", ""]),
            r"python3 'my proxy.py' 'it'\''s' ''"
        );
    }
}
