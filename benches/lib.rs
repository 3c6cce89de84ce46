//! Criterion micro-benchmarks live in this package's `[[bench]]` targets
//! (`cargo bench -p cairn-benches`); the library is empty.
