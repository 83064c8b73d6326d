//! `[[route]]`: match rules, actions (proxy, split, redirect, respond),
//! request policy (headers, rewrites, limits, faults) and retries.

use super::*;

impl Cx<'_> {
    pub(super) fn routes(
        &self,
        sections: &[Spanned<schema::RouteSection>],
        clusters: &HashMap<String, ClusterId>,
    ) -> Result<(Vec<RouteRule>, Vec<Route>)> {
        let mut rules = Vec::with_capacity(sections.len());
        let mut routes = Vec::with_capacity(sections.len());
        for (i, section) in sections.iter().enumerate() {
            let r = section.get_ref();
            let action = match (&r.cluster, &r.split, &r.respond, &r.redirect) {
                (Some(name), None, None, None) => Action::Proxy(self.cluster_id(name, clusters)?),
                (None, Some(split), None, None) => Action::Split(self.split(split, clusters)?),
                (None, None, Some(respond), None) => {
                    Action::Respond(self.direct_response(respond)?)
                }
                (None, None, None, Some(redirect)) => Action::Redirect(self.redirect(redirect)?),
                _ => {
                    return Err(self.err(
                        section.span(),
                        "a route needs exactly one of `cluster = \"NAME\"`, `split = [...]`, `respond = { ... }` or `redirect = { ... }`",
                    ));
                }
            };
            rules.push(match &r.matcher {
                Some(m) => self.rule(m)?,
                None => RouteRule {
                    client_ip: Vec::new(),
                    host: HostMatch::Any,
                    path: PathMatch::Any,
                    methods: Vec::new(),
                    headers: Vec::new(),
                },
            });
            routes.push(Route {
                name: r
                    .name
                    .as_ref()
                    .map_or_else(|| format!("route-{i}"), |n| n.get_ref().clone())
                    .into(),
                action,
                timeout: self.duration(r.timeout.as_ref(), DEFAULT_ROUTE_TIMEOUT)?,
                retry: match &r.retry {
                    Some(retry) => self.retry(retry)?,
                    None => RetryPolicy::default(),
                },
                policy: self.policy(r)?,
            });
        }
        Ok((rules, routes))
    }

    pub(super) fn redirect(&self, r: &Spanned<schema::RedirectSection>) -> Result<Redirect> {
        let s = r.get_ref();
        if s.to.get_ref().is_empty() || s.to.get_ref().bytes().any(|b| b.is_ascii_control()) {
            return Err(self.err(s.to.span(), "expected a URL without control characters"));
        }
        let status = match &s.status {
            None => 301,
            Some(v) => u16::try_from(*v.get_ref())
                .ok()
                .filter(|s| [301, 302, 303, 307, 308].contains(s))
                .ok_or_else(|| {
                    self.err(
                        v.span(),
                        "expected a redirect status: 301, 302, 303, 307 or 308",
                    )
                })?,
        };
        Ok(Redirect {
            to: s.to.get_ref().clone(),
            status,
            keep_path: s.keep_path,
        })
    }

    pub(super) fn header_rules(
        &self,
        h: &Option<Spanned<schema::HeadersSection>>,
    ) -> Result<HeaderRules> {
        let Some(h) = h else {
            return Ok(HeaderRules::default());
        };
        let h = h.get_ref();
        let pairs =
            |map: &BTreeMap<Spanned<String>, Spanned<String>>| -> Result<Vec<(String, String)>> {
                let mut out = Vec::with_capacity(map.len());
                for (name, value) in map {
                    self.header_name(name)?;
                    if value
                        .get_ref()
                        .bytes()
                        .any(|b| b == b'\r' || b == b'\n' || b == 0)
                    {
                        return Err(
                            self.err(value.span(), "a header value cannot hold CR, LF or NUL")
                        );
                    }
                    out.push((name.get_ref().to_ascii_lowercase(), value.get_ref().clone()));
                }
                Ok(out)
            };
        let mut remove = Vec::with_capacity(h.remove.len());
        for name in &h.remove {
            self.header_name(name)?;
            remove.push(name.get_ref().to_ascii_lowercase());
        }
        Ok(HeaderRules {
            add: pairs(&h.add)?,
            set: pairs(&h.set)?,
            remove,
        })
    }

    pub(super) fn policy(&self, r: &schema::RouteSection) -> Result<RoutePolicy> {
        let mut policy = RoutePolicy {
            request_headers: self.header_rules(&r.request_headers)?,
            response_headers: self.header_rules(&r.response_headers)?,
            allow: self.ip_ranges(r.allow.as_ref())?,
            deny: self.ip_ranges(r.deny.as_ref())?,
            ..RoutePolicy::default()
        };
        for rules in [&policy.request_headers, &policy.response_headers] {
            for name in rules
                .add
                .iter()
                .chain(&rules.set)
                .map(|(n, _)| n)
                .chain(&rules.remove)
            {
                if matches!(
                    name.as_str(),
                    "content-length" | "transfer-encoding" | "connection" | "host"
                ) {
                    let span = r
                        .request_headers
                        .as_ref()
                        .or(r.response_headers.as_ref())
                        .map_or(0..0, |h| h.span());
                    return Err(self.err(
                        span,
                        format!("{name:?} is managed by ringway; use `rewrite` for host"),
                    ));
                }
            }
        }
        if let Some(rw) = &r.rewrite {
            let rw = rw.get_ref();
            if let Some(prefix) = &rw.path_prefix {
                let matched = r
                    .matcher
                    .as_ref()
                    .and_then(|m| m.get_ref().path_prefix.as_ref())
                    .ok_or_else(|| {
                        self.err(
                            prefix.span(),
                            "rewrite.path_prefix needs the route to match on `path_prefix`",
                        )
                    })?;
                if !prefix.get_ref().starts_with('/') {
                    return Err(self.err(prefix.span(), "expected a path starting with `/`"));
                }
                policy.rewrite_prefix = Some((matched.get_ref().clone(), prefix.get_ref().clone()));
            }
            if let Some(host) = &rw.host {
                if host.get_ref().is_empty()
                    || !host.get_ref().bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(self.err(host.span(), "expected a host name"));
                }
                policy.rewrite_host = Some(host.get_ref().clone());
            }
        }
        if let Some(size) = &r.max_body {
            policy.max_body = Some(parse_size(size.get_ref()).ok_or_else(|| {
                self.err(
                    size.span(),
                    "expected a size in bytes, or a string such as \"64KiB\", \"1MiB\" or \"2GiB\"",
                )
            })?);
        }
        if let Some(rl) = &r.rate_limit {
            let rl = rl.get_ref();
            let requests = u32::try_from(*rl.requests.get_ref())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    self.err(
                        rl.requests.span(),
                        "expected a number of requests greater than zero",
                    )
                })?;
            let per = self.duration(rl.per.as_ref(), Duration::from_secs(1))?;
            let burst = match &rl.burst {
                None => f64::from(requests),
                Some(b) => u32::try_from(*b.get_ref())
                    .ok()
                    .filter(|&n| n > 0)
                    .map(f64::from)
                    .ok_or_else(|| self.err(b.span(), "expected a burst greater than zero"))?,
            };
            let key = match &rl.key {
                None => None,
                Some(k) => match hash_key(k.get_ref()) {
                    Some(key @ (HashKey::ClientIp | HashKey::Header(_))) => Some(key),
                    _ => {
                        return Err(self.err(k.span(), "expected \"client-ip\" or \"header:NAME\""));
                    }
                },
            };
            policy.rate_limit = Some(RateLimit {
                per_second: f64::from(requests) / per.as_secs_f64(),
                burst,
                key,
            });
        }
        if let Some(fault) = &r.fault {
            let fault = fault.get_ref();
            let share = |p: &Spanned<f64>| -> Result<f64> {
                let v = *p.get_ref();
                if !(0.0..=100.0).contains(&v) {
                    return Err(self.err(p.span(), "expected a percentage between 0 and 100"));
                }
                Ok(v / 100.0)
            };
            if let Some(d) = &fault.delay {
                let d = d.get_ref();
                policy.fault_delay = Some((
                    share(&d.percent)?,
                    self.duration(Some(&d.duration), Duration::ZERO)?,
                ));
            }
            if let Some(a) = &fault.abort {
                let a = a.get_ref();
                let status = u16::try_from(*a.status.get_ref())
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .ok_or_else(|| self.err(a.status.span(), "expected a status in 200..=599"))?;
                policy.fault_abort = Some((share(&a.percent)?, status));
            }
        }
        Ok(policy)
    }

    pub(super) fn cluster_id(
        &self,
        name: &Spanned<String>,
        clusters: &HashMap<String, ClusterId>,
    ) -> Result<ClusterId> {
        clusters.get(name.get_ref()).copied().ok_or_else(|| {
            self.err(
                name.span(),
                format!("no cluster named {:?} is defined", name.get_ref()),
            )
        })
    }

    pub(super) fn split(
        &self,
        split: &Spanned<Vec<Spanned<schema::SplitEntry>>>,
        clusters: &HashMap<String, ClusterId>,
    ) -> Result<Vec<WeightedCluster>> {
        if split.get_ref().is_empty() {
            return Err(self.err(split.span(), "a split needs at least one cluster"));
        }
        let mut arms = Vec::with_capacity(split.get_ref().len());
        for entry in split.get_ref() {
            let e = entry.get_ref();
            let weight = u32::try_from(*e.weight.get_ref())
                .ok()
                .filter(|w| (1..=1_000_000).contains(w))
                .ok_or_else(|| self.err(e.weight.span(), "expected a weight in 1..=1000000"))?;
            arms.push(WeightedCluster {
                cluster: self.cluster_id(&e.cluster, clusters)?,
                weight,
            });
        }
        Ok(arms)
    }

    pub(super) fn retry(&self, retry: &Spanned<schema::RetrySection>) -> Result<RetryPolicy> {
        let r = retry.get_ref();
        let mut policy = RetryPolicy::default();
        if let Some(attempts) = &r.attempts {
            policy.attempts = u32::try_from(*attempts.get_ref())
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| {
                    self.err(
                        attempts.span(),
                        "expected attempts in 1..=10 (tries in all, the first included)",
                    )
                })?;
        }
        if let Some(on) = &r.on {
            policy.on_connect_failure = false;
            for condition in on {
                match condition.get_ref().as_str() {
                    "connect-failure" => policy.on_connect_failure = true,
                    "reset" => policy.on_reset = true,
                    "5xx" => policy.on_statuses.extend(500..=599),
                    "gateway-error" => policy.on_statuses.extend([502, 503, 504]),
                    other => match other.parse::<u16>() {
                        Ok(status) if (500..=599).contains(&status) => {
                            policy.on_statuses.push(status)
                        }
                        _ => {
                            return Err(self.err(
                                condition.span(),
                                format!("unknown retry condition {other:?}; expected \"connect-failure\", \"reset\", \"5xx\", \"gateway-error\" or a 5xx status"),
                            ));
                        }
                    },
                }
            }
        }
        if let Some(t) = &r.per_try_timeout {
            policy.per_try_timeout = Some(self.duration(Some(t), Duration::ZERO)?);
        }
        if let Some(budget) = &r.budget {
            let b = *budget.get_ref();
            if !(0.0..=1.0).contains(&b) {
                return Err(self.err(
                    budget.span(),
                    "expected a budget between 0.0 and 1.0 (a share of active requests)",
                ));
            }
            policy.budget = b;
        }
        if let Some(min) = &r.min_retries {
            policy.min_retries = u32::try_from(*min.get_ref())
                .map_err(|_| self.err(min.span(), "expected a count of zero or more"))?;
        }
        Ok(policy)
    }

    pub(super) fn rule(&self, m: &Spanned<schema::MatchSection>) -> Result<RouteRule> {
        let section = m.get_ref();
        let host = match &section.host {
            None => HostMatch::Any,
            Some(h) => {
                HostMatch::parse(h.get_ref()).map_err(|e| self.err(h.span(), e.to_string()))?
            }
        };
        let path_kinds = [
            section
                .path
                .as_ref()
                .map(|p| (p, PathMatch::Exact(p.get_ref().clone()))),
            section
                .path_prefix
                .as_ref()
                .map(|p| (p, PathMatch::Prefix(p.get_ref().clone()))),
            section
                .path_regex
                .as_ref()
                .map(|p| (p, PathMatch::Regex(p.get_ref().clone()))),
        ];
        let mut given = path_kinds.into_iter().flatten();
        let path = match (given.next(), given.next()) {
            (None, _) => PathMatch::Any,
            (Some((_, path)), None) => path,
            (Some(_), Some((second, _))) => {
                return Err(self.err(
                    second.span(),
                    "give at most one of path, path_prefix and path_regex",
                ));
            }
        };
        for p in [&section.path, &section.path_prefix].into_iter().flatten() {
            if !p.get_ref().starts_with('/') {
                return Err(self.err(p.span(), "expected a path starting with `/`"));
            }
        }
        let mut methods = Vec::new();
        for method in section.methods.iter().flatten() {
            if method.get_ref().is_empty() || !method.get_ref().bytes().all(is_token_byte) {
                return Err(self.err(method.span(), "expected an HTTP method such as \"GET\""));
            }
            methods.push(method.get_ref().clone());
        }
        let mut headers = Vec::new();
        for (name, cond) in section.headers.iter().flatten() {
            self.header_name(name)?;
            let value = match cond.get_ref() {
                HeaderCondition::Present => HeaderValueMatch::Present,
                HeaderCondition::Exact(v) => HeaderValueMatch::Exact(v.clone()),
            };
            headers.push(HeaderMatch {
                name: name.get_ref().to_ascii_lowercase(),
                value,
            });
        }
        Ok(RouteRule {
            client_ip: self.ip_ranges(m.get_ref().client_ip.as_ref())?,
            host,
            path,
            methods,
            headers,
        })
    }

    pub(super) fn direct_response(
        &self,
        r: &Spanned<schema::RespondSection>,
    ) -> Result<DirectResponse> {
        let section = r.get_ref();
        let status = u16::try_from(*section.status.get_ref())
            .ok()
            .filter(|s| (200..=599).contains(s))
            .ok_or_else(|| self.err(section.status.span(), "expected a status in 200..=599"))?;
        let mut headers = Vec::with_capacity(section.headers.len());
        for (name, value) in &section.headers {
            self.header_name(name)?;
            if name.get_ref().eq_ignore_ascii_case("content-length")
                || name.get_ref().eq_ignore_ascii_case("transfer-encoding")
            {
                return Err(self.err(name.span(), "the body's framing is set by ringway"));
            }
            if value
                .get_ref()
                .bytes()
                .any(|b| b == b'\r' || b == b'\n' || b == 0)
            {
                return Err(self.err(value.span(), "a header value cannot hold CR, LF or NUL"));
            }
            headers.push((name.get_ref().clone(), value.get_ref().clone()));
        }
        Ok(DirectResponse {
            status,
            headers,
            body: section.body.clone().into_bytes(),
        })
    }

    pub(super) fn header_name(&self, name: &Spanned<String>) -> Result<()> {
        if name.get_ref().is_empty() || !name.get_ref().bytes().all(is_token_byte) {
            return Err(self.err(name.span(), "expected a header name (letters, digits, `-`)"));
        }
        Ok(())
    }
}
