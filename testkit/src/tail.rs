//! The last bytes of a process's output stream: bounded, so a chatty proxy costs no memory, and
//! enough to explain a failure.

use std::collections::VecDeque;

/// The last `keep` bytes pushed, and how many came in all.
#[derive(Debug)]
pub struct Tail {
    keep: usize,
    bytes: VecDeque<u8>,
    total: u64,
}

impl Tail {
    pub fn new(keep: usize) -> Tail {
        Tail {
            keep,
            bytes: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(self.keep)..];
        let over = (self.bytes.len() + chunk.len()).saturating_sub(self.keep);
        self.bytes.drain(..over);
        self.bytes.extend(chunk);
    }

    /// The kept text, lossily decoded, with a note when earlier output was dropped.
    pub fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        let s = String::from_utf8_lossy(&v).into_owned();
        if self.total > self.bytes.len() as u64 {
            format!(
                "[{} earlier bytes dropped] {}",
                self.total - self.bytes.len() as u64,
                s
            )
        } else {
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: usize = 8 * 1024;

    #[test]
    fn tail_keeps_the_last_bytes_and_counts_the_rest() {
        let mut t = Tail::new(KEEP);
        t.push(&vec![b'a'; KEEP]);
        t.push(b"end");
        assert_eq!(t.total, KEEP as u64 + 3);
        let text = t.text();
        assert!(
            text.starts_with("[3 earlier bytes dropped]"),
            "{}",
            &text[..40]
        );
        assert!(text.ends_with("aend"));
        t.push(&vec![b'z'; 3 * KEEP]);
        assert_eq!(t.bytes.len(), KEEP);
    }
}
