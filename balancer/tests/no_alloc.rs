//! `Balancer::pick` must not allocate, for any kind, with ineligible
//! endpoints, bounded load and requests without a key. This is its own test
//! binary because it installs a counting global allocator; the count is per
//! thread, so the test harness's own threads cannot disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringway_balancer::{
    Balancer, BalancerKind, BalancerSpec, EndpointId, EndpointSpec, EndpointState, hash_key,
};

struct CountingAllocator;

thread_local! {
    /// Allocations made by this thread. `const` and `Copy`, so reading it
    /// from inside the allocator cannot itself allocate.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with` because the allocator also runs while a thread's locals are
    // being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; counting touches only a
// thread-local `Cell`.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded from our caller, who upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

struct State {
    eligible: Vec<bool>,
    active: Vec<u32>,
}

impl EndpointState for State {
    fn eligible(&self, id: EndpointId) -> bool {
        self.eligible[id.0 as usize]
    }
    fn active(&self, id: EndpointId) -> u32 {
        self.active[id.0 as usize]
    }
}

#[test]
fn picks_do_not_allocate() {
    let kinds = [
        BalancerKind::RoundRobin,
        BalancerKind::Random,
        BalancerKind::least_request(),
        BalancerKind::ring_hash(),
        BalancerKind::maglev(),
        BalancerKind::RingHash {
            min_ring_size: 1024,
            max_ring_size: None,
            bounded_load: Some(1.25),
        },
        BalancerKind::Maglev {
            table_size: 65_537,
            bounded_load: Some(1.25),
        },
    ];
    let keys: Vec<u64> = (0..1_000)
        .map(|i| hash_key(format!("key-{i}").as_bytes()))
        .collect();
    for n in [1usize, 3, 10, 100] {
        for uneven in [false, true] {
            let endpoints: Vec<EndpointSpec> = (0..n)
                .map(|i| {
                    let weight = if uneven { 1 + i as u32 % 4 } else { 1 };
                    EndpointSpec::new(format!("10.0.{}.{}:8080", i / 250, i % 250), weight)
                })
                .collect();
            // Every fifth endpoint down (endpoint 0 stays up), loads uneven.
            let mut state = State {
                eligible: (0..n).map(|i| i == 0 || i % 5 != 0).collect(),
                active: (0..n).map(|i| (i * 7 % 13) as u32).collect(),
            };
            let all_down = State {
                eligible: vec![false; n],
                active: vec![0; n],
            };
            for kind in kinds {
                let spec = BalancerSpec::new(kind).with_seed(n as u64);
                let mut balancer = Balancer::build(spec, &endpoints).expect("builds");
                let before = allocations();
                let mut picked = 0usize;
                for (i, &h) in keys.iter().enumerate() {
                    let key = if i % 4 == 0 { None } else { Some(h) };
                    if let Some(id) = balancer.pick(key, &state) {
                        assert!(state.eligible[id.0 as usize], "{kind:?}");
                        picked += 1;
                        state.active[id.0 as usize] = (state.active[id.0 as usize] + 1) % 50;
                    }
                }
                let none = balancer.pick(Some(1), &all_down);
                let during = allocations() - before;
                assert_eq!(during, 0, "{kind:?} n={n}: {during} allocations");
                assert_eq!(none, None, "{kind:?}");
                assert_eq!(picked, keys.len(), "{kind:?} n={n}");
            }
        }
    }
}
