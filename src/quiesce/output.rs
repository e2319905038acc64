//! Bounded capture of a hook's merged stdout+stderr: keeps the first and the last half of the
//! limit and counts what was dropped in between. Pure, no I/O.

use std::collections::VecDeque;

/// Accumulates output up to `limit` bytes (head + tail) and renders it with an elision marker.
#[derive(Debug, Clone)]
pub struct BoundedOutput {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    notes: Vec<String>,
}

impl BoundedOutput {
    pub fn new(limit: usize) -> BoundedOutput {
        let head_cap = limit / 2;
        BoundedOutput {
            head_cap,
            tail_cap: limit - head_cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            notes: Vec::new(),
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.head_cap {
            let n = bytes.len().min(self.head_cap - self.head.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    /// Adds a line of our own after the captured output (e.g. why reading stopped).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Total bytes seen, including elided ones.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Renders head, `[… N bytes elided …]` (only if something was dropped), tail, notes.
    /// Invalid UTF-8 is replaced.
    pub fn finish(self) -> String {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let tail: Vec<u8> = self.tail.into_iter().collect();
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.total > kept {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("[… {} bytes elided …]\n", self.total - kept));
            out.push_str(&String::from_utf8_lossy(&tail));
        } else {
            // Nothing dropped: head and tail are contiguous.
            let mut all = self.head;
            all.extend_from_slice(&tail);
            out = String::from_utf8_lossy(&all).into_owned();
        }
        for note in self.notes {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&note);
            out.push('\n');
        }
        out
    }
}

/// The last `max_lines` lines of `output`, at most `max_bytes` bytes (cut at a char boundary).
pub fn tail_of(output: &str, max_lines: usize, max_bytes: usize) -> &str {
    let trimmed = output.trim_end();
    let mut start = 0;
    let mut seen = 0;
    for (i, _) in trimmed.rmatch_indices('\n') {
        seen += 1;
        if seen == max_lines {
            start = i + 1;
            break;
        }
    }
    let mut s = &trimmed[start..];
    if s.len() > max_bytes {
        let mut cut = s.len() - max_bytes;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s = &s[cut..];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut o = BoundedOutput::new(8);
        o.push(b"abc");
        o.push(b"defgh");
        assert_eq!(o.total(), 8);
        assert_eq!(o.finish(), "abcdefgh");
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let mut o = BoundedOutput::new(8);
        o.push(b"abc");
        o.push(b"defgh");
        o.push(b"ijklmnop");
        o.push(b"q");
        assert_eq!(o.finish(), "abcd\n[… 9 bytes elided …]\nnopq");
        let mut o = BoundedOutput::new(8);
        o.push(b"0123456789abcdefXYZ");
        assert_eq!(o.finish(), "0123\n[… 11 bytes elided …]\nfXYZ");
    }

    #[test]
    fn notes_follow_output() {
        let mut o = BoundedOutput::new(8);
        o.push(b"x");
        o.note("[stopped]");
        assert_eq!(o.finish(), "x\n[stopped]\n");
    }

    #[test]
    fn tail_of_takes_last_lines_and_bytes() {
        assert_eq!(tail_of("a\nb\nc\nd\n", 2, 100), "c\nd");
        assert_eq!(tail_of("a\nb", 5, 100), "a\nb");
        assert_eq!(tail_of("abcdef", 5, 3), "def");
        assert_eq!(tail_of("aé", 5, 1), "");
    }

    proptest::proptest! {
        #[test]
        fn never_exceeds_limit_and_counts_all(chunks in proptest::collection::vec(
            proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..20), limit in 1usize..64) {
            let mut o = BoundedOutput::new(limit);
            let mut all = Vec::new();
            for c in &chunks { o.push(c); all.extend_from_slice(c); }
            proptest::prop_assert_eq!(o.total(), all.len() as u64);
            proptest::prop_assert!(o.head.len() + o.tail.len() <= limit);
            let n = o.head.len();
            proptest::prop_assert_eq!(&o.head[..], &all[..n]);
            let t: Vec<u8> = o.tail.iter().copied().collect();
            proptest::prop_assert_eq!(&t[..], &all[all.len() - t.len()..]);
        }
    }
}
