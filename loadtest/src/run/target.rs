//! What to send and where: the URL resolved once, and the request built
//! once (HTTP/1.1 bytes, repeated for the pipeline depth; HTTP/2 parts).

use std::net::{SocketAddr, ToSocketAddrs};

use bytes::Bytes;

use crate::{Error, Result};

/// The server to load.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved address (the first one the name gives).
    pub addr: SocketAddr,
    /// Host name or address as written in the URL, for SNI.
    pub host: String,
    /// `host[:port]` as written, for Host / :authority.
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// `https`?
    pub tls: bool,
    /// The URL as given.
    pub url: String,
}

impl Target {
    /// Parses and resolves `url` (`http://` or `https://`).
    pub fn parse(url: &str) -> Result<Target> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::invalid("URL", url, e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(Error::invalid(
                    "URL",
                    url,
                    "must start with http:// or https://",
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| Error::invalid("URL", url, "has no host"))?;
        let host = authority.host().to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (lookup, port)
            .to_socket_addrs()
            .map_err(|e| Error::io(format!("resolving {host}"), e))?
            .next()
            .ok_or_else(|| Error::invalid("URL", url, "the host resolves to no address"))?;
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        Ok(Target {
            addr,
            host,
            authority: authority.as_str().to_string(),
            path: if path.is_empty() { "/".into() } else { path },
            tls,
            url: url.to_string(),
        })
    }
}

/// The request every lane sends.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// Method.
    pub method: http::Method,
    /// Extra headers (name, value), in order.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Body (empty: none).
    pub body: Bytes,
}

impl RequestTemplate {
    /// Validates method and headers (`Name: value`).
    pub fn new(method: &str, headers: &[String], body: Bytes) -> Result<RequestTemplate> {
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| Error::invalid("method", method, "not an HTTP method token"))?;
        let mut parsed = Vec::with_capacity(headers.len());
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| Error::invalid("header", h, "expected `Name: value`"))?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| Error::invalid("header", h, "bad header name"))?;
            let value = http::HeaderValue::from_str(value.trim())
                .map_err(|_| Error::invalid("header", h, "bad header value"))?;
            parsed.push((name, value));
        }
        Ok(RequestTemplate {
            method,
            headers: parsed,
            body,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
    }

    /// The HTTP/1.1 request bytes, repeated `depth` times back to back
    /// (a pipelined batch is a slice of this).
    pub fn h1_bytes(&self, target: &Target, depth: usize) -> Bytes {
        let mut one = Vec::with_capacity(256 + self.body.len());
        one.extend_from_slice(self.method.as_str().as_bytes());
        one.push(b' ');
        one.extend_from_slice(target.path.as_bytes());
        one.extend_from_slice(b" HTTP/1.1\r\n");
        if !self.has("host") {
            one.extend_from_slice(b"host: ");
            one.extend_from_slice(target.authority.as_bytes());
            one.extend_from_slice(b"\r\n");
        }
        for (n, v) in &self.headers {
            one.extend_from_slice(n.as_str().as_bytes());
            one.extend_from_slice(b": ");
            one.extend_from_slice(v.as_bytes());
            one.extend_from_slice(b"\r\n");
        }
        if (!self.body.is_empty()
            || self.method == http::Method::POST
            || self.method == http::Method::PUT)
            && !self.has("content-length")
        {
            one.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        one.extend_from_slice(b"\r\n");
        one.extend_from_slice(&self.body);
        Bytes::from(one.repeat(depth.max(1)))
    }

    /// An HTTP/2 request head (`:authority` from the URL unless a Host
    /// header was given).
    pub fn h2_request(&self, uri: &http::Uri) -> Result<http::Request<()>, http::Error> {
        let mut b = http::Request::builder()
            .method(self.method.clone())
            .uri(uri.clone());
        for (n, v) in &self.headers {
            // Host maps to :authority in h2; sending both is a protocol error.
            if n != http::header::HOST {
                b = b.header(n, v);
            }
        }
        if !self.body.is_empty() && !self.has("content-length") {
            b = b.header(http::header::CONTENT_LENGTH, self.body.len());
        }
        b.body(())
    }

    /// The absolute URI h2 requests carry.
    pub fn h2_uri(&self, target: &Target) -> Result<http::Uri> {
        let authority = self
            .headers
            .iter()
            .find(|(n, _)| n == http::header::HOST)
            .and_then(|(_, v)| v.to_str().ok())
            .unwrap_or(&target.authority);
        let scheme = if target.tls { "https" } else { "http" };
        format!("{scheme}://{authority}{}", target.path)
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::invalid("URL", &target.url, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_with_default_ports() {
        let t = Target::parse("http://127.0.0.1/x?y=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(t.path, "/x?y=1");
        let t = Target::parse("https://127.0.0.1:8443").unwrap();
        assert!(t.tls);
        assert_eq!(t.path, "/");
        assert_eq!(t.authority, "127.0.0.1:8443");
        assert!(Target::parse("ftp://127.0.0.1/").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn h1_request_has_host_length_and_repeats() {
        let t = Target::parse("http://127.0.0.1:9000/p").unwrap();
        let r =
            RequestTemplate::new("POST", &["x-a: 1".into()], Bytes::from_static(b"hi")).unwrap();
        let one = r.h1_bytes(&t, 1);
        assert_eq!(
            &one[..],
            b"POST /p HTTP/1.1\r\nhost: 127.0.0.1:9000\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nhi"
        );
        assert_eq!(r.h1_bytes(&t, 3).len(), one.len() * 3);
        assert!(RequestTemplate::new("GET", &["nocolon".into()], Bytes::new()).is_err());
        assert!(RequestTemplate::new("G ET", &[], Bytes::new()).is_err());
    }
}
