//! A rough timing of the per-record hot path: advance the running cursor and build the event
//! frame with the cursor as its id. Not a rigorous benchmark; it exists to catch an order of
//! magnitude regression. Run with `cargo run --release -p sluice-sse --example frame_bench`.

use std::hint::black_box;
use std::time::Instant;

use sluice_sse::frame::cursor_event_frame;
use sluice_sse::{stream_fingerprint, Cursor};

fn main() {
    let data = r#"{"order_id":"8d1f0a4e","customer":"c-1042","total_cents":129900,"items":3}"#;
    for partitions in [12usize, 64, 256] {
        let mut cursor = Cursor::new(
            stream_fingerprint("orders"),
            (0..partitions as i64).map(|p| 1_000_000_000 + p * 37).collect(),
        );
        let iterations = 200_000;
        let start = Instant::now();
        let mut bytes = 0;
        for i in 0..iterations {
            let partition = i % partitions;
            let next = cursor.offsets[partition] + 1;
            cursor.set_next(partition, next);
            let frame =
                cursor_event_frame(&cursor, Some("order.created"), data).expect("the event type is a single line");
            bytes += black_box(frame).len();
        }
        let elapsed = start.elapsed();
        println!(
            "{partitions:>4} partitions: {:>7.0} ns per frame, {} bytes per frame",
            elapsed.as_nanos() as f64 / iterations as f64,
            bytes / iterations,
        );
    }
}
