//! Measures the cursor's text length at the partition counts DESIGN.md asks about, and keeps
//! it within budget. Print the table with
//! `cargo test -p sluice-sse --test cursor_size -- --nocapture`; README.md records the output.

use sluice_sse::{stream_fingerprint, Cursor};

/// Offsets around one billion, spread over a few thousand: a busy, long-lived topic whose
/// partitions are not perfectly balanced. Deterministic, so the printed numbers are stable.
fn spread_offsets(partitions: usize) -> Vec<i64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..partitions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1_000_000_000 + (state % 5_000) as i64
        })
        .collect()
}

#[test]
fn cursor_size() {
    let fingerprint = stream_fingerprint("orders");
    println!("partitions | offsets                        | cursor length (chars)");
    println!("-----------|--------------------------------|----------------------");
    // (partitions, budget for the spread case): roughly 2.7 chars per partition plus a header.
    for (partitions, budget) in [(12, 64), (64, 200), (256, 720)] {
        let spread = Cursor::new(fingerprint, spread_offsets(partitions));
        let equal = Cursor::new(fingerprint, vec![1_000_000_000; partitions]);
        let spread_len = spread.encode().len();
        let equal_len = equal.encode().len();
        println!("{partitions:>10} | ~1e9, spread over 5,000        | {spread_len}");
        println!("{partitions:>10} | all equal, 1e9                 | {equal_len}");
        assert!(spread_len <= budget, "{partitions} partitions: {spread_len} > {budget}");
        assert!(equal_len < spread_len);
        assert_eq!(Cursor::decode(&spread.encode()), Ok(spread));
    }
}
