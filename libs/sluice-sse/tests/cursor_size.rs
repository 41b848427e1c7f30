//! Measures the cursor's text length at the partition counts DESIGN.md asks about, and keeps
//! it within budget. Print the table with
//! `cargo test -p sluice-sse --test cursor_size -- --nocapture`; README.md records the output.

use sluice_sse::{stream_fingerprint, Cursor, MultiCursor};

/// Offsets around one billion, spread over a few thousand: a busy, long-lived topic whose
/// partitions are not perfectly balanced. Deterministic, so the printed numbers are stable.
fn spread_offsets(partitions: usize) -> Vec<i64> {
    spread_offsets_at(1_000_000_000, 0x9E37_79B9_7F4A_7C15, partitions)
}

fn spread_offsets_at(base: i64, seed: u64, partitions: usize) -> Vec<i64> {
    let mut state = seed;
    (0..partitions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            base + (state % 5_000) as i64
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

/// A v2 cursor over several streams of different ages: each stream's offsets move together
/// (spread over 5,000) around its own base, from about 10^6 to 10^9.
#[test]
fn multi_cursor_size() {
    const BASES: [i64; 4] = [1_000_000_000, 3_000_000, 250_000_000, 1_000_000];
    println!("streams x partitions | v2 cursor length (chars) | sum of v1 cursors");
    println!("---------------------|--------------------------|------------------");
    // (streams, partitions each, budget): the v1 blocks, plus two bytes of v2 header.
    for (streams, partitions, budget) in [(2, 12, 100), (4, 12, 190), (4, 64, 760)] {
        let cursors: Vec<Cursor> = (0..streams)
            .map(|s| {
                let fingerprint = stream_fingerprint(&format!("stream-{s}"));
                Cursor::new(
                    fingerprint,
                    spread_offsets_at(BASES[s], 0x9E37_79B9 + s as u64, partitions),
                )
            })
            .collect();
        let singles: usize = cursors.iter().map(|c| c.encode().len()).sum();
        let multi = MultiCursor::new(cursors).unwrap();
        let text = multi.encode();
        println!(
            "{:>20} | {:>24} | {singles}",
            format!("{streams} x {partitions}"),
            text.len()
        );
        assert!(
            text.len() <= budget,
            "{streams} x {partitions}: {} > {budget}",
            text.len()
        );
        assert_eq!(MultiCursor::decode(&text), Ok(multi));
    }
}
