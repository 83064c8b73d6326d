//! The balancer tables of a snapshot (Maglev tables, ring-hash rings):
//! built once per process on the control thread, shared read-only by every
//! worker, and carried over from the running snapshot on reload for every
//! cluster whose endpoint set and table sizes did not change.
//!
//! Compiling a file builds no table ([`crate::compile_str`] stays cheap
//! and pure); whoever is going to serve a snapshot calls
//! [`Snapshot::build_tables`] with the snapshot it replaces.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use ringway_balancer::{BalancerKind, EndpointSpec, SharedTable};

use crate::snapshot::{Cluster, Snapshot};

/// What [`Snapshot::build_tables`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableBuild {
    /// Tables built now.
    pub built: usize,
    /// Tables taken over from the previous snapshot (or from another
    /// cluster of this one with the same endpoints and sizes).
    pub reused: usize,
    /// Heap bytes of all this snapshot's tables, each counted once.
    pub bytes: usize,
}

/// What a table depends on: the table's sizes and the endpoint set (by
/// address, as the hashes know endpoints, with weights, in order: ids are
/// positions in the list).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TableInput {
    sizes: (usize, usize),
    endpoints: Vec<(SocketAddr, u32)>,
}

impl TableInput {
    /// `None` for balancers that precompute nothing.
    fn of(cluster: &Cluster) -> Option<TableInput> {
        let sizes = match cluster.balancer {
            BalancerKind::Maglev { table_size, .. } => (table_size, 0),
            // 0 can never be a ring size, so a ring never shares with a table.
            BalancerKind::RingHash {
                min_ring_size,
                max_ring_size,
                ..
            } => (
                min_ring_size.max(1),
                max_ring_size.unwrap_or(usize::MAX).max(1),
            ),
            _ => return None,
        };
        Some(TableInput {
            sizes,
            endpoints: cluster
                .endpoints
                .iter()
                .map(|e| (e.addr, e.weight))
                .collect(),
        })
    }
}

impl Cluster {
    /// The endpoints as the balancer knows them: keyed by address, so that
    /// a key stays on its endpoint whatever else changes in the list.
    pub fn endpoint_specs(&self) -> Vec<EndpointSpec> {
        self.endpoints
            .iter()
            .map(|e| EndpointSpec::new(e.addr.to_string(), e.weight))
            .collect()
    }
}

impl Snapshot {
    /// Gives every hashing cluster its table, taking it over from
    /// `previous` (or from an identical cluster of this snapshot) where
    /// the endpoint set and sizes are the same, building it otherwise. A
    /// table that cannot be built (which validation rules out) is left
    /// out: the workers then build, and refuse, their own.
    pub fn build_tables(&mut self, previous: Option<&Snapshot>) -> TableBuild {
        let mut known: HashMap<TableInput, SharedTable> = HashMap::new();
        for c in previous.map_or(&[][..], |p| &p.clusters[..]) {
            if let (Some(input), Some(table)) = (TableInput::of(c), &c.table) {
                known.insert(input, table.clone());
            }
        }
        let mut build = TableBuild::default();
        for c in &mut self.clusters {
            let Some(input) = TableInput::of(c) else {
                c.table = None;
                continue;
            };
            if let Some(table) = known.get(&input) {
                c.table = Some(table.clone());
                build.reused += 1;
            } else {
                c.table = SharedTable::build(c.balancer, &c.endpoint_specs())
                    .ok()
                    .flatten();
                if let Some(table) = &c.table {
                    known.insert(input, table.clone());
                    build.built += 1;
                }
            }
        }
        build.bytes = self.table_bytes();
        build
    }

    /// Heap bytes of this snapshot's balancer tables, each counted once.
    pub fn table_bytes(&self) -> usize {
        let mut seen = HashSet::new();
        self.clusters
            .iter()
            .filter_map(|c| c.table.as_ref())
            .filter(|t| seen.insert(t.identity()))
            .map(SharedTable::heap_bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use crate::compile_str;

    /// Three hashing clusters (two alike) and a round-robin one; `api`'s
    /// second endpoint and `shop`'s balancer are parameters.
    fn config(api_second: &str, shop: &str) -> String {
        format!(
            r#"
[[listener]]
name = "web"
listen = "127.0.0.1:0"

[[route]]
name = "all"
cluster = "api"

[cluster.api]
endpoints = ["127.0.0.1:9001", "{api_second}"]
balancer = "maglev"

[cluster.api-copy]
endpoints = ["127.0.0.1:9001", "{api_second}"]
balancer = "maglev"

[cluster.shop]
endpoints = ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]
balancer = {shop}

[cluster.plain]
endpoints = ["127.0.0.1:9201"]
"#
        )
    }

    fn table_of<'a>(
        s: &'a crate::Snapshot,
        name: &str,
    ) -> Option<&'a ringway_balancer::SharedTable> {
        s.clusters.iter().find(|c| c.name == name)?.table.as_ref()
    }

    #[test]
    fn a_snapshot_builds_each_distinct_table_once() {
        let mut s = compile_str("t.toml", &config("127.0.0.1:9002", "\"ring-hash\"")).unwrap();
        assert!(
            s.clusters.iter().all(|c| c.table.is_none()),
            "compile builds none"
        );
        let build = s.build_tables(None);
        assert_eq!((build.built, build.reused), (2, 1), "{build:?}");
        assert!(
            table_of(&s, "api")
                .unwrap()
                .same(table_of(&s, "api-copy").unwrap())
        );
        assert!(table_of(&s, "plain").is_none());
        // Maglev, 2 endpoints: 1 bit a slot, 65,537 slots.
        let maglev = table_of(&s, "api").unwrap().heap_bytes();
        assert!((8_192..9_000).contains(&maglev), "{maglev}");
        assert_eq!(build.bytes, s.table_bytes());
        assert!(
            build.bytes > maglev,
            "the ring counts too, the copy does not"
        );
    }

    #[test]
    fn a_reload_that_changes_nothing_builds_no_table() {
        let text = config("127.0.0.1:9002", "\"ring-hash\"");
        let mut old = compile_str("t.toml", &text).unwrap();
        old.build_tables(None);
        let mut new = compile_str("t.toml", &text).unwrap();
        let build = new.build_tables(Some(&old));
        assert_eq!((build.built, build.reused), (0, 3), "{build:?}");
        for name in ["api", "api-copy", "shop"] {
            assert!(
                table_of(&new, name)
                    .unwrap()
                    .same(table_of(&old, name).unwrap())
            );
        }
    }

    #[test]
    fn a_changed_endpoint_set_or_table_rebuilds_only_its_own() {
        let mut old = compile_str("t.toml", &config("127.0.0.1:9002", "\"ring-hash\"")).unwrap();
        old.build_tables(None);
        let mut new = compile_str("t.toml", &config("127.0.0.1:9003", "\"ring-hash\"")).unwrap();
        let build = new.build_tables(Some(&old));
        // api and api-copy share one new table; shop's ring is kept.
        assert_eq!((build.built, build.reused), (1, 2), "{build:?}");
        assert!(
            !table_of(&new, "api")
                .unwrap()
                .same(table_of(&old, "api").unwrap())
        );
        assert!(
            table_of(&new, "shop")
                .unwrap()
                .same(table_of(&old, "shop").unwrap())
        );

        // A bounded-load change keeps the ring; a ring size change does not.
        let bounded = "{ kind = \"ring-hash\", bounded_load = 1.5 }";
        let mut next = compile_str("t.toml", &config("127.0.0.1:9003", bounded)).unwrap();
        assert_eq!(next.build_tables(Some(&new)).built, 0);
        let resized = "{ kind = \"ring-hash\", min_ring_size = 2048 }";
        let mut last = compile_str("t.toml", &config("127.0.0.1:9003", resized)).unwrap();
        let build = last.build_tables(Some(&next));
        assert_eq!((build.built, build.reused), (1, 2), "{build:?}");
    }
}
