//! End-to-end tests live in `tests/`: every Sluice binary runs as a real process (built by
//! `cargo build --bins`, which `make test` does first), talking real HTTP and the real Kafka
//! protocol on loopback. This library is empty; the test kit holds the shared machinery.
