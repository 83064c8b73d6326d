//! `[[listener]]`: addresses, timeouts, HTTP/2 settings and TLS (certificates
//! read and checked here, so a bad one is refused at load with its place).

use super::*;
use crate::snapshot::Underscores;
use ringway_codec::path::{EscapedSlashes, PathRules};

impl Cx<'_> {
    pub(super) fn listeners(
        &self,
        sections: &[Spanned<schema::ListenerSection>],
    ) -> Result<Vec<Listener>> {
        let mut names: HashMap<&str, ()> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, ()> = HashMap::new();
        let mut out = Vec::with_capacity(sections.len());
        for section in sections {
            let l = section.get_ref();
            if names.insert(l.name.get_ref(), ()).is_some() {
                return Err(self.err(
                    l.name.span(),
                    format!("duplicate listener name {:?}", l.name.get_ref()),
                ));
            }
            let addr = self.socket_addr(&l.listen)?;
            // Port 0 asks the kernel for a free port: never a clash.
            if addr.port() != 0 && addrs.insert(addr, ()).is_some() {
                return Err(self.err(
                    l.listen.span(),
                    format!("another listener already listens on {addr}"),
                ));
            }
            out.push(Listener {
                name: l.name.get_ref().clone(),
                addr,
                header_timeout: self.duration(l.header_timeout.as_ref(), DEFAULT_HEADER_TIMEOUT)?,
                idle_timeout: self.duration(l.idle_timeout.as_ref(), DEFAULT_IDLE_TIMEOUT)?,
                max_header_bytes: self.positive(
                    l.max_header_bytes.as_ref(),
                    DEFAULT_MAX_HEADER_BYTES,
                    "a size in bytes",
                )?,
                tls: l.tls.as_ref().map(|t| self.tls(t)).transpose()?,
                http2: match &l.http2 {
                    Some(h) => self.http2(h)?,
                    None => Http2Settings::default(),
                },
                paths: self.path_rules(l)?,
                underscores: self.choice(
                    l.underscores_in_headers.as_ref(),
                    "underscores_in_headers",
                    &[
                        ("drop", Underscores::Drop),
                        ("keep", Underscores::Keep),
                        ("reject", Underscores::Reject),
                    ],
                )?,
                trusted_proxies: self.ip_ranges(l.trusted_proxies.as_ref())?,
                max_connections: self.connection_cap(l.max_connections.as_ref())?,
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
            });
        }
        Ok(out)
    }

    fn path_rules(&self, l: &schema::ListenerSection) -> Result<PathRules> {
        Ok(PathRules {
            merge_slashes: l.merge_slashes.unwrap_or(true),
            escaped_slashes: self.choice(
                l.escaped_slashes.as_ref(),
                "escaped_slashes",
                &[
                    ("keep", EscapedSlashes::Keep),
                    ("reject", EscapedSlashes::Reject),
                    ("decode", EscapedSlashes::Decode),
                ],
            )?,
        })
    }

    /// One of `options` by name; the first is the default when `value` is
    /// absent.
    pub(super) fn choice<T: Copy>(
        &self,
        value: Option<&Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
    ) -> Result<T> {
        let Some(v) = value else {
            return Ok(options[0].1);
        };
        options
            .iter()
            .find(|(name, _)| *name == v.get_ref())
            .map(|&(_, t)| t)
            .ok_or_else(|| {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.err(
                    v.span(),
                    format!(
                        "unknown {key} {:?}; expected one of {}",
                        v.get_ref(),
                        names.join(", ")
                    ),
                )
            })
    }

    pub(super) fn http2(&self, section: &Spanned<schema::Http2Section>) -> Result<Http2Settings> {
        let h = section.get_ref();
        let d = Http2Settings::default();
        let window = |v: &Option<Spanned<SizeValue>>, default: u32| -> Result<u32> {
            let Some(v) = v else { return Ok(default) };
            parse_size(v.get_ref())
                .filter(|n| H2_WINDOWS.contains(n))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    self.err(
                        v.span(),
                        "expected a window size in 65535..=2147483647 bytes, or a string such as \"1MiB\"",
                    )
                })
        };
        let count = |v: &Option<Spanned<i64>>, default: usize| {
            self.int_or(
                v.as_ref(),
                default,
                |n| (1..=100_000).contains(n),
                "expected a count in 1..=100000",
            )
        };
        Ok(Http2Settings {
            max_concurrent_streams: self.int_or(
                h.max_concurrent_streams.as_ref(),
                d.max_concurrent_streams,
                |n| (1..=10_000).contains(n),
                "expected a stream count in 1..=10000",
            )?,
            initial_stream_window: window(&h.initial_stream_window, d.initial_stream_window)?,
            initial_connection_window: window(
                &h.initial_connection_window,
                d.initial_connection_window,
            )?,
            max_pending_reset_streams: count(
                &h.max_pending_reset_streams,
                d.max_pending_reset_streams,
            )?,
            max_local_error_resets: count(&h.max_local_error_resets, d.max_local_error_resets)?,
            h2c: h.h2c.unwrap_or(d.h2c),
        })
    }

    /// `min_version = "1.2"` (the default) or `"1.3"`.
    pub(super) fn min_version(&self, value: Option<&Spanned<String>>) -> Result<TlsVersion> {
        match value.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "1.2")) => Ok(TlsVersion::Tls12),
            Some((_, "1.3")) => Ok(TlsVersion::Tls13),
            Some((v, other)) => Err(self.err(
                v.span(),
                format!("expected \"1.2\" or \"1.3\", found {other:?}"),
            )),
        }
    }

    /// Reads a file named at `value`, relative to the config's folder.
    pub(super) fn read(&self, value: &Spanned<String>) -> Result<Vec<u8>> {
        let path = self.dir.join(value.get_ref());
        std::fs::read(&path)
            .map_err(|e| self.err(value.span(), format!("cannot read {}: {e}", path.display())))
    }

    /// One certificate chain and its key, read and checked.
    pub(super) fn certificate(
        &self,
        cert: &Spanned<String>,
        key: &Spanned<String>,
        now: i64,
    ) -> Result<TlsCertificate> {
        let chain = tls::parse_certs(&self.read(cert)?).map_err(|m| self.err(cert.span(), m))?;
        let names = tls::leaf_names(&chain[0], now).map_err(|m| self.err(cert.span(), m))?;
        let der = tls::parse_key(&self.read(key)?).map_err(|m| self.err(key.span(), m))?;
        let key = tls::certified_key(chain, der).map_err(|m| self.err(key.span(), m))?;
        Ok(TlsCertificate {
            names,
            key: Arc::new(key),
        })
    }

    pub(super) fn tls(&self, section: &Spanned<schema::TlsSection>) -> Result<Tls> {
        let t = section.get_ref();
        let now = unix_now();
        let mut certificates = Vec::new();
        match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => certificates.push(self.certificate(cert, key, now)?),
            (Some(cert), None) => {
                return Err(self.err(cert.span(), "`cert` needs its `key` beside it"));
            }
            (None, Some(key)) => {
                return Err(self.err(key.span(), "`key` needs its `cert` beside it"));
            }
            (None, None) => {}
        }
        for c in t.certificates.iter().flat_map(|c| c.get_ref()) {
            let c = c.get_ref();
            certificates.push(self.certificate(&c.cert, &c.key, now)?);
        }
        if certificates.is_empty() {
            return Err(self.err(
                section.span(),
                "expected a certificate: `cert` and `key`, or `certificates = [{ cert, key }]`",
            ));
        }
        let alpn = match &t.alpn {
            // h2 preferred; clients that do not offer it get HTTP/1.1.
            None => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Some(list) => {
                let mut alpn = Vec::new();
                for p in list.get_ref() {
                    match p.get_ref().as_str() {
                        "h2" | "http/1.1" | "http/1.0" => {
                            alpn.push(p.get_ref().as_bytes().to_vec())
                        }
                        other => {
                            return Err(self.err(
                                p.span(),
                                format!(
                                    "expected \"h2\", \"http/1.1\" or \"http/1.0\", found {other:?}"
                                ),
                            ));
                        }
                    }
                }
                alpn
            }
        };
        let min_version = self.min_version(t.min_version.as_ref())?;
        let client_auth = match (&t.client_ca, &t.client_auth) {
            (None, Some(a)) => {
                return Err(self.err(a.span(), "`client_auth` needs a `client_ca` bundle"));
            }
            (None, None) => None,
            (Some(ca), auth) => {
                let roots =
                    tls::parse_certs(&self.read(ca)?).map_err(|m| self.err(ca.span(), m))?;
                let required = match auth.as_ref().map(|a| (a, a.get_ref().as_str())) {
                    None | Some((_, "require")) => true,
                    Some((_, "optional")) => false,
                    Some((a, other)) => {
                        return Err(self.err(
                            a.span(),
                            format!("expected \"require\" or \"optional\", found {other:?}"),
                        ));
                    }
                };
                Some(ClientAuth { roots, required })
            }
        };
        let identity_header = match &t.client_identity_header {
            None => None,
            Some(h) => {
                if client_auth.is_none() {
                    return Err(self.err(
                        h.span(),
                        "`client_identity_header` needs `client_ca` (no client certificate is verified without it)",
                    ));
                }
                self.header_name(h)?;
                Some(h.get_ref().to_ascii_lowercase())
            }
        };
        Ok(Tls {
            certificates,
            alpn,
            min_version,
            client_auth,
            identity_header,
        })
    }
}
