//! The sample stream: a made-up stock ticker published while the dev stack runs, so the demo
//! page (and `curl`) show events moving the moment they connect.
//!
//! Each tick is a record written straight to Kafka the way a producer service would: key =
//! the symbol (so one symbol's ticks stay in order in one partition), headers `sse-event: tick`
//! and `content-type: application/json`, and a per-symbol `seq` that lets a reader see a
//! resume skips and repeats nothing.

use std::time::Duration;

use sluice_kafka::{OutRecord, Producer};
use sluice_runtime::CancellationToken;

const SYMBOLS: [(&str, f64); 3] = [("SLC", 100.0), ("KFK", 42.0), ("SSE", 7.5)];

/// Publishes a tick every `interval` to `topic` until `stop`.
pub async fn run(producer: Producer, topic: String, interval: Duration, stop: CancellationToken) {
    let mut prices: Vec<f64> = SYMBOLS.iter().map(|(_, price)| *price).collect();
    let mut seqs = [0u64; SYMBOLS.len()];
    let mut walk = Walk::seeded();
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0usize.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let i = n % SYMBOLS.len();
        // A bounded random walk: ±0.5 % per tick, never below a cent.
        prices[i] = (prices[i] * (1.0 + walk.next_unit() * 0.005)).max(0.01);
        let data = serde_json::json!({
            "symbol": SYMBOLS[i].0,
            "price": (prices[i] * 100.0).round() / 100.0,
            "seq": seqs[i],
        });
        seqs[i] += 1;
        let record = OutRecord {
            topic: topic.clone(),
            key: Some(SYMBOLS[i].0.as_bytes().to_vec()),
            value: data.to_string().into_bytes(),
            headers: vec![
                (sluice_kafka::headers::EVENT_TYPE.to_owned(), b"tick".to_vec()),
                ("content-type".to_owned(), b"application/json".to_vec()),
            ],
            timestamp_ms: None,
        };
        if let Err(err) = producer.send(&record).await {
            tracing::warn!(%err, topic, "ticker: a tick was not written");
        }
    }
}

/// xorshift64: enough randomness for a price chart, no dependency.
struct Walk(u64);

impl Walk {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Walk(nanos | 1)
    }

    /// Uniform in [-1, 1).
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_stays_in_range() {
        let mut walk = Walk(12345);
        let values: Vec<f64> = (0..10_000).map(|_| walk.next_unit()).collect();
        assert!(values.iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(values.iter().any(|v| *v > 0.5) && values.iter().any(|v| *v < -0.5));
    }
}
