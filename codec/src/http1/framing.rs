//! Where a message body ends.
//!
//! [`BodyReader`] is fed the bytes that follow a message head and says how
//! many of them belong to the body and whether the body is complete. For
//! chunked bodies it validates the framing strictly (hex sizes without
//! overflow, CRLF everywhere, bounded extension and trailer lines) while
//! the bytes pass through unchanged: the gateway forwards chunked bodies as
//! they came, so a framing it accepts is one the upstream reads the same way.

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// The body's bytes are not valid for its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A chunk size is not hex, overflows, or is followed by garbage.
    #[error("invalid chunk size")]
    ChunkSize,
    /// A line inside the chunked framing did not end with CRLF.
    #[error("chunked framing without CRLF")]
    MissingCrlf,
    /// A chunk extension or trailer line is too long.
    #[error("chunk extension or trailer too long")]
    LineTooLong,
}

/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_LINE: u32 = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Reading hex digits of a chunk size; `digits` seen so far.
    Size { size: u64, digits: u8 },
    /// After the size: optional whitespace, then `;ext` (once `in_ext`),
    /// then CR.
    SizeRest { size: u64, seen: u32, in_ext: bool },
    /// CR seen at the end of the size line.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { left: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart { seen: u32 },
    /// Inside a trailer line.
    Trailer { seen: u32 },
    /// CR at the end of a trailer line.
    TrailerLf { seen: u32 },
    /// CR of the final empty line.
    FinalLf,
    /// The whole body has been seen.
    Done,
}

/// Tracks a body's progress through its framing.
#[derive(Debug, Clone)]
pub struct BodyReader {
    state: State,
    /// The chunked trailer section's lines, when asked for
    /// ([`BodyReader::keep_trailers`]): bounded by `MAX_LINE` with the
    /// rest of the section.
    trailers: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// What [`BodyReader::advance`] found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// How many of the given bytes belong to the body.
    pub consumed: usize,
    /// The body is complete after those bytes.
    pub done: bool,
}

impl BodyReader {
    /// A reader for a body with this framing.
    pub fn new(framing: Framing) -> BodyReader {
        let state = match framing {
            Framing::Empty => State::Length(0),
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::Size { size: 0, digits: 0 }),
            Framing::UntilClose => State::UntilClose,
        };
        BodyReader {
            state,
            trailers: None,
        }
    }

    /// Keeps the chunked trailer section's lines (each `name: value\r\n`)
    /// as they pass, for a peer that takes trailers in another form
    /// (HTTP/2). Without it they are checked and skipped.
    pub fn keep_trailers(mut self) -> BodyReader {
        self.trailers = Some(Vec::new());
        self
    }

    /// The trailer lines kept so far (empty when there were none, or
    /// when they were not asked for).
    pub fn trailers(&self) -> &[u8] {
        self.trailers.as_deref().unwrap_or_default()
    }

    /// True when the whole body has been seen.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Length(0) | State::Chunked(Chunked::Done))
    }

    /// How many of the next body bytes are payload that needs no looking
    /// at, so that they may be moved without being read (spliced): the
    /// rest of a length-delimited body, the rest of the current chunk's
    /// data, `u64::MAX` for a body that runs until the sender closes; 0
    /// where framing bytes come next.
    pub fn opaque_len(&self) -> u64 {
        match self.state {
            State::Length(left) => left,
            State::Chunked(Chunked::Data { left }) => left,
            State::Chunked(_) => 0,
            State::UntilClose => u64::MAX,
        }
    }

    /// Accounts for `n` payload bytes moved without being seen; `n` is
    /// at most [`BodyReader::opaque_len`] (more is taken as all of it).
    pub fn skip_opaque(&mut self, n: u64) {
        match &mut self.state {
            State::Length(left) => *left = left.saturating_sub(n),
            State::Chunked(state) => {
                if let Chunked::Data { left } = state {
                    *left = left.saturating_sub(n);
                    if *left == 0 {
                        *state = Chunked::DataCr;
                    }
                }
            }
            State::UntilClose => {}
        }
    }

    /// Feeds the next bytes. When `payload` is given, the body's payload
    /// (chunk data without framing) is appended to it, for a peer that
    /// cannot take chunked framing.
    pub fn advance(
        &mut self,
        data: &[u8],
        mut payload: Option<&mut Vec<u8>>,
    ) -> Result<Progress, FramingError> {
        match &mut self.state {
            State::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= take as u64;
                if let Some(out) = payload {
                    out.extend_from_slice(&data[..take]);
                }
                Ok(Progress {
                    consumed: take,
                    done: *left == 0,
                })
            }
            State::UntilClose => {
                if let Some(out) = payload {
                    out.extend_from_slice(data);
                }
                Ok(Progress {
                    consumed: data.len(),
                    done: false,
                })
            }
            State::Chunked(state) => {
                let mut i = 0;
                while i < data.len() && *state != Chunked::Done {
                    if let Chunked::Data { left } = state {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(data.len() - i);
                        if let Some(out) = payload.as_deref_mut() {
                            out.extend_from_slice(&data[i..i + take]);
                        }
                        *left -= take as u64;
                        i += take;
                        if *left == 0 {
                            *state = Chunked::DataCr;
                        }
                        continue;
                    }
                    let before = *state;
                    *state = step(before, data[i])?;
                    if let Some(kept) = self.trailers.as_mut()
                        && matches!(
                            state,
                            Chunked::Trailer { .. }
                                | Chunked::TrailerLf { .. }
                                | Chunked::TrailerStart { .. }
                        )
                        && !matches!(before, Chunked::SizeLf { .. })
                    {
                        kept.push(data[i]);
                    }
                    i += 1;
                }
                Ok(Progress {
                    consumed: i,
                    done: *state == Chunked::Done,
                })
            }
        }
    }
}

/// One byte of chunked framing outside chunk data.
fn step(state: Chunked, b: u8) -> Result<Chunked, FramingError> {
    use Chunked::*;
    Ok(match state {
        Size { size, digits } => match hex_value(b) {
            Some(v) => {
                if digits >= 16 || size > (u64::MAX >> 4) {
                    return Err(FramingError::ChunkSize);
                }
                Size {
                    size: size << 4 | u64::from(v),
                    digits: digits + 1,
                }
            }
            None if digits == 0 => return Err(FramingError::ChunkSize),
            None => size_rest(size, 0, false, b)?,
        },
        SizeRest { size, seen, in_ext } => {
            if seen >= MAX_LINE {
                return Err(FramingError::LineTooLong);
            }
            size_rest(size, seen, in_ext, b)?
        }
        SizeLf { size } => match b {
            b'\n' if size == 0 => TrailerStart { seen: 0 },
            b'\n' => Data { left: size },
            _ => return Err(FramingError::MissingCrlf),
        },
        // Chunk data is consumed in bulk by the caller, never byte by byte.
        Data { .. } => return Err(FramingError::ChunkSize),
        DataCr => match b {
            b'\r' => DataLf,
            _ => return Err(FramingError::MissingCrlf),
        },
        DataLf => match b {
            b'\n' => Size { size: 0, digits: 0 },
            _ => return Err(FramingError::MissingCrlf),
        },
        TrailerStart { seen } => match b {
            b'\r' => FinalLf,
            b'\n' => return Err(FramingError::MissingCrlf),
            // obs-fold (a continuation line) is refused, as in heads.
            b' ' | b'\t' => return Err(FramingError::MissingCrlf),
            _ => Trailer { seen: seen + 1 },
        },
        Trailer { seen } => {
            if seen >= MAX_LINE {
                return Err(FramingError::LineTooLong);
            }
            match b {
                b'\r' => TrailerLf { seen },
                b'\n' | 0 => return Err(FramingError::MissingCrlf),
                _ => Trailer { seen: seen + 1 },
            }
        }
        TrailerLf { seen } => match b {
            b'\n' => TrailerStart { seen },
            _ => return Err(FramingError::MissingCrlf),
        },
        FinalLf => match b {
            b'\n' => Done,
            _ => return Err(FramingError::MissingCrlf),
        },
        Done => Done,
    })
}

/// After the size digits: whitespace, an extension, or the CR.
/// Extensions are passed on untouched; only their length is bounded.
fn size_rest(size: u64, seen: u32, in_ext: bool, b: u8) -> Result<Chunked, FramingError> {
    let next = |in_ext| {
        Ok(Chunked::SizeRest {
            size,
            seen: seen + 1,
            in_ext,
        })
    };
    match b {
        b'\r' => Ok(Chunked::SizeLf { size }),
        b'\n' | 0 => Err(FramingError::MissingCrlf),
        b';' => next(true),
        b' ' | b'\t' => next(in_ext),
        _ if in_ext && (b.is_ascii_graphic() || b >= 0x80) => next(true),
        _ => Err(FramingError::ChunkSize),
    }
}

pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Writes one chunk's framing around `len` bytes of payload: the size line
/// before and the CRLF after, for re-framing a close-delimited body.
pub fn chunk_header(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: Framing, input: &[u8]) -> Result<(usize, bool, Vec<u8>), FramingError> {
        let mut r = BodyReader::new(framing);
        let mut payload = Vec::new();
        let p = r.advance(input, Some(&mut payload))?;
        Ok((p.consumed, p.done, payload))
    }

    /// Feeding one byte at a time must agree with feeding all at once.
    fn run_bytewise(
        framing: Framing,
        input: &[u8],
    ) -> Result<(usize, bool, Vec<u8>), FramingError> {
        let mut r = BodyReader::new(framing);
        let mut payload = Vec::new();
        let mut consumed = 0;
        for b in input {
            let p = r.advance(std::slice::from_ref(b), Some(&mut payload))?;
            consumed += p.consumed;
            if p.done {
                return Ok((consumed, true, payload));
            }
        }
        Ok((consumed, false, payload))
    }

    #[test]
    fn trailer_lines_are_kept_when_asked_for_whichever_way_the_bytes_come() {
        let body = b"5\r\nhello\r\n0\r\nx-a: 1\r\nx-b: 2\r\n\r\nNEXT";
        let mut whole = BodyReader::new(Framing::Chunked).keep_trailers();
        let p = whole.advance(body, None).unwrap();
        assert_eq!((p.consumed, p.done), (body.len() - 4, true));
        assert_eq!(whole.trailers(), b"x-a: 1\r\nx-b: 2\r\n");
        let mut bytewise = BodyReader::new(Framing::Chunked).keep_trailers();
        for b in &body[..body.len() - 4] {
            bytewise.advance(std::slice::from_ref(b), None).unwrap();
        }
        assert_eq!(bytewise.trailers(), whole.trailers());
        let mut none = BodyReader::new(Framing::Chunked).keep_trailers();
        none.advance(b"0\r\n\r\n", None).unwrap();
        assert!(none.trailers().is_empty());
        let mut unasked = BodyReader::new(Framing::Chunked);
        unasked.advance(body, None).unwrap();
        assert!(unasked.trailers().is_empty());
    }

    #[test]
    fn opaque_payload_can_be_skipped_without_being_seen() {
        let mut length = BodyReader::new(Framing::Length(10));
        assert_eq!(length.opaque_len(), 10);
        length.skip_opaque(4);
        assert_eq!(length.opaque_len(), 6);
        length.skip_opaque(6);
        assert!(length.is_done());
        // Chunked: only chunk data is opaque; the framing after it is read.
        let mut chunked = BodyReader::new(Framing::Chunked);
        assert_eq!(chunked.opaque_len(), 0);
        assert_eq!(chunked.advance(b"a\r\n", None).unwrap().consumed, 3);
        assert_eq!(chunked.opaque_len(), 10);
        chunked.skip_opaque(10);
        assert_eq!(chunked.opaque_len(), 0);
        let p = chunked.advance(b"\r\n0\r\n\r\n", None).unwrap();
        assert!(p.done && p.consumed == 7);
        assert_eq!(BodyReader::new(Framing::UntilClose).opaque_len(), u64::MAX);
    }

    #[test]
    fn length_stops_at_its_count() {
        assert_eq!(
            run(Framing::Length(3), b"abcdef"),
            Ok((3, true, b"abc".to_vec()))
        );
        assert_eq!(
            run(Framing::Length(10), b"abc"),
            Ok((3, false, b"abc".to_vec()))
        );
        assert_eq!(run(Framing::Empty, b"abc"), Ok((0, true, vec![])));
    }

    #[test]
    fn chunked_finds_the_end_and_payload() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let expect = Ok((body.len() - 4, true, b"hello world".to_vec()));
        assert_eq!(run(Framing::Chunked, body), expect);
        assert_eq!(run_bytewise(Framing::Chunked, body), expect);
        let upper = b"A\r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(run(Framing::Chunked, upper).unwrap().2, b"0123456789");
    }

    #[test]
    fn chunked_incomplete_is_not_done() {
        assert!(!run(Framing::Chunked, b"5\r\nhel").unwrap().1);
        assert!(!run(Framing::Chunked, b"0\r\n\r").unwrap().1);
    }

    #[test]
    fn chunked_refuses_ambiguous_framing() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after size
            b"5\r\nhello\n0\r\n\r\n",      // bare LF after data
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than size
            b"g\r\n",                      // not hex
            b"\r\n",                       // empty size
            b"-1\r\n",                     // sign
            b"0x5\r\nhello\r\n",           // prefix
            b"10000000000000000\r\n",      // 17 digits, overflow
            b"0\r\nx: 1\n\r\n",            // bare LF in trailer
            b"0\r\n folded\r\n\r\n",       // obs-fold in trailer
            b"5 5\r\nhello\r\n",           // digits after whitespace
        ] {
            assert!(
                run(Framing::Chunked, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(run_bytewise(Framing::Chunked, bad).is_err());
        }
    }

    #[test]
    fn chunked_bounds_extensions() {
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE as usize + 1));
        assert_eq!(run(Framing::Chunked, &long), Err(FramingError::LineTooLong));
    }

    #[test]
    fn until_close_takes_everything() {
        assert_eq!(
            run(Framing::UntilClose, b"abc"),
            Ok((3, false, b"abc".to_vec()))
        );
    }
}
