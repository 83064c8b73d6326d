//! Shared helpers for the ringway benchmarks; the benchmarks live in `benches/`.
