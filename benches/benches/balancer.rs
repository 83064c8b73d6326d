//! `Balancer::pick` for every kind with 3, 10 and 100 endpoints, and the
//! cost of building Maglev and ring-hash tables.
//!
//! Picks cycle through 1024 precomputed key hashes (ignored by the kinds
//! that do not hash) against a state where every endpoint is eligible and
//! in-flight counts vary, so bounded load and least request do their full
//! work. `_weighted` variants use weights 1..=4 (binary search for random,
//! the EDF schedule for least request); the others use equal weights.
//!
//! Run: `cargo bench -p ringway-benches --bench balancer`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringway_balancer::{
    Balancer, BalancerKind, BalancerSpec, EndpointId, EndpointSpec, EndpointState, Ketama, Maglev,
    hash_key,
};

const SIZES: [usize; 3] = [3, 10, 100];

struct State {
    eligible: Vec<bool>,
    active: Vec<u32>,
}

impl EndpointState for State {
    fn eligible(&self, id: EndpointId) -> bool {
        self.eligible.get(id.0 as usize).copied().unwrap_or(false)
    }
    fn active(&self, id: EndpointId) -> u32 {
        self.active.get(id.0 as usize).copied().unwrap_or(0)
    }
}

fn endpoints(n: usize, weighted: bool) -> Vec<EndpointSpec> {
    (0..n)
        .map(|i| {
            let weight = if weighted { 1 + i as u32 % 4 } else { 1 };
            EndpointSpec::new(format!("10.0.{}.{}:8080", i / 250, i % 250), weight)
        })
        .collect()
}

fn kinds() -> [(&'static str, BalancerKind, bool); 10] {
    let bounded = Some(1.25);
    [
        ("round_robin", BalancerKind::RoundRobin, false),
        ("random", BalancerKind::Random, false),
        ("random_weighted", BalancerKind::Random, true),
        ("least_request", BalancerKind::least_request(), false),
        (
            "least_request_weighted",
            BalancerKind::least_request(),
            true,
        ),
        ("ring_hash", BalancerKind::ring_hash(), false),
        (
            "ring_hash_bounded",
            BalancerKind::RingHash {
                min_ring_size: Ketama::DEFAULT_MIN_RING_SIZE,
                max_ring_size: None,
                bounded_load: bounded,
            },
            false,
        ),
        ("maglev", BalancerKind::maglev(), false),
        (
            "maglev_bounded",
            BalancerKind::Maglev {
                table_size: Maglev::DEFAULT_TABLE_SIZE,
                bounded_load: bounded,
            },
            false,
        ),
        ("maglev_weighted", BalancerKind::maglev(), true),
    ]
}

fn pick(c: &mut Criterion) {
    let keys: Vec<u64> = (0..1024)
        .map(|i| hash_key(format!("user-{i}").as_bytes()))
        .collect();
    let mut group = c.benchmark_group("pick");
    for (name, kind, weighted) in kinds() {
        for n in SIZES {
            let mut balancer =
                match Balancer::build(BalancerSpec::new(kind), &endpoints(n, weighted)) {
                    Ok(b) => b,
                    Err(e) => panic!("{name} does not build: {e}"),
                };
            let state = State {
                eligible: vec![true; n],
                active: (0..n).map(|i| (i * 7 % 5) as u32).collect(),
            };
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    balancer.pick(black_box(Some(keys[i])), black_box(&state))
                })
            });
        }
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for n in [10, 100] {
        let eps = endpoints(n, true);
        group.bench_function(BenchmarkId::new("maglev_65537", n), |b| {
            b.iter(|| Maglev::new(black_box(&eps), Maglev::DEFAULT_TABLE_SIZE))
        });
        for min in [1024, 16_384, 131_072] {
            group.bench_function(BenchmarkId::new(format!("ring_hash_{min}"), n), |b| {
                b.iter(|| Ketama::new(black_box(&eps), min, Ketama::DEFAULT_MAX_RING_SIZE))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick, build);
criterion_main!(benches);
