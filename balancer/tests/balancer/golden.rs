//! Golden files: which endpoint ring hash and Maglev choose for a fixed
//! endpoint list and keys `key-0`..`key-999`, and the `hash_key` of each
//! key. A gateway fleet upgraded one instance at a time must keep sending
//! each key to the same place, so these must never change by accident.
//!
//! To change them on purpose, run with `RINGWAY_BLESS=1` and commit the
//! diff under `tests/golden/` with a note saying why.

use std::fmt::Write as _;
use std::path::PathBuf;

use ringway_balancer::{EndpointSpec, Ketama, Maglev, hash_key};

const KEYS: usize = 1000;

/// Five endpoints with mixed weights, listed out of key order on purpose.
fn endpoints() -> Vec<EndpointSpec> {
    [
        ("10.0.0.3:8080", 2),
        ("10.0.0.1:8080", 1),
        ("10.0.0.5:8080", 3),
        ("10.0.0.2:8080", 1),
        ("10.0.0.4:8080", 1),
    ]
    .into_iter()
    .map(|(key, weight)| EndpointSpec::new(key, weight))
    .collect()
}

fn keys() -> impl Iterator<Item = String> {
    (0..KEYS).map(|i| format!("key-{i}"))
}

fn hash_key_file() -> String {
    let mut out = String::from("# key\txxh64 seed 0 (hash_key)\n");
    for key in keys() {
        writeln!(out, "{key}\t{:016x}", hash_key(key.as_bytes())).expect("writing to a String");
    }
    out
}

fn ketama_file() -> String {
    let eps = endpoints();
    let ring = Ketama::new(
        &eps,
        Ketama::DEFAULT_MIN_RING_SIZE,
        Ketama::DEFAULT_MAX_RING_SIZE,
    )
    .expect("golden ring builds");
    let mut out = format!(
        "# ring hash, min_ring_size 1024, endpoints {}\n",
        describe(&eps)
    );
    for key in keys() {
        let id = ring.lookup(hash_key(key.as_bytes()));
        writeln!(out, "{key}\t{}", eps[id.0 as usize].key).expect("writing to a String");
    }
    out
}

fn maglev_file() -> String {
    let eps = endpoints();
    let table = Maglev::new(&eps, Maglev::DEFAULT_TABLE_SIZE).expect("golden table builds");
    let mut out = format!("# maglev, table size 65537, endpoints {}\n", describe(&eps));
    for key in keys() {
        let id = table.lookup(hash_key(key.as_bytes()));
        writeln!(out, "{key}\t{}", eps[id.0 as usize].key).expect("writing to a String");
    }
    out
}

fn describe(eps: &[EndpointSpec]) -> String {
    eps.iter()
        .map(|e| format!("{}*{}", e.key, e.weight))
        .collect::<Vec<_>>()
        .join(" ")
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `actual` with the golden file `name`, or rewrites the file
/// when `RINGWAY_BLESS=1`. Returns a description of the difference.
fn check(name: &str, actual: &str) -> Option<String> {
    let path = golden_dir().join(name);
    if std::env::var("RINGWAY_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).expect("create tests/golden");
        std::fs::write(&path, actual).expect("write a golden file");
        return None;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            return Some(format!(
                "{}: {e} (bless with RINGWAY_BLESS=1)",
                path.display()
            ));
        }
    };
    if expected == actual {
        return None;
    }
    let differing: Vec<String> = expected
        .lines()
        .zip(actual.lines())
        .filter(|(e, a)| e != a)
        .map(|(e, a)| format!("  golden {e:?}\n  now    {a:?}"))
        .collect();
    Some(format!(
        "{name}: {} lines differ ({} golden, {} now); first ones:\n{}",
        differing.len(),
        expected.lines().count(),
        actual.lines().count(),
        differing[..differing.len().min(5)].join("\n")
    ))
}

#[test]
fn maglev_and_ketama_results_are_stable_across_releases() {
    let failures: Vec<String> = [
        ("hash_key.tsv", hash_key_file()),
        ("ketama.tsv", ketama_file()),
        ("maglev.tsv", maglev_file()),
    ]
    .iter()
    .filter_map(|(name, actual)| check(name, actual))
    .collect();
    assert!(
        failures.is_empty(),
        "the key-to-endpoint mapping changed; if on purpose, rerun with RINGWAY_BLESS=1\n{}",
        failures.join("\n")
    );
}

#[test]
fn golden_mapping_does_not_depend_on_endpoint_order() {
    // The golden endpoint list is out of key order; sorted, it must map the
    // same keys to the same endpoint keys.
    let mut sorted = endpoints();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let eps = endpoints();
    let ring = Ketama::new(&eps, 1024, Ketama::DEFAULT_MAX_RING_SIZE).unwrap();
    let ring_sorted = Ketama::new(&sorted, 1024, Ketama::DEFAULT_MAX_RING_SIZE).unwrap();
    let table = Maglev::new(&eps, 65_537).unwrap();
    let table_sorted = Maglev::new(&sorted, 65_537).unwrap();
    for key in keys() {
        let h = hash_key(key.as_bytes());
        assert_eq!(
            eps[ring.lookup(h).0 as usize].key,
            sorted[ring_sorted.lookup(h).0 as usize].key
        );
        assert_eq!(
            eps[table.lookup(h).0 as usize].key,
            sorted[table_sorted.lookup(h).0 as usize].key
        );
    }
}
