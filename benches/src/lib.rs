//! Benchmarks for shopcast live in `benches/` (`cargo bench -p shopcast-benches`).
