//! An incremental decoder for HTTP/1.1 chunked bodies, shared by the
//! origin (request bodies) and the load generator (response bodies).
//! It consumes what it can from each slice and remembers where it stopped,
//! so a body never has to sit whole in memory.

/// Why a chunked body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A size line that is not hex, overflows, or a missing CRLF.
    #[error("malformed chunked encoding")]
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// Longest size line (hex digits plus extensions) accepted before the
/// body is called malformed; bounds the bytes buffered while waiting.
const MAX_LINE: usize = 4096;

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: State::Size }
    }
}

impl ChunkedDecoder {
    /// Consumes as much of `input` as possible, appending body bytes to
    /// `out` when given. Returns the bytes consumed and whether the body
    /// (with its trailers) is complete. Unconsumed bytes are an incomplete
    /// line: call again with them and more.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), ChunkError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok((pos, true)),
                State::Size => {
                    let Some(line) = line(rest)? else {
                        return Ok((pos, false));
                    };
                    let digits = &rest[..line];
                    let digits = match digits.iter().position(|&b| b == b';') {
                        Some(i) => &digits[..i],
                        None => digits,
                    };
                    let size = parse_hex(trim(digits))?;
                    pos += line + 2;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok((pos, false));
                    }
                    let take = (left as usize).min(rest.len());
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&rest[..take]);
                    }
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        return Ok((pos, false));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ChunkError::Malformed);
                    }
                    pos += 2;
                    self.state = State::Size;
                }
                State::Trailer => {
                    let Some(line) = line(rest)? else {
                        return Ok((pos, false));
                    };
                    pos += line + 2;
                    if line == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

/// The length of the line at the start of `buf` (without its CRLF), or
/// `None` when its end has not arrived yet. A bare LF is rejected.
fn line(buf: &[u8]) -> Result<Option<usize>, ChunkError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(0) => Err(ChunkError::Malformed),
        Some(i) if buf[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(ChunkError::Malformed),
        None if buf.len() > MAX_LINE => Err(ChunkError::Malformed),
        None => Ok(None),
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

fn parse_hex(digits: &[u8]) -> Result<u64, ChunkError> {
    if digits.is_empty() || digits.len() > 15 {
        return Err(ChunkError::Malformed);
    }
    let mut v: u64 = 0;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(ChunkError::Malformed),
        };
        v = (v << 4) | u64::from(n);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";

    #[test]
    fn decodes_whole_body_and_stops_before_next_message() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let (used, done) = d.decode(BODY, Some(&mut out)).unwrap();
        assert!(done);
        assert_eq!(out, b"hello world");
        assert_eq!(&BODY[used..], b"NEXT");
    }

    #[test]
    fn decodes_one_byte_at_a_time() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let end = BODY.len() - 4;
        let mut finished = false;
        for &b in &BODY[..end] {
            pending.push(b);
            let (used, done) = d.decode(&pending, Some(&mut out)).unwrap();
            pending.drain(..used);
            finished = done;
        }
        assert!(finished);
        assert!(pending.is_empty());
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn rejects_bad_sizes_and_bare_lf() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloXX",
            b"ffffffffffffffffff\r\n",
        ] {
            let mut d = ChunkedDecoder::default();
            assert!(d.decode(bad, None).is_err(), "{bad:?}");
        }
    }
}
