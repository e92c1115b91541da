//! Comparing what arrived with what was sent: by length and hash, and where they differ, the
//! first differing offset with a small hex window around it. The harness's reports and the
//! proxy's test failures print the same words.

use std::fmt::{self, Write as _};

use sha2::{Digest, Sha256};

/// How `got` differs from `expected`, or `None` when they are equal.
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub expected_len: usize,
    pub got_len: usize,
    /// The first offset where the bytes differ, or where the shorter one ends.
    pub offset: usize,
    pub expected_window: String,
    pub got_window: String,
}

impl Mismatch {
    /// One line: lengths, hashes' verdict, first difference.
    pub fn summary(&self) -> String {
        let what = if self.offset < self.expected_len.min(self.got_len) {
            "first difference"
        } else if self.got_len < self.expected_len {
            "stream ends early"
        } else {
            "extra bytes start"
        };
        format!(
            "got {} of {} bytes (hash differs); {what} at offset {}",
            self.got_len, self.expected_len, self.offset
        )
    }

    pub fn details(&self) -> Vec<String> {
        vec![
            format!(
                "expected around offset {}: {}",
                self.offset, self.expected_window
            ),
            format!(
                "got      around offset {}: {}",
                self.offset, self.got_window
            ),
        ]
    }
}

/// The summary and both windows on one line, for a test's panic message.
impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.summary(),
            self.expected_window,
            self.got_window
        )
    }
}

/// `Ok` if `got` is `expected`; otherwise `what` and the [`Mismatch`] on one line.
pub fn check_bytes(what: &str, expected: &[u8], got: &[u8]) -> Result<(), String> {
    match compare(expected, got) {
        None => Ok(()),
        Some(m) => Err(format!("{what}: {m}")),
    }
}

/// [`check_bytes`], panicking with its message.
#[track_caller]
pub fn assert_bytes(what: &str, expected: &[u8], got: &[u8]) {
    if let Err(msg) = check_bytes(what, expected, got) {
        panic!("{msg}");
    }
}

/// Bytes shown either side of a difference.
const WINDOW: usize = 8;

pub fn compare(expected: &[u8], got: &[u8]) -> Option<Mismatch> {
    if expected.len() == got.len() && Sha256::digest(expected) == Sha256::digest(got) {
        return None;
    }
    let offset = expected
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(got.len()));
    Some(Mismatch {
        expected_len: expected.len(),
        got_len: got.len(),
        offset,
        expected_window: window(expected, offset),
        got_window: window(got, offset),
    })
}

/// Bytes compared after a difference to tell what kind of damage it is.
const PROBE: usize = 32;

/// Names the likely bug behind a difference at `offset`, when the bytes after it fit a known
/// pattern: one corrupted byte, data repeated (a short write re-sent whole), or data skipped (the
/// rest of a short write dropped).
pub fn explain(expected: &[u8], got: &[u8], offset: usize) -> Option<String> {
    if offset >= got.len() || offset >= expected.len() {
        return None;
    }
    let end = (offset + 1 + PROBE).min(expected.len()).min(got.len());
    if end > offset + 1 && expected[offset + 1..end] == got[offset + 1..end] {
        return Some(format!(
            "one byte was changed at offset {offset} (0x{:02x} became 0x{:02x}) and the bytes after it are intact: the proxy corrupts data",
            expected[offset], got[offset]
        ));
    }
    let probe = &got[offset..(offset + PROBE).min(got.len())];
    if probe.len() < 8 {
        return None;
    }
    let found = expected.windows(probe.len()).position(|w| w == probe)?;
    if found < offset {
        Some(format!(
            "the bytes at offset {offset} repeat offset {found} ({} bytes sent twice): the proxy re-sends a whole chunk after a short write instead of only the unwritten rest",
            offset - found
        ))
    } else {
        Some(format!(
            "offsets {offset}..{found} are missing ({} bytes skipped): the proxy drops the rest of a chunk after a short write",
            found - offset
        ))
    }
}

/// `.. 1f 2e [3d] 4c ..`: the byte at `offset` in brackets, `<end>` past the end.
fn window(bytes: &[u8], offset: usize) -> String {
    let start = offset.saturating_sub(WINDOW);
    let end = (offset + WINDOW + 1).min(bytes.len());
    let mut s = String::new();
    if start > 0 {
        s.push_str(".. ");
    }
    for (i, b) in bytes.iter().enumerate().take(end).skip(start) {
        if i == offset {
            let _ = write!(s, "[{b:02x}] ");
        } else {
            let _ = write!(s, "{b:02x} ");
        }
    }
    if offset >= bytes.len() {
        s.push_str("<end>");
    } else if end < bytes.len() {
        s.push_str("..");
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_streams_match() {
        assert_eq!(compare(b"abc", b"abc"), None);
        assert_eq!(compare(b"", b""), None);
    }

    #[test]
    fn a_flipped_byte_is_found_with_its_window() {
        let expected: Vec<u8> = (0..100).collect();
        let mut got = expected.clone();
        got[50] = 0xff;
        let m = compare(&expected, &got).unwrap();
        assert_eq!(m.offset, 50);
        assert_eq!(
            m.expected_window,
            ".. 2a 2b 2c 2d 2e 2f 30 31 [32] 33 34 35 36 37 38 39 3a .."
        );
        assert!(m.got_window.contains("[ff]"));
        assert!(m.summary().contains("first difference at offset 50"));
    }

    #[test]
    fn a_short_stream_reports_where_it_ends() {
        let m = compare(b"abcdef", b"abc").unwrap();
        assert_eq!(m.offset, 3);
        assert!(m.summary().contains("got 3 of 6 bytes"));
        assert!(m.summary().contains("stream ends early"));
        assert!(m.got_window.ends_with("<end>"));
    }

    fn data(n: usize) -> Vec<u8> {
        use rand::{RngCore as _, SeedableRng as _};
        let mut v = vec![0; n];
        rand_chacha::ChaCha20Rng::seed_from_u64(1).fill_bytes(&mut v);
        v
    }

    #[test]
    fn damage_is_explained() {
        let expected = data(4096);
        let mut flipped = expected.clone();
        flipped[1000] = flipped[1000].wrapping_add(1);
        assert!(
            explain(&expected, &flipped, 1000)
                .unwrap()
                .contains("one byte was changed")
        );

        // Re-sent: after 2000 bytes, the chunk starting at 1500 comes again.
        let mut resent = expected[..2000].to_vec();
        resent.extend_from_slice(&expected[1500..]);
        let m = compare(&expected, &resent).unwrap();
        // Random bytes: the repeat may agree with the original for a byte or two by chance.
        assert!((2000..2004).contains(&m.offset), "{}", m.offset);
        assert!(
            explain(&expected, &resent, m.offset)
                .unwrap()
                .contains("re-sends")
        );

        // Dropped: bytes 2000..2500 never come.
        let mut dropped = expected[..2000].to_vec();
        dropped.extend_from_slice(&expected[2500..]);
        let m = compare(&expected, &dropped).unwrap();
        let hint = explain(&expected, &dropped, m.offset).unwrap();
        assert!(hint.contains("500 bytes skipped"), "{hint}");
    }

    #[test]
    fn a_test_failure_reads_as_one_line_with_both_windows() {
        let msg = check_bytes("echo", b"abcdef", b"abXdef").unwrap_err();
        assert_eq!(
            msg,
            "echo: got 6 of 6 bytes (hash differs); first difference at offset 2: \
             expected 61 62 [63] 64 65 66, got 61 62 [58] 64 65 66"
        );
        assert!(check_bytes("echo", b"abc", b"abc").is_ok());
    }

    #[test]
    fn extra_bytes_are_reported() {
        let m = compare(b"abc", b"abcabc").unwrap();
        assert_eq!(m.offset, 3);
        assert!(m.summary().contains("extra bytes start at offset 3"));
    }
}
