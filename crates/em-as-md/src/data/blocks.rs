//! CSV text cut into blocks of whole records, so that blocks can be parsed in parallel and
//! a file is never held in memory at once.
//!
//! [`Blocks`] reads a byte stream in pieces of about [`BLOCK_BYTES`] and cuts each piece
//! after the last line break that ends a record: a line break inside a quoted field does
//! not (RFC 4180 quoting, where an escaped quote `""` counts twice, so the parity of the
//! quotes before a position says whether it is inside a field). Every block therefore
//! starts at a record's first byte in the unquoted state and can be handed to its own
//! `csv` reader. Each block knows the physical line (header = line 1) and byte offset it
//! starts at, and [`Block::line_at`] turns a record's byte offset into the line an editor
//! shows, as the sequential reader did.
//!
//! The same limits as before are enforced as the bytes arrive, in file order: no NUL
//! byte, no line longer than [`MAX_LINE_BYTES`](super::csv::MAX_LINE_BYTES).

use memchr::{memchr, memchr_iter};
use std::io::Read;

/// Bytes read per block before it is cut at a record boundary (4 MiB): large enough to
/// amortise a parallel task, small enough that a batch of blocks stays a few tens of MiB.
pub const BLOCK_BYTES: usize = 4 << 20;

/// Why the byte stream is not CSV text: the physical line (1-based) and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotText {
    /// Physical line, 1-based.
    pub line: u64,
    /// What is wrong, e.g. "it contains a NUL byte".
    pub reason: &'static str,
}

/// A run of whole records.
#[derive(Debug, Clone)]
pub struct Block {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Physical line of the first byte (header = line 1).
    pub first_line: u64,
    /// Offsets (within `bytes`) of every `\n`.
    newlines: Vec<usize>,
}

impl Block {
    /// The 1-based physical line of the first non-blank line at or after byte `b` of the
    /// block: a record's byte offset from the `csv` crate can point at the line break, or
    /// the blank lines, before the record.
    pub fn line_at(&self, b: usize) -> u64 {
        let before = self.newlines.partition_point(|&o| o < b);
        let mut k = before; // 0-based line within the block that holds byte b
        if self.newlines.get(before) == Some(&b) {
            k += 1; // b is the line break itself: the record starts on the next line
        }
        while self.is_blank(k) {
            k += 1;
        }
        self.first_line + k as u64
    }

    /// Whether line `k` (0-based within the block) is complete and empty or a lone `\r`.
    fn is_blank(&self, k: usize) -> bool {
        let Some(&end) = self.newlines.get(k) else {
            return false;
        };
        let start = if k == 0 { 0 } else { self.newlines[k - 1] + 1 };
        end == start || (end == start + 1 && self.bytes[start] == b'\r')
    }

    /// The 1-based physical line that holds byte `b` of the block (the line after a
    /// line break when `b` is one past it).
    pub fn line_of(&self, b: usize) -> u64 {
        self.first_line + self.newlines.partition_point(|&o| o < b) as u64
    }

    /// Line breaks in the block (its records, give or take a last unterminated line and
    /// quoted line breaks): a capacity hint for a parser.
    pub fn n_newlines(&self) -> usize {
        self.newlines.len()
    }

    /// Physical line just after the block (the first line of the next one).
    pub fn next_line(&self) -> u64 {
        self.first_line + self.newlines.len() as u64
    }
}

/// Reads record-aligned [`Block`]s from a byte stream.
pub struct Blocks<R> {
    inner: R,
    /// Bytes read but not yet handed out (the start of an unfinished record).
    carry: Vec<u8>,
    /// Physical line of `carry[0]`.
    line: u64,
    /// Bytes since the last `\n`, for the line-length limit.
    line_len: usize,
    /// Whether `carry[..scanned]` ends inside a quoted field (odd number of quotes).
    in_quote: bool,
    /// Bytes of `carry` already checked for the limits and scanned for quotes.
    scanned: usize,
    /// Whether the stream has ended.
    eof: bool,
    block_bytes: usize,
    max_line: usize,
}

impl<R: Read> Blocks<R> {
    /// Blocks of about `block_bytes` bytes from `inner`; lines longer than `max_line`
    /// bytes are refused.
    pub fn new(inner: R, block_bytes: usize, max_line: usize) -> Self {
        Blocks {
            inner,
            carry: Vec::new(),
            line: 1,
            line_len: 0,
            in_quote: false,
            scanned: 0,
            eof: false,
            block_bytes: block_bytes.max(1),
            max_line,
        }
    }

    /// The next block, `None` at the end of the stream.
    ///
    /// # Errors
    /// The reader's I/O error, or [`NotText`] (as an `InvalidData` I/O error whose inner
    /// error is the [`NotText`]) for a NUL byte or an over-long line.
    pub fn next_block(&mut self) -> std::io::Result<Option<Block>> {
        loop {
            let cut = self.fill()?;
            if let Some(cut) = cut {
                return Ok(Some(self.take(cut)));
            }
            if self.eof {
                if self.carry.is_empty() {
                    return Ok(None);
                }
                let all = self.carry.len();
                return Ok(Some(self.take(all)));
            }
        }
    }

    /// Reads up to a block's worth more, checks the new bytes, and returns where a block
    /// may be cut (one past the last record-ending `\n` of `carry`), if anywhere.
    fn fill(&mut self) -> std::io::Result<Option<usize>> {
        let start = self.carry.len();
        // Up to a block; a record longer than a block reads another block's worth.
        let want = if start < self.block_bytes {
            self.block_bytes - start
        } else {
            self.block_bytes
        };
        // One allocation of the block's size, not a chain of doublings: a pass over a
        // large file then reuses a few block-sized allocations instead of fragmenting
        // the allocator's arenas (which made a streamed fit's peak memory creep up).
        self.carry.reserve_exact(want);
        // `take` + `read_to_end` fills the spare capacity without zeroing it first.
        let got = (&mut self.inner)
            .take(want as u64)
            .read_to_end(&mut self.carry)?;
        if got < want {
            self.eof = true;
        }
        self.check(start)?;
        // The last `\n` outside quotes among the new bytes (the bytes scanned before held
        // none, or they would have been handed out).
        let mut cut = None;
        let mut in_quote = self.in_quote;
        for q in memchr::memchr2_iter(b'"', b'\n', &self.carry[self.scanned..]) {
            let at = self.scanned + q;
            if self.carry[at] == b'"' {
                in_quote = !in_quote;
            } else if !in_quote {
                cut = Some(at + 1);
            }
        }
        self.in_quote = in_quote;
        self.scanned = self.carry.len();
        Ok(cut)
    }

    /// Checks `carry[from..]` for a NUL byte and for lines over the limit.
    fn check(&mut self, from: usize) -> std::io::Result<()> {
        let new = &self.carry[from..];
        let nul = memchr(0, new);
        let limit = nul.unwrap_or(new.len());
        let mut last = 0;
        for nl in memchr_iter(b'\n', &new[..limit]) {
            if self.line_len + (nl - last) > self.max_line {
                return Err(self.not_text(
                    from + last + self.max_line - self.line_len,
                    "the line is longer than 1 MiB",
                ));
            }
            self.line_len = 0;
            last = nl + 1;
        }
        if self.line_len + (limit - last) > self.max_line {
            return Err(self.not_text(from + limit, "the line is longer than 1 MiB"));
        }
        self.line_len += limit - last;
        if let Some(z) = nul {
            return Err(self.not_text(from + z, "it contains a NUL byte"));
        }
        Ok(())
    }

    /// A [`NotText`] error at byte `at` of `carry`.
    fn not_text(&self, at: usize, reason: &'static str) -> std::io::Error {
        let at = at.min(self.carry.len());
        let line = self.line + memchr_iter(b'\n', &self.carry[..at]).count() as u64;
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            NotTextError(NotText { line, reason }),
        )
    }

    /// Hands out `carry[..cut]` as a block.
    fn take(&mut self, cut: usize) -> Block {
        let rest = self.carry.split_off(cut);
        let bytes = std::mem::replace(&mut self.carry, rest);
        self.scanned -= cut;
        let newlines: Vec<usize> = memchr_iter(b'\n', &bytes).collect();
        let block = Block {
            bytes,
            first_line: self.line,
            newlines,
        };
        self.line = block.next_line();
        block
    }
}

/// [`NotText`] as an error carried inside an I/O error.
#[derive(Debug)]
pub struct NotTextError(pub NotText);

impl std::fmt::Display for NotTextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.0.line, self.0.reason)
    }
}

impl std::error::Error for NotTextError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `text` into blocks of about `size` bytes.
    fn split(text: &str, size: usize) -> Vec<Block> {
        let mut b = Blocks::new(text.as_bytes(), size, 1 << 20);
        let mut out = Vec::new();
        while let Some(block) = b.next_block().unwrap() {
            out.push(block);
        }
        out
    }

    #[test]
    fn blocks_cover_the_text_and_end_outside_quotes() {
        let text = "h1,h2\n1,\"a\nb\"\n\r\n2,\"\"\"\n\"\n3,x";
        for size in 1..=text.len() + 1 {
            let blocks = split(text, size);
            let joined: Vec<u8> = blocks.iter().flat_map(|b| b.bytes.clone()).collect();
            assert_eq!(joined, text.as_bytes(), "size {size}");
            let mut line = 1;
            for b in &blocks {
                // Independent: the quotes in each block are balanced, and lines chain.
                assert_eq!(b.bytes.iter().filter(|&&c| c == b'"').count() % 2, 0);
                assert_eq!(b.first_line, line, "size {size}");
                line = b.next_line();
            }
            assert_eq!(line, 1 + text.matches('\n').count() as u64);
        }
        // The record "2,..." starts on line 5 (line 4 is a blank "\r"); the csv offset of a
        // record may point at the line break, or the blank lines, before it.
        let one = &split(text, 1 << 20)[0];
        let at = text.find("\n2,").unwrap();
        assert_eq!(one.line_at(at + 1), 5);
        assert_eq!(one.line_at(at), 5);
        assert_eq!(one.line_at(text.find("\r\n").unwrap() - 1), 5);
        assert_eq!(one.line_at(text.find("3,x").unwrap()), 7);
    }
}
