//! Turning an upstream's HTTP/1.1 body bytes into what an HTTP/1.1
//! client gets: the same bytes, chunked (a close-delimited body for a 1.1
//! client), or de-chunked (a chunked body for a 1.0 client).

use super::framing::{BodyReader, FramingError, chunk_header};

/// How the response's body bytes are turned into what the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// The same bytes.
    PassThrough,
    /// Close-delimited in, chunked out.
    Encode,
    /// Chunked in, payload out (a 1.0 client).
    Decode,
}

/// Appends to `out` what the client gets for the body bytes in `data`, and
/// returns how many of them belonged to the body.
pub fn frame_into(
    out: &mut Vec<u8>,
    body: &mut BodyReader,
    data: &[u8],
    relay: Relay,
) -> Result<usize, FramingError> {
    match relay {
        Relay::PassThrough => {
            let p = body.advance(data, None)?;
            out.extend_from_slice(&data[..p.consumed]);
            Ok(p.consumed)
        }
        Relay::Decode => Ok(body.advance(data, Some(out))?.consumed),
        Relay::Encode => {
            let p = body.advance(data, None)?;
            if p.consumed > 0 {
                chunk_header(out, p.consumed);
                out.extend_from_slice(&data[..p.consumed]);
                out.extend_from_slice(b"\r\n");
            }
            Ok(p.consumed)
        }
    }
}
