//! Integration tests of ringway-balancer's public API: golden files that pin
//! the hash-based mappings across releases, and property tests of the
//! consistent hashes.

mod golden;
mod properties;

use ringway_balancer::{EndpointId, EndpointState};

/// Endpoint state for tests: explicit eligibility and in-flight counts.
#[derive(Debug, Clone)]
pub struct State {
    pub eligible: Vec<bool>,
    pub active: Vec<u32>,
}

impl State {
    pub fn idle(n: usize) -> State {
        State {
            eligible: vec![true; n],
            active: vec![0; n],
        }
    }
}

impl EndpointState for State {
    fn eligible(&self, id: EndpointId) -> bool {
        self.eligible[id.0 as usize]
    }
    fn active(&self, id: EndpointId) -> u32 {
        self.active[id.0 as usize]
    }
}
