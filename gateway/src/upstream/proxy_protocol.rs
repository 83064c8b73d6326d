//! The PROXY protocol header a `proxy_protocol = "v1" | "v2"` cluster's
//! connections start with, naming the client whose request opened the
//! connection (so such a connection is only reused for requests from the
//! same client: [`super::target::Try::reuse_key`]).

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2};
use ringway_config::{ProxyProtocol, canonical_ip};

use crate::failure::Failure;

/// The header for a connection opened for a client at `from` that reached
/// the gateway at `to`; `None` names nobody (v2 `LOCAL`, v1 `UNKNOWN`),
/// for the gateway's own connections such as health checks.
pub(crate) fn header(version: ProxyProtocol, origin: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let origin = origin.map(same_family);
    match (version, origin) {
        (ProxyProtocol::V1, Some(ends)) => v1::Addresses::from(ends).to_string().into_bytes(),
        (ProxyProtocol::V1, None) => v1::Addresses::Unknown.to_string().into_bytes(),
        (ProxyProtocol::V2, Some(ends)) => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            ends,
        )
        .build()
        .unwrap_or_default(),
        (ProxyProtocol::V2, None) => v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap_or_default(),
    }
}

/// Writes the header on a freshly connected `stream`, before anything
/// else (a TLS handshake, the h2 preface, a request).
pub(crate) async fn send(
    stream: &mut monoio::net::TcpStream,
    version: ProxyProtocol,
    origin: Option<(SocketAddr, SocketAddr)>,
) -> Result<(), Failure> {
    let mut bytes = header(version, origin);
    crate::buffer::write_all(stream, &mut bytes)
        .await
        .map_err(|e| Failure::Connect(e.kind()))
}

/// Both addresses in one family, as a header holds them: IPv4 where both
/// are (an IPv4-mapped IPv6 address counts as IPv4), IPv6 otherwise.
fn same_family((from, to): (SocketAddr, SocketAddr)) -> (SocketAddr, SocketAddr) {
    let (a, b) = (canonical_ip(from.ip()), canonical_ip(to.ip()));
    let (a, b) = match (a, b) {
        (IpAddr::V4(x), IpAddr::V6(_)) => (IpAddr::V6(x.to_ipv6_mapped()), b),
        (IpAddr::V6(_), IpAddr::V4(y)) => (a, IpAddr::V6(y.to_ipv6_mapped())),
        _ => (a, b),
    };
    (
        SocketAddr::new(a, from.port()),
        SocketAddr::new(b, to.port()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(from: &str, to: &str) -> Option<(SocketAddr, SocketAddr)> {
        Some((from.parse().unwrap(), to.parse().unwrap()))
    }

    #[test]
    fn v1_headers_are_the_text_line() {
        let h = header(ProxyProtocol::V1, ends("192.0.2.7:51234", "10.0.0.1:443"));
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n");
        let h = header(
            ProxyProtocol::V1,
            ends("[::ffff:192.0.2.7]:1", "10.0.0.1:2"),
        );
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\r\n");
        let h = header(ProxyProtocol::V1, ends("[2001:db8::7]:1", "10.0.0.1:2"));
        assert_eq!(h, b"PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 1 2\r\n");
        assert_eq!(header(ProxyProtocol::V1, None), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_headers_hold_the_addresses_or_say_local() {
        let h = header(ProxyProtocol::V2, ends("192.0.2.7:51234", "10.0.0.1:443"));
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        // Version 2, PROXY; TCP over IPv4; 12 address bytes.
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(
            &h[16..],
            &[192, 0, 2, 7, 10, 0, 0, 1, 0xc8, 0x22, 0x01, 0xbb]
        );
        let local = header(ProxyProtocol::V2, None);
        assert_eq!(&local[12..], &[0x20, 0x00, 0, 0]);
    }
}
