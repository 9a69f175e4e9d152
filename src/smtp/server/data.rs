//! The DATA reader (RFC 5321 §4.1.1.4, §4.5.2) as a state machine over byte slices,
//! without I/O: it undoes dot-stuffing, stores every line with CRLF, enforces the
//! message and header limits and the byte budget, and finds the end of the message.
//! Exposure: reads whatever an SMTP client sends after `354`.
//!
//! **Only `<CRLF>.<CRLF>` ends DATA** (the CVE-2023-51764 "SMTP smuggling" pattern):
//! the dot line must end in CRLF and follow a line that ended in CRLF (or be the first
//! line). What else arrives is treated like Postfix 3.9's
//! `smtpd_forbid_bare_newline = normalize`:
//! - a bare LF ends a line for storage (stored as CRLF) but never lets a following `.`
//!   end the message, and a `.` line ending in a bare LF is data;
//! - a bare CR (one not followed by LF) anywhere makes the message refused after its
//!   end with `550 5.6.0`; such a message is never handed on.
//!
//! Beyond a limit the rest is read and discarded, so the session stays in step.

use super::budget::{Budget, Held};
use std::sync::Arc;

/// The first reservation of a message whose size was not declared.
const FIRST_RESERVATION: usize = 64 * 1024;

/// How reading a message ended.
#[derive(Debug)]
pub(crate) enum DataOutcome {
    /// The message, dot-unstuffed with CRLF lines, and the budget it holds.
    Message {
        message: Vec<u8>,
        held: Held,
    },
    TooLarge,
    HeaderTooLarge,
    /// A bare CR somewhere in the message.
    BareCr,
    /// The byte budget ran out while reading.
    NoBudget,
}

/// What [`DataReader::start`] refuses with.
#[derive(Debug)]
pub(crate) struct NoBudget;

pub(crate) struct DataReader {
    budget: Arc<Budget>,
    message: Vec<u8>,
    held: Option<Held>,
    max_message: usize,
    max_header: usize,
    /// The previous line ended in CRLF (true before the first line).
    prev_crlf: bool,
    /// A CR was read and the next byte decides whether it ends the line.
    pending_cr: bool,
    /// Bytes of the current line so far (its terminator excluded, a stuffing dot
    /// included).
    line_len: usize,
    /// The current line began with a dot (removed as stuffing).
    dot_first: bool,
    /// Where the current line starts in `message`.
    line_start: usize,
    in_header: bool,
    header_bytes: usize,
    failure: Option<Failure>,
    bare_cr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    TooLarge,
    HeaderTooLarge,
    NoBudget,
}

impl DataReader {
    /// Starts a message: reserves its declared size (or a first piece) from the budget.
    pub(crate) fn start(
        budget: &Arc<Budget>,
        declared: Option<u64>,
        max_message: usize,
        max_header: usize,
    ) -> Result<Self, NoBudget> {
        let first = match declared {
            Some(size) => usize::try_from(size).unwrap_or(usize::MAX).min(max_message),
            None => FIRST_RESERVATION.min(max_message),
        };
        let held = budget.hold(budget.cost(first)).ok_or(NoBudget)?;
        Ok(DataReader {
            budget: budget.clone(),
            message: Vec::with_capacity(first),
            held: Some(held),
            max_message,
            max_header,
            prev_crlf: true,
            pending_cr: false,
            line_len: 0,
            dot_first: false,
            line_start: 0,
            in_header: true,
            header_bytes: 0,
            failure: None,
            bare_cr: false,
        })
    }

    /// Reads from `buf`; returns how many bytes belong to the message and whether its
    /// end was found (then the rest of `buf` is the next command).
    pub(crate) fn feed(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut at = 0;
        while at < buf.len() {
            let rest = &buf[at..];
            let special = rest.iter().position(|&b| b == b'\r' || b == b'\n');
            let run = &rest[..special.unwrap_or(rest.len())];
            if !run.is_empty() {
                self.settle_cr();
                self.text(run);
            }
            let Some(i) = special else {
                return (buf.len(), false);
            };
            at += i + 1;
            if rest[i] == b'\r' {
                self.settle_cr();
                self.pending_cr = true;
            } else {
                let crlf = std::mem::take(&mut self.pending_cr);
                if self.end_of_line(crlf) {
                    return (at, true);
                }
            }
        }
        (buf.len(), false)
    }

    /// The outcome once the end was found.
    pub(crate) fn finish(self) -> DataOutcome {
        match (self.failure, self.bare_cr, self.held) {
            (Some(Failure::TooLarge), ..) => DataOutcome::TooLarge,
            (Some(Failure::HeaderTooLarge), ..) => DataOutcome::HeaderTooLarge,
            (Some(Failure::NoBudget), ..) | (None, false, None) => DataOutcome::NoBudget,
            (None, true, _) => DataOutcome::BareCr,
            (None, false, Some(held)) => DataOutcome::Message {
                message: self.message,
                held,
            },
        }
    }

    /// A CR that was not followed by LF: part of the line, and the message is refused.
    fn settle_cr(&mut self) {
        if std::mem::take(&mut self.pending_cr) {
            self.bare_cr = true;
            self.line_len += 1;
            self.store(b"\r");
        }
    }

    fn text(&mut self, run: &[u8]) {
        let run = if self.line_len == 0 && run[0] == b'.' {
            self.dot_first = true;
            &run[1..]
        } else {
            run
        };
        self.line_len += run.len() + usize::from(self.dot_first && self.line_len == 0);
        self.store(run);
    }

    /// A line ended (in CRLF when `crlf`, else a bare LF). True at the end of data.
    fn end_of_line(&mut self, crlf: bool) -> bool {
        if crlf && self.prev_crlf && self.dot_first && self.line_len == 1 {
            self.message.truncate(self.line_start);
            return true;
        }
        if self.in_header {
            self.header_bytes = self.header_bytes.saturating_add(self.line_len + 2);
            if self.line_len == 0 {
                self.in_header = false;
            } else if self.header_bytes > self.max_header {
                self.fail(Failure::HeaderTooLarge);
            }
        }
        self.store(b"\r\n");
        self.prev_crlf = crlf;
        self.line_len = 0;
        self.dot_first = false;
        self.line_start = self.message.len();
        false
    }

    fn store(&mut self, bytes: &[u8]) {
        if self.failure.is_some() || bytes.is_empty() {
            return;
        }
        let needed = self.message.len().saturating_add(bytes.len());
        // A line's text must leave room for the CRLF that ends it.
        let room_for_crlf = if bytes == b"\r\n" { 0 } else { 2 };
        if needed.saturating_add(room_for_crlf) > self.max_message {
            self.fail(Failure::TooLarge);
            return;
        }
        let Some(held) = self.held.as_mut() else {
            return;
        };
        // The reservation covers what the message will cost once processed, not
        // only the bytes kept.
        let cost = self.budget.cost(needed);
        if !held.ensure(cost, self.budget.cost(self.max_message)) {
            self.fail(Failure::NoBudget);
            return;
        }
        if self.message.capacity() < needed {
            let grown = self
                .message
                .capacity()
                .saturating_mul(2)
                .clamp(needed, self.max_message.max(needed));
            self.message
                .reserve_exact(grown.saturating_sub(self.message.len()));
        }
        self.message.extend_from_slice(bytes);
    }

    fn fail(&mut self, failure: Failure) {
        if self.failure.is_none() {
            self.failure = Some(failure);
        }
        // Nothing more is kept; the budget goes back at once.
        self.message = Vec::new();
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> (Option<Vec<u8>>, &'static str, usize) {
        let budget = Budget::new(1 << 20);
        let mut reader = DataReader::start(&budget, None, 1000, 200).expect("budget");
        // Byte by byte, so every split of the input is exercised.
        let mut consumed = 0;
        let mut ended = false;
        for chunk in input.chunks(1) {
            let (n, done) = reader.feed(chunk);
            consumed += n;
            if done {
                ended = true;
                break;
            }
        }
        if !ended {
            return (None, "not ended", consumed);
        }
        let outcome = match reader.finish() {
            DataOutcome::Message { message, .. } => return (Some(message), "message", consumed),
            DataOutcome::TooLarge => "too large",
            DataOutcome::HeaderTooLarge => "header too large",
            DataOutcome::BareCr => "bare CR",
            DataOutcome::NoBudget => "no budget",
        };
        (None, outcome, consumed)
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_message() {
        let (m, _, n) = read(b"a\r\nb\r\n.\r\nNEXT");
        assert_eq!(m.as_deref(), Some(&b"a\r\nb\r\n"[..]));
        assert_eq!(n, 9);
        for not_the_end in [
            &b"a\n.\r\n"[..],
            b"a\r\n.\n",
            b"a\n.\n",
            b"a\r\n.\r",
            b"a\r\n. \r\n",
        ] {
            assert_eq!(read(not_the_end).1, "not ended", "{not_the_end:?}");
        }
        let (m, _, _) = read(b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n");
        assert_eq!(
            m.as_deref(),
            Some(&b"a\r\n\r\nMAIL FROM:<x@y>\r\n"[..]),
            "a bare LF is stored as CRLF; the dot line after it is data (unstuffed)"
        );
        assert_eq!(read(b".\r\nNOOP").0.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_bare_cr_refuses_the_message_but_never_ends_it() {
        assert_eq!(read(b"a\r.\r\nb\r\n.\r\n").1, "bare CR");
        assert_eq!(read(b"a\rb\r\n.\r\n").1, "bare CR");
        assert_eq!(read(b".\r\r\n.\r\n").1, "bare CR");
        assert_eq!(read(b"a\r\r\n.\r\n").1, "bare CR");
    }

    #[test]
    fn dot_stuffing_is_undone_and_limits_hold() {
        let (m, _, _) = read(b"..\r\n..x\r\n...\r\n.\r\n");
        assert_eq!(m.as_deref(), Some(&b".\r\n.x\r\n..\r\n"[..]));
        let big = [&b"S: x\r\n\r\n"[..], &[b'y'; 1100][..], b"\r\n.\r\n"].concat();
        assert_eq!(read(&big).1, "too large");
        let header = [&b"S: "[..], &[b'y'; 300][..], b"\r\n\r\nbody\r\n.\r\n"].concat();
        assert_eq!(read(&header).1, "header too large");
        let exact = [&b"\r\n"[..], &[b'z'; 996][..], b"\r\n.\r\n"].concat();
        assert_eq!(read(&exact).1, "message", "1000 bytes with every CRLF");
        let over = [&b"\r\n"[..], &[b'z'; 997][..], b"\r\n.\r\n"].concat();
        assert_eq!(read(&over).1, "too large");
    }

    #[test]
    fn the_budget_is_reserved_before_bytes_are_kept() {
        use super::super::budget::PROCESSING_MULTIPLE;
        let budget = Budget::new(100_000 * PROCESSING_MULTIPLE);
        assert!(
            DataReader::start(
                &budget,
                Some(100_001 * PROCESSING_MULTIPLE as u64),
                1 << 30,
                1000
            )
            .is_err()
        );
        let mut reader = DataReader::start(&budget, None, 1 << 20, 1000).expect("first piece");
        assert_eq!(
            budget.used(),
            FIRST_RESERVATION * PROCESSING_MULTIPLE,
            "what the message will cost processed, not only its bytes"
        );
        let other = budget
            .hold(30_000 * PROCESSING_MULTIPLE)
            .expect("another session");
        let body = [&b"\r\n"[..], &[b'x'; 90_000][..], b"\r\n.\r\n"].concat();
        assert_eq!(
            reader.feed(&body),
            (body.len(), true),
            "read to its end all the same"
        );
        assert!(matches!(reader.finish(), DataOutcome::NoBudget));
        drop(other);
        assert_eq!(budget.used(), 0, "given back");
        let mut reader = DataReader::start(&budget, None, 1 << 20, 1000).expect("again");
        assert_eq!(reader.feed(&body), (body.len(), true));
        let DataOutcome::Message { message, held } = reader.finish() else {
            panic!("fits now");
        };
        assert_eq!(message.len(), 90_004);
        assert!(held.bytes() >= message.len() * PROCESSING_MULTIPLE);
        assert!(message.capacity() <= held.bytes());
    }
}
