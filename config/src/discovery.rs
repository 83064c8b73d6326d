//! Endpoints that follow DNS: the questions a snapshot's clusters ask and
//! how the answers become endpoints. No I/O here: the gateway's resolver
//! thread asks the questions and hands the answers to
//! [`Snapshot::resolve`](crate::Snapshot::resolve), which every worker
//! then serves from.
//!
//! A cluster lists endpoints (in the configuration or in its endpoints
//! file) as IP literals or `host:port` names, or names an SRV record
//! (`discovery = { srv = ... }`). A literal is an endpoint as it stands; a
//! name is one endpoint per address it resolves to, each with the entry's
//! weight; an SRV name is one endpoint per address of each target of its
//! lowest-priority group, with the record's port and weight.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A question for DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnsQuery {
    /// A host's A and AAAA records (as [`DnsSettings::family`] asks).
    Host(String),
    /// An SRV name's records, and each target's addresses.
    Srv(String),
}

impl std::fmt::Display for DnsQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsQuery::Host(name) => write!(f, "{name}"),
            DnsQuery::Srv(name) => write!(f, "SRV {name}"),
        }
    }
}

/// The last good answer to a [`DnsQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    /// A host's addresses, sorted, each once.
    Addresses(Vec<IpAddr>),
    /// An SRV name's endpoints (see [`srv_choice`]), sorted, each once.
    Services(Vec<ServiceEndpoint>),
}

/// One address of one SRV target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceEndpoint {
    /// The target's name: what TLS sends and verifies (unless the
    /// cluster's `server_name` overrides it).
    pub target: String,
    /// One of the target's addresses, with the record's port.
    pub addr: SocketAddr,
    /// The record's weight as [`srv_choice`] adjusted it: at least 1.
    pub weight: u32,
}

/// An SRV record as DNS gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred; only the lowest group present is used.
    pub priority: u16,
    /// Share within the group; 0 is legal.
    pub weight: u16,
    /// The port to connect to.
    pub port: u16,
    /// The host serving it, without the root's final dot.
    pub target: String,
}

/// The records of `records` to use, with their weights: those of the
/// lowest priority present (the others are standby: RFC 2782 clients try
/// them only when the whole group fails, which health checks and outlier
/// ejection handle instead). Weight 0 follows RFC 2782's intent that such
/// a record be chosen only when nothing in its group weighs more: when a
/// record of the group has a weight above 0, the weight-0 records get no
/// traffic; when every record of the group weighs 0, each gets weight 1.
/// A target of `.` ("no service here", RFC 2782) is never an endpoint.
pub fn srv_choice(records: &[SrvRecord]) -> Vec<(&SrvRecord, u32)> {
    let usable = || records.iter().filter(|r| !r.target.is_empty());
    let Some(priority) = usable().map(|r| r.priority).min() else {
        return Vec::new();
    };
    let group: Vec<&SrvRecord> = usable().filter(|r| r.priority == priority).collect();
    if group.iter().any(|r| r.weight > 0) {
        group
            .into_iter()
            .filter(|r| r.weight > 0)
            .map(|r| (r, u32::from(r.weight)))
            .collect()
    } else {
        group.into_iter().map(|r| (r, 1)).collect()
    }
}

/// How names are resolved: `[runtime] resolvers` and `[runtime] dns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The servers asked; empty: those of `/etc/resolv.conf`.
    pub resolvers: Vec<SocketAddr>,
    /// An answer is asked again no sooner than this after it came, whatever
    /// its TTL (a TTL of 0 must not make the gateway ask without pause).
    pub min_ttl: Duration,
    /// ... and no later than this.
    pub max_ttl: Duration,
    /// Which addresses of a name are endpoints.
    pub family: AddressFamily,
}

impl Default for DnsSettings {
    fn default() -> DnsSettings {
        DnsSettings {
            resolvers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            family: AddressFamily::All,
        }
    }
}

/// Which of a name's addresses are endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    /// Every A and AAAA address.
    All,
    /// A addresses only.
    V4,
    /// AAAA addresses only.
    V6,
    /// The A addresses, or the AAAA ones when there is no A.
    V4Preferred,
    /// The AAAA addresses, or the A ones when there is no AAAA.
    V6Preferred,
}

/// One entry of a cluster's endpoint list, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredEndpoint {
    /// The host as written: a DNS name, or an IP literal (an IPv6 one
    /// without its brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// Its weight, at least 1; each of a name's addresses gets it.
    pub weight: u32,
    /// The address, when the host is an IP literal (no DNS then).
    pub ip: Option<IpAddr>,
}

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    /// Listed in the configuration, or in its endpoints file.
    Listed(Vec<DeclaredEndpoint>),
    /// An SRV name (`discovery = { srv = ... }`).
    Srv(String),
}

impl EndpointSource {
    /// The DNS questions this source asks.
    pub fn queries(&self) -> impl Iterator<Item = DnsQuery> + '_ {
        let (listed, srv) = match self {
            EndpointSource::Listed(list) => (&list[..], None),
            EndpointSource::Srv(name) => (&[][..], Some(DnsQuery::Srv(name.clone()))),
        };
        listed
            .iter()
            .filter(|d| d.ip.is_none())
            .map(|d| DnsQuery::Host(d.host.clone()))
            .chain(srv)
    }

    /// The endpoints this source has with `answers` (a question without
    /// an answer gives none). An address that two entries give is one
    /// endpoint, first where it first appears, with their weights added.
    pub fn endpoints(&self, answers: &dyn Fn(&DnsQuery) -> Option<DnsAnswer>) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = Vec::new();
        let mut at: HashMap<SocketAddr, usize> = HashMap::new();
        let mut add = |addr: SocketAddr, host: &str, weight: u32| match at.get(&addr) {
            Some(&i) => out[i].weight = out[i].weight.saturating_add(weight).min(1_000_000),
            None => {
                at.insert(addr, out.len());
                out.push(Endpoint {
                    addr,
                    host: host.to_owned(),
                    weight,
                });
            }
        };
        match self {
            EndpointSource::Listed(list) => {
                for d in list {
                    if let Some(ip) = d.ip {
                        add(SocketAddr::new(ip, d.port), &d.host, d.weight);
                        continue;
                    }
                    if let Some(DnsAnswer::Addresses(ips)) =
                        answers(&DnsQuery::Host(d.host.clone()))
                    {
                        for ip in ips {
                            add(SocketAddr::new(ip, d.port), &d.host, d.weight);
                        }
                    }
                }
            }
            EndpointSource::Srv(name) => {
                if let Some(DnsAnswer::Services(services)) = answers(&DnsQuery::Srv(name.clone())) {
                    for s in services {
                        add(s.addr, &s.target, s.weight);
                    }
                }
            }
        }
        out
    }
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// Its host as written, before resolution: a DNS name (an SRV record's
    /// target) or an IP literal (an IPv6 one without its brackets). The
    /// name TLS sends and verifies unless the cluster's `server_name`
    /// overrides it.
    pub host: String,
    /// Its weight, at least 1.
    pub weight: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }

    fn chosen(records: &[SrvRecord]) -> Vec<(String, u16, u32)> {
        srv_choice(records)
            .into_iter()
            .map(|(r, w)| (r.target.clone(), r.port, w))
            .collect()
    }

    #[test]
    fn only_the_lowest_priority_group_is_used() {
        let records = [
            srv(20, 5, 1, "standby"),
            srv(10, 3, 2, "a"),
            srv(10, 1, 3, "b"),
        ];
        assert_eq!(chosen(&records), [("a".into(), 2, 3), ("b".into(), 3, 1)]);
    }

    #[test]
    fn weight_zero_is_chosen_only_when_nothing_in_its_group_weighs_more() {
        let mixed = [srv(1, 0, 1, "zero"), srv(1, 4, 2, "four")];
        assert_eq!(chosen(&mixed), [("four".into(), 2, 4)]);
        let all_zero = [srv(1, 0, 1, "a"), srv(1, 0, 2, "b"), srv(2, 9, 3, "c")];
        assert_eq!(chosen(&all_zero), [("a".into(), 1, 1), ("b".into(), 2, 1)]);
    }

    #[test]
    fn a_root_target_means_no_service() {
        assert!(chosen(&[srv(1, 1, 80, "")]).is_empty());
        assert_eq!(
            chosen(&[srv(0, 1, 80, ""), srv(5, 1, 81, "b")]),
            [("b".into(), 81, 1)]
        );
    }

    fn declared(host: &str, port: u16, weight: u32) -> DeclaredEndpoint {
        DeclaredEndpoint {
            host: host.to_owned(),
            port,
            weight,
            ip: host.parse().ok(),
        }
    }

    #[test]
    fn a_name_is_an_endpoint_per_address_and_a_shared_address_adds_weights() {
        let source = EndpointSource::Listed(vec![
            declared("10.0.0.9", 80, 1),
            declared("api.internal", 80, 2),
            declared("other.internal", 80, 5),
        ]);
        let queries: Vec<DnsQuery> = source.queries().collect();
        assert_eq!(
            queries,
            [
                DnsQuery::Host("api.internal".into()),
                DnsQuery::Host("other.internal".into())
            ]
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let answers = |q: &DnsQuery| match q {
            DnsQuery::Host(h) if h == "api.internal" => Some(DnsAnswer::Addresses(vec![
                ip("10.0.0.1"),
                ip("10.0.0.2"),
                ip("fd00::1"),
            ])),
            DnsQuery::Host(h) if h == "other.internal" => {
                Some(DnsAnswer::Addresses(vec![ip("10.0.0.2")]))
            }
            _ => None,
        };
        let got: Vec<(String, String, u32)> = source
            .endpoints(&answers)
            .into_iter()
            .map(|e| (e.addr.to_string(), e.host, e.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.9:80".into(), "10.0.0.9".into(), 1),
                ("10.0.0.1:80".into(), "api.internal".into(), 2),
                ("10.0.0.2:80".into(), "api.internal".into(), 7),
                ("[fd00::1]:80".into(), "api.internal".into(), 2),
            ]
        );
        // Unanswered: only the literal.
        assert_eq!(source.endpoints(&|_| None).len(), 1);
    }
}
