//! The PROXY protocol header (v1 text or v2 binary) a load balancer in
//! front of a `proxy_protocol = true` listener sends before anything else
//! on a connection: it names the client the balancer accepted, which then
//! stands in for the balancer's own address everywhere (the client's
//! address, `X-Forwarded-For`, logs).
//!
//! Exactly the header's bytes are taken from the socket: what follows it
//! (a TLS handshake, an HTTP/2 preface, a request) is left for the
//! session. The socket is looked at with `MSG_PEEK` and only the bytes
//! known to belong to the header are read.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use monoio::net::TcpStream;
use ppp::PartialResult;
use ppp::{HeaderResult, v1, v2};

/// Longest header accepted. A v1 header is at most 107 bytes; a v2 one is
/// 16 bytes, the addresses (at most 216, for Unix sockets) and TLVs, which
/// load balancers keep short (AWS's endpoint ID, Azure's link ID).
const MAX_HEADER: usize = 2048;

/// Who the header says the connection is from and to; `None` for a
/// header that names nobody (v2 `LOCAL`, the balancer's own health
/// checks; v1 `UNKNOWN`): then the peer's own address stands.
pub(crate) type Named = Option<(SocketAddr, SocketAddr)>;

/// Reads the PROXY protocol header that starts `stream`. An error for
/// anything that is not one (or is too long, or ends early).
pub(crate) async fn read_header(stream: &TcpStream) -> io::Result<Named> {
    let fd = stream.as_raw_fd();
    // The header's bytes read so far, then what the socket shows after.
    let mut seen: Vec<u8> = Vec::with_capacity(256);
    let mut peek = [0u8; 512];
    loop {
        stream.readable(false).await?;
        let room = (MAX_HEADER - seen.len()).min(peek.len());
        let n = match recv(fd, &mut peek[..room], libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let before = seen.len();
        seen.extend_from_slice(&peek[..n]);
        let (take, named) = match parse(&seen)? {
            Parsed::Complete { len, named } => (len - before, Some(named)),
            // Every byte shown belongs to the header: take them all, so
            // the next wait is for bytes not yet here.
            Parsed::Incomplete if seen.len() < MAX_HEADER => (n, None),
            Parsed::Incomplete => return Err(invalid("PROXY protocol header too long")),
        };
        seen.truncate(before + take);
        let mut got = 0;
        while got < take {
            // The bytes are in the socket's queue (just peeked): this
            // returns at once.
            got += recv(fd, &mut peek[got..take], libc::MSG_DONTWAIT)?;
        }
        if let Some(named) = named {
            return Ok(named);
        }
    }
}

/// What the bytes at the start of a connection hold.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// A whole header of `len` bytes.
    Complete { len: usize, named: Named },
    /// The start of one.
    Incomplete,
}

fn parse(bytes: &[u8]) -> io::Result<Parsed> {
    let header = HeaderResult::parse(bytes);
    if header.is_incomplete() {
        return Ok(Parsed::Incomplete);
    }
    match header {
        HeaderResult::V1(Ok(h)) => {
            let named = match h.addresses {
                v1::Addresses::Tcp4(a) => Some((
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                )),
                v1::Addresses::Tcp6(a) => Some((
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                )),
                v1::Addresses::Unknown => None,
            };
            Ok(Parsed::Complete {
                len: h.header.len(),
                named,
            })
        }
        HeaderResult::V2(Ok(h)) => {
            let named = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some((
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                )),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some((
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                )),
                // A client on a Unix socket, or unspecified: no address
                // to stand in for the peer's.
                (v2::Command::Proxy, _) => None,
            };
            Ok(Parsed::Complete {
                len: h.len(),
                named,
            })
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => {
            Err(invalid("not a PROXY protocol header"))
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// `recv(2)` on a socket this connection owns.
fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fd` is the open socket of the connection being served, and
    // `buf` is valid for `buf.len()` writable bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(from: &str, to: &str) -> Named {
        Some((from.parse().unwrap(), to.parse().unwrap()))
    }

    #[test]
    fn v1_headers_name_the_client_and_stop_at_their_crlf() {
        let text = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(text).unwrap(),
            Parsed::Complete {
                len: 41,
                named: addrs("192.0.2.7:51234", "10.0.0.1:443")
            }
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            parse(six).unwrap(),
            Parsed::Complete {
                len: six.len(),
                named: addrs("[2001:db8::1]:1", "[2001:db8::2]:2")
            }
        );
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(unknown).unwrap(),
            Parsed::Complete {
                len: 15,
                named: None
            }
        );
    }

    #[test]
    fn v2_headers_name_the_client_unless_local() {
        let from: SocketAddr = "192.0.2.7:51234".parse().unwrap();
        let to: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut bytes = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (from, to),
        )
        .build()
        .unwrap();
        let len = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&bytes).unwrap(),
            Parsed::Complete {
                len,
                named: Some((from, to))
            }
        );
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(
            parse(&local).unwrap(),
            Parsed::Complete {
                len: 16,
                named: None
            }
        );
    }

    #[test]
    fn starts_of_headers_wait_and_anything_else_is_refused() {
        assert_eq!(parse(b"PROXY TCP4 192.0").unwrap(), Parsed::Incomplete);
        assert_eq!(parse(b"\r\n\r\n\0\r\n").unwrap(), Parsed::Incomplete);
        assert_eq!(parse(b"PRO").unwrap(), Parsed::Incomplete);
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
