//! `[cluster.X]`: endpoints, protocol, upstream TLS, balancer, limits,
//! health checks and outlier ejection.

use super::*;

impl Cx<'_> {
    pub(super) fn clusters(
        &self,
        sections: &BTreeMap<Spanned<String>, Spanned<schema::ClusterSection>>,
    ) -> Result<(Vec<Cluster>, HashMap<String, ClusterId>)> {
        let mut out = Vec::with_capacity(sections.len());
        let mut ids = HashMap::new();
        for (name, section) in sections {
            let c = section.get_ref();
            let protocol = self.protocol(c.protocol.as_ref())?;
            let tls = c
                .tls
                .as_ref()
                .map(|t| self.upstream_tls(t, protocol))
                .transpose()?;
            let (source, endpoints_file) = match (&c.discovery, c.endpoints.is_empty()) {
                (Some(d), false) => {
                    return Err(self.err(
                        d.span(),
                        format!(
                            "cluster {:?} has both `endpoints` and `discovery`; keep one",
                            name.get_ref()
                        ),
                    ));
                }
                (Some(d), true) => match (&d.get_ref().file, &d.get_ref().srv) {
                    (Some(file), None) => {
                        let (declared, path) = self.endpoints_file(file, tls.as_ref())?;
                        (EndpointSource::Listed(declared), Some(path))
                    }
                    (None, Some(srv)) => (EndpointSource::Srv(self.srv_name(srv)?), None),
                    _ => {
                        return Err(self.err(
                            d.span(),
                            "expected one of `discovery = { file = \"...\" }` or `discovery = { srv = \"...\" }`",
                        ));
                    }
                },
                (None, true) => {
                    return Err(self.err(
                        section.span(),
                        format!("cluster {:?} needs at least one endpoint", name.get_ref()),
                    ));
                }
                (None, false) => (
                    EndpointSource::Listed(self.endpoints(&c.endpoints, tls.as_ref())?),
                    None,
                ),
            };
            // Literal addresses now; names once the resolver answers.
            let endpoints = source.endpoints(&|_| None);
            let (balancer, hash_key) = match &c.balancer {
                None => (BalancerKind::RoundRobin, None),
                Some(b) => self.balancer(b)?,
            };
            ids.insert(name.get_ref().clone(), ClusterId(out.len() as u32));
            out.push(Cluster {
                name: name.get_ref().clone(),
                endpoints,
                source,
                balancer,
                hash_key,
                connect_timeout: self
                    .duration(c.connect_timeout.as_ref(), DEFAULT_CONNECT_TIMEOUT)?,
                idle_timeout: self.duration(c.idle_timeout.as_ref(), DEFAULT_POOL_IDLE_TIMEOUT)?,
                health: c.health.as_ref().map(|h| self.health(h)).transpose()?,
                outlier: match &c.outlier {
                    Some(o) => self.outlier(o)?,
                    None => Outlier::default(),
                },
                limits: match &c.limits {
                    Some(l) => self.limits(l)?,
                    None => Limits::default(),
                },
                max_idle_per_endpoint: match &c.max_idle_per_endpoint {
                    Some(v) if *v.get_ref() == 0 => 0,
                    other => self.positive(
                        other.as_ref(),
                        DEFAULT_MAX_IDLE_PER_ENDPOINT,
                        "a connection count",
                    )?,
                },
                protocol,
                max_streams_per_connection: self.int_or(
                    c.max_streams_per_connection.as_ref(),
                    DEFAULT_MAX_STREAMS_PER_CONNECTION,
                    |n| (1..=10_000).contains(n),
                    "expected a stream count in 1..=10000",
                )?,
                tls,
                endpoints_file,
                proxy_protocol: match &c.proxy_protocol {
                    None => None,
                    Some(v) => Some(self.choice(
                        Some(v),
                        "proxy_protocol",
                        &[("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)],
                    )?),
                },
                slow_start: match &c.slow_start {
                    None => None,
                    Some(v) if matches!(balancer, BalancerKind::RingHash { .. } | BalancerKind::Maglev { .. }) => {
                        return Err(self.err(
                            v.span(),
                            "`slow_start` applies to \"round-robin\", \"random\" and \"least-request\"; a hashing balancer keeps keys on their endpoints instead",
                        ));
                    }
                    Some(v) => Some(self.duration(Some(v), Duration::ZERO)?),
                },
                table: None,
            });
        }
        Ok((out, ids))
    }

    /// The endpoints of a list, each checked (names are not resolved
    /// here: the gateway's resolver follows them).
    fn endpoints(
        &self,
        list: &[Spanned<schema::EndpointValue>],
        tls: Option<&UpstreamTls>,
    ) -> Result<Vec<DeclaredEndpoint>> {
        let mut endpoints = Vec::with_capacity(list.len());
        for e in list {
            let text = &e.get_ref().addr;
            let (host, port) = host_port(text).ok_or_else(|| {
                self.err(
                    e.span(),
                    format!("expected an address \"IP:port\" or \"host:port\", found {text:?}"),
                )
            })?;
            let verifiable = match tls {
                Some(tls) if tls.server_name.is_none() => ServerName::try_from(host).is_ok(),
                _ => true,
            };
            if !verifiable {
                return Err(self.err(
                    e.span(),
                    format!(
                        "{host:?} is not a name TLS can verify; set the cluster's `tls.server_name`"
                    ),
                ));
            }
            let weight = u32::try_from(e.get_ref().weight)
                .ok()
                .filter(|w| (1..=1_000_000).contains(w))
                .ok_or_else(|| self.err(e.span(), "expected a weight in 1..=1000000"))?;
            endpoints.push(DeclaredEndpoint {
                host: host.to_owned(),
                port,
                weight,
                ip: host.parse().ok(),
            });
        }
        Ok(endpoints)
    }

    /// An SRV name, as `discovery = { srv = ... }` writes it.
    fn srv_name(&self, value: &Spanned<String>) -> Result<String> {
        let name = value.get_ref().trim_end_matches('.');
        if !is_dns_name(name) {
            return Err(self.err(
                value.span(),
                format!(
                    "expected an SRV name such as \"_api._tcp.service.consul\", found {:?}",
                    value.get_ref()
                ),
            ));
        }
        Ok(name.to_owned())
    }

    /// The endpoints in the file `file` names (relative to this file's
    /// folder), and its path. Errors in it point into it, by its own
    /// `file:line:col`.
    fn endpoints_file(
        &self,
        file: &Spanned<String>,
        tls: Option<&UpstreamTls>,
    ) -> Result<(Vec<DeclaredEndpoint>, std::path::PathBuf)> {
        let path = self.dir.join(file.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.err(
                file.span(),
                format!("cannot read endpoints file {}: {e}", path.display()),
            )
        })?;
        let name = path.display().to_string();
        let cx = Cx {
            name: &name,
            text: &text,
            dir: self.dir,
            system_roots: std::cell::OnceCell::new(),
        };
        let parsed: schema::EndpointsFile = toml::from_str(&text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            Error::Invalid {
                at: Location::of(&name, &text, offset),
                message: e.message().trim().to_owned(),
            }
        })?;
        if parsed.endpoints.is_empty() {
            return Err(cx.err(0..0, "the endpoints file lists no endpoint"));
        }
        Ok((cx.endpoints(&parsed.endpoints, tls)?, path))
    }

    pub(super) fn protocol(&self, value: Option<&Spanned<String>>) -> Result<UpstreamProtocol> {
        match value.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "http1" | "http/1.1")) => Ok(UpstreamProtocol::Http1),
            Some((_, "h2" | "http2")) => Ok(UpstreamProtocol::Http2),
            Some((v, other)) => Err(self.err(
                v.span(),
                format!("unknown protocol {other:?}; expected \"http1\" (or \"http/1.1\") or \"h2\" (or \"http2\")"),
            )),
        }
    }

    pub(super) fn upstream_tls(
        &self,
        section: &Spanned<schema::UpstreamTlsSection>,
        protocol: UpstreamProtocol,
    ) -> Result<UpstreamTls> {
        let t = section.get_ref();
        let roots = match &t.ca {
            Some(ca) => {
                let certs =
                    tls::parse_certs(&self.read(ca)?).map_err(|m| self.err(ca.span(), m))?;
                let count = certs.len();
                let roots = tls::usable_roots(certs);
                if roots.len() != count {
                    return Err(self.err(
                        ca.span(),
                        "a certificate of the bundle cannot serve as a trust anchor",
                    ));
                }
                roots
            }
            None => self
                .system_roots
                .get_or_init(tls::system_roots)
                .clone()
                .map_err(|m| self.err(section.span(), m))?,
        };
        let server_name = match &t.server_name {
            None => None,
            Some(name) => {
                if ServerName::try_from(name.get_ref().as_str()).is_err() {
                    return Err(self.err(
                        name.span(),
                        format!(
                            "expected a DNS name or an IP address, found {:?}",
                            name.get_ref()
                        ),
                    ));
                }
                Some(name.get_ref().clone())
            }
        };
        let client_identity = match (&t.client_cert, &t.client_key) {
            (Some(cert), Some(key)) => Some(self.certificate(cert, key, unix_now())?.key),
            (Some(cert), None) => {
                return Err(self.err(
                    cert.span(),
                    "`client_cert` needs its `client_key` beside it",
                ));
            }
            (None, Some(key)) => {
                return Err(self.err(key.span(), "`client_key` needs its `client_cert` beside it"));
            }
            (None, None) => None,
        };
        Ok(UpstreamTls {
            roots,
            server_name,
            client_identity,
            min_version: self.min_version(t.min_version.as_ref())?,
            alpn: vec![match protocol {
                UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
                UpstreamProtocol::Http2 => b"h2".to_vec(),
            }],
        })
    }

    pub(super) fn balancer(
        &self,
        b: &Spanned<schema::BalancerValue>,
    ) -> Result<(BalancerKind, Option<HashKey>)> {
        let v = b.get_ref();
        let bad = |message: String| self.err(b.span(), message);
        let size = |n: Option<i64>, what: &str| -> Result<Option<usize>> {
            n.map(|n| {
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(format!("expected {what} greater than zero")))
            })
            .transpose()
        };
        let hashing = matches!(v.kind.as_str(), "ring-hash" | "maglev");
        let key = match (&v.key, hashing) {
            (None, _) => None,
            (Some(_), false) => return Err(bad(format!("`key` applies to \"ring-hash\" and \"maglev\", not {:?}", v.kind))),
            (Some(k), true) => Some(hash_key(k).ok_or_else(|| {
                bad(format!("unknown hash key {k:?}; expected \"header:NAME\", \"cookie:NAME\", \"query:NAME\", \"path\" or \"client-ip\""))
            })?),
        };
        let unused = |present: bool, field: &str| -> Result<()> {
            if present {
                return Err(bad(format!("`{field}` does not apply to {:?}", v.kind)));
            }
            Ok(())
        };
        let kind = match v.kind.as_str() {
            "round-robin" | "random" => {
                unused(
                    v.table_size.is_some()
                        || v.min_ring_size.is_some()
                        || v.max_ring_size.is_some(),
                    "a table or ring size",
                )?;
                unused(v.bounded_load.is_some(), "bounded_load")?;
                unused(v.active_request_bias.is_some(), "active_request_bias")?;
                if v.kind == "random" {
                    BalancerKind::Random
                } else {
                    BalancerKind::RoundRobin
                }
            }
            "least-request" => {
                unused(
                    v.table_size.is_some()
                        || v.min_ring_size.is_some()
                        || v.max_ring_size.is_some(),
                    "a table or ring size",
                )?;
                unused(v.bounded_load.is_some(), "bounded_load")?;
                let mut kind = BalancerKind::least_request();
                if let (
                    Some(bias),
                    BalancerKind::LeastRequest {
                        active_request_bias,
                    },
                ) = (v.active_request_bias, &mut kind)
                {
                    *active_request_bias = bias;
                }
                kind
            }
            "ring-hash" => {
                unused(v.table_size.is_some(), "table_size")?;
                unused(v.active_request_bias.is_some(), "active_request_bias")?;
                let mut kind = BalancerKind::ring_hash();
                if let BalancerKind::RingHash {
                    min_ring_size,
                    max_ring_size,
                    bounded_load,
                } = &mut kind
                {
                    if let Some(min) = size(v.min_ring_size, "min_ring_size")? {
                        *min_ring_size = min;
                    }
                    *max_ring_size = size(v.max_ring_size, "max_ring_size")?;
                    *bounded_load = v.bounded_load;
                }
                kind
            }
            "maglev" => {
                unused(
                    v.min_ring_size.is_some() || v.max_ring_size.is_some(),
                    "a ring size",
                )?;
                unused(v.active_request_bias.is_some(), "active_request_bias")?;
                let mut kind = BalancerKind::maglev();
                if let BalancerKind::Maglev {
                    table_size,
                    bounded_load,
                } = &mut kind
                {
                    if let Some(n) = size(v.table_size, "table_size")? {
                        *table_size = n;
                    }
                    *bounded_load = v.bounded_load;
                }
                kind
            }
            other => {
                return Err(bad(format!(
                    "unknown balancer {other:?}; expected \"round-robin\", \"random\", \"least-request\", \"ring-hash\" or \"maglev\""
                )));
            }
        };
        // Parameters the algorithm itself refuses (a table size that is
        // not prime, a load factor below 1), checked as building would
        // check them; the tables are built later, once per process.
        kind.check()
            .map_err(|e| bad(format!("invalid balancer: {e}")))?;
        Ok((kind, key))
    }

    pub(super) fn limits(&self, l: &Spanned<schema::LimitsSection>) -> Result<Limits> {
        let s = l.get_ref();
        let d = Limits::default();
        let count = |v: &Option<Spanned<i64>>, default: u32| {
            self.int_or(
                v.as_ref(),
                default,
                |&n| n > 0,
                "expected a limit greater than zero",
            )
        };
        Ok(Limits {
            max_connections: count(&s.max_connections, d.max_connections)?,
            max_pending: count(&s.max_pending, d.max_pending)?,
            max_requests: count(&s.max_requests, d.max_requests)?,
            max_retries: count(&s.max_retries, d.max_retries)?,
        })
    }

    pub(super) fn health(&self, h: &Spanned<schema::HealthSection>) -> Result<HealthCheck> {
        let s = h.get_ref();
        let kind = s.kind.as_ref().map_or("http", |k| k.get_ref().as_str());
        // A key the kind does not use is refused where it is written: a
        // `path` on a tcp check would otherwise be silently ignored.
        let unused = |key: &Option<Spanned<String>>, name: &str| match key {
            Some(v) => Err(self.err(
                v.span(),
                format!("`{name}` is not used by a health check of kind {kind:?}"),
            )),
            None => Ok(()),
        };
        let kind = match kind {
            "http" => {
                unused(&s.service, "service")?;
                let Some(path) = &s.path else {
                    return Err(self.err(
                        h.span(),
                        "a health check of kind \"http\" needs a `path` to GET",
                    ));
                };
                if !path.get_ref().starts_with('/') {
                    return Err(self.err(path.span(), "expected a path starting with `/`"));
                }
                HealthKind::Http {
                    path: path.get_ref().clone(),
                }
            }
            "tcp" => {
                unused(&s.path, "path")?;
                unused(&s.service, "service")?;
                unused(&s.host, "host")?;
                HealthKind::Tcp
            }
            "grpc" => {
                unused(&s.path, "path")?;
                HealthKind::Grpc {
                    service: s
                        .service
                        .as_ref()
                        .map(|v| v.get_ref().clone())
                        .unwrap_or_default(),
                }
            }
            _ => {
                let span = s.kind.as_ref().map_or(h.span(), |k| k.span());
                return Err(self.err(span, "expected \"http\", \"tcp\" or \"grpc\""));
            }
        };
        let host = match &s.host {
            Some(v)
                if v.get_ref().is_empty()
                    || !v
                        .get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'/') =>
            {
                return Err(self.err(v.span(), "expected a host name, with a port or not"));
            }
            v => v.as_ref().map(|v| v.get_ref().clone()),
        };
        let threshold = |v: &Option<Spanned<i64>>, default: u32| {
            self.int_or(
                v.as_ref(),
                default,
                |&n| n > 0,
                "expected a count greater than zero",
            )
        };
        Ok(HealthCheck {
            kind,
            host,
            interval: self.duration(s.interval.as_ref(), Duration::from_secs(5))?,
            timeout: self.duration(s.timeout.as_ref(), Duration::from_secs(1))?,
            healthy_threshold: threshold(&s.healthy_threshold, 1)?,
            unhealthy_threshold: threshold(&s.unhealthy_threshold, 2)?,
        })
    }

    pub(super) fn outlier(&self, o: &Spanned<schema::OutlierSection>) -> Result<Outlier> {
        let s = o.get_ref();
        let defaults = Outlier::default();
        let percent = |v: &Option<Spanned<i64>>, default: u8| {
            self.int_or(
                v.as_ref(),
                default,
                |&p| p <= 100,
                "expected a percentage in 0..=100",
            )
        };
        Ok(Outlier {
            consecutive_failures: self.int_or(
                s.consecutive_failures.as_ref(),
                defaults.consecutive_failures,
                |_| true,
                "expected a count of zero (never) or more",
            )?,
            base_ejection: self.duration(s.base_ejection_time.as_ref(), defaults.base_ejection)?,
            max_ejection: self.duration(s.max_ejection_time.as_ref(), defaults.max_ejection)?,
            max_ejection_percent: percent(&s.max_ejection_percent, defaults.max_ejection_percent)?,
            panic_threshold: percent(&s.panic_threshold, defaults.panic_threshold)?,
        })
    }
}

/// `host:port` split: an IP literal (IPv6 in brackets) or a DNS name, and
/// a port above 0; `None` for anything else.
fn host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|&p| p > 0)?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
            .then_some((v6, port));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host) {
        return Some((host, port));
    }
    None
}

/// A name DNS can be asked: dot-separated labels of letters, digits, `-`
/// and `_` (SRV names and some internal names use it), each 1..=63 long,
/// 253 at most in all.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
