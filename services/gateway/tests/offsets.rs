//! Kafka as producers really write it, through the gateway's record-source seam: offsets that
//! carry no record (transaction markers, aborted transactions, compaction) at the start, middle
//! and end of partitions, in memory, during catch-up, at the hand-off and at the head; retention
//! moving a partition's start; partitions added; a cursor past a partition's end.
//!
//! librdkafka's mock cluster writes no transaction markers, so these run on
//! [`ScriptedSource`]: the real engine (hub, feeds, ring, subscribers, catch-up) over Kafka in
//! memory. Each "pod" is a hub of its own over the same source, as gateways share one cluster.

use std::sync::Arc;
use std::time::Duration;

use sluice_gateway::body::BodyRx;
use sluice_gateway::feed::FeedLimits;
use sluice_gateway::hub::Hub;
use sluice_gateway::kafka::scripted::ScriptedSource;
use sluice_gateway::kafka::RecordSource;
use sluice_gateway::open::start_position;
use sluice_gateway::request::From;
use sluice_gateway::runtime::Runtime;
use sluice_gateway::subscriber::{Filter, Out, Subscriber, Timing};
use sluice_sse::{parse_stream, Cursor};
use sluice_testkit::eventually;

const WAIT: Duration = Duration::from_secs(10);

/// One gateway's engine over the shared source.
struct Pod {
    hub: Hub,
    runtime: Arc<Runtime>,
}

fn pod(source: &Arc<ScriptedSource>, ring_events: usize) -> Pod {
    let runtime = Runtime::unregistered(2);
    let source: Arc<dyn RecordSource> = source.clone();
    let limits = FeedLimits {
        ring_events,
        ring_bytes: 1 << 20,
    };
    Pod {
        hub: Hub::new(source, runtime.clone(), limits),
        runtime,
    }
}

/// What a client sees, frame by frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Event { id: String, kind: String, data: String },
    Checkpoint(String),
}

struct Client {
    rx: BodyRx,
    pending: Vec<u8>,
}

impl Pod {
    async fn open(&self, cursor: Option<&str>, from: From, filter: Filter) -> Client {
        let lease = self.hub.subscribe("t", "t").await.expect("the stream exists");
        let cursor = cursor.map(|c| Cursor::decode(c).expect("a valid cursor"));
        let source = self.hub.source().clone();
        let start = start_position(source.as_ref(), &lease.feed, cursor, from)
            .await
            .expect("a start position");
        let (out, rx) = Out::channel(1 << 20, None, Duration::from_secs(30));
        let timing = Timing {
            heartbeat: Duration::from_secs(15),
            checkpoint_interval: Duration::from_millis(50),
            retry: Duration::from_secs(2),
            lifetime: None,
            drain_window: Duration::from_secs(1),
            write_timeout: Duration::from_secs(30),
            inbox_events: 64,
            max_queued_bytes: 1 << 20,
        };
        let subscriber = Subscriber::new(
            (lease, source),
            self.runtime.clone(),
            filter,
            start,
            Arc::new(timing),
            out,
        );
        tokio::spawn(subscriber.run());
        Client {
            rx,
            pending: Vec::new(),
        }
    }

    fn readers_active(&self) -> i64 {
        self.runtime.metrics.catchup_readers_active.get()
    }
}

impl Client {
    /// The next event or checkpoint (retry frames and comments are skipped).
    async fn next(&mut self) -> Seen {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.pending.drain(..end + 2).collect();
                let parsed = parse_stream(&frame);
                if let Some(event) = parsed.events.into_iter().next() {
                    return Seen::Event {
                        id: event.id.unwrap_or_default(),
                        kind: event.event_type,
                        data: event.data,
                    };
                }
                if frame.starts_with(b"id: ") {
                    return Seen::Checkpoint(parsed.last_event_id.unwrap_or_default());
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("a frame within the deadline")
                .expect("the stream is open");
            self.pending.extend_from_slice(&chunk);
        }
    }

    /// The next `n` events' data (checkpoints and the caught-up marker skipped), and the last id.
    async fn events(&mut self, n: usize) -> (Vec<String>, String) {
        let (mut data, mut last) = (Vec::new(), String::new());
        while data.len() < n {
            if let Seen::Event { id, kind, data: d } = self.next().await {
                assert_ne!(kind, "gap", "unexpected gap: {d}");
                if kind == "sluice.caught-up" {
                    continue;
                }
                data.push(d);
                last = id;
            }
        }
        (data, last)
    }
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("r{i}")).collect()
}

/// One partition: `r0 r1` · marker · `r2` · aborted(2) · `r3` · compacted · `r5`… as the test
/// lays it out, returning each visible record's offset.
fn partition_with_gaps(source: &ScriptedSource) -> Vec<i64> {
    source.create("t", 1);
    let mut offsets = Vec::new();
    source.control("t", 0); // a marker at the very start
    for i in 0..10 {
        offsets.push(source.record("t", 0, None, &format!("r{i}")));
        match i % 3 {
            0 => {
                source.control("t", 0);
            }
            1 => source.aborted("t", 0, 2),
            _ => {}
        }
    }
    let compacted = offsets.remove(4);
    source.compact("t", 0, compacted);
    offsets
}

#[tokio::test]
async fn records_between_markers_aborts_and_compaction_stream_exactly_from_memory() {
    let source = ScriptedSource::new();
    let offsets = partition_with_gaps(&source);
    let pod = pod(&source, 1000);
    let mut client = pod.open(None, From::Earliest, Filter::default()).await;
    let want: Vec<String> = (0..10).filter(|&i| i != 4).map(|i| format!("r{i}")).collect();
    let (got, _) = client.events(want.len()).await;
    assert_eq!(got, want, "every visible record once, in order (offsets {offsets:?})");
    assert_eq!(pod.readers_active(), 0, "served from memory");
}

#[tokio::test]
async fn every_id_resumes_exactly_on_another_pod_across_every_kind_of_gap() {
    let source = ScriptedSource::new();
    partition_with_gaps(&source);
    let want: Vec<String> = (0..10).filter(|&i| i != 4).map(|i| format!("r{i}")).collect();
    let first = pod(&source, 1000);
    let mut client = first.open(None, From::Earliest, Filter::default()).await;
    let mut ids = Vec::new();
    for _ in 0..want.len() {
        let (_, id) = client.events(1).await;
        ids.push(id);
    }
    // From memory (a big ring) and through catch-up (a ring of one entry) alike.
    for ring in [1000, 1] {
        let other = pod(&source, ring);
        for (i, id) in ids.iter().enumerate() {
            let rest = &want[i + 1..];
            let mut resumed = other.open(Some(id), From::Latest, Filter::default()).await;
            let (got, _) = resumed.events(rest.len()).await;
            assert_eq!(got, rest, "resuming after {} (ring {ring})", want[i]);
        }
    }
}

#[tokio::test]
async fn a_catch_up_ends_when_the_rest_of_a_partition_is_only_markers_and_aborts() {
    let source = ScriptedSource::new();
    source.create("t", 1);
    for i in 0..20 {
        source.record("t", 0, None, &format!("r{i}"));
    }
    // The tail: a committed transaction's marker and an aborted transaction; no more records.
    source.control("t", 0);
    source.aborted("t", 0, 3);
    // A ring of two entries starts its prefill among those tail offsets: memory holds nothing,
    // and its floor lies beyond the last record.
    let pod = pod(&source, 2);
    let mut client = pod.open(None, From::Earliest, Filter::default()).await;
    let (got, _) = client.events(20).await;
    assert_eq!(got, names(0..20));
    eventually(
        "the catch-up gives its reader back without a new record",
        WAIT,
        || async { (pod.readers_active() == 0).then_some(()) },
    )
    .await
    .unwrap();
    // And it is live: the next record arrives from memory.
    source.record("t", 0, None, "r20");
    assert_eq!(client.events(1).await.0, ["r20"]);
}

#[tokio::test]
async fn a_filtered_catch_up_checkpoints_past_trailing_markers() {
    let source = ScriptedSource::new();
    source.create("t", 1);
    for i in 0..5 {
        source.record("t", 0, None, &format!("r{i}"));
    }
    source.aborted("t", 0, 4);
    let pod = pod(&source, 2);
    let filter = Filter {
        keys: Vec::new(),
        types: vec!["nothing-matches".into()],
    };
    let mut client = pod.open(None, From::Earliest, filter).await;
    // The position must move past the aborted transaction: offset 10 is the partition's end.
    let end = Cursor::new(sluice_sse::stream_fingerprint("t"), vec![10]).encode();
    loop {
        match client.next().await {
            Seen::Checkpoint(id) if id == end => break,
            Seen::Event { id, kind, .. } if kind == "sluice.caught-up" => {
                assert_eq!(id, end, "the marker's id is past the aborted transaction");
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn markers_at_the_head_move_the_ring_and_the_ids_past_them() {
    let source = ScriptedSource::new();
    source.create("t", 2);
    let pod = pod(&source, 1000);
    let mut plain = pod.open(None, From::Latest, Filter::default()).await;
    let only_x = Filter {
        keys: Vec::new(),
        types: vec!["x".into()],
    };
    let mut filtered = pod.open(None, From::Latest, only_x).await;
    source.typed_record("t", 0, Some("x"), None, "a");
    source.aborted("t", 0, 2); // offsets 1..=3
    source.typed_record("t", 1, Some("y"), None, "b");
    let (got, id) = plain.events(2).await;
    assert_eq!(got, ["a", "b"]);
    let past = vec![4, 1];
    assert_eq!(
        Cursor::decode(&id).unwrap().offsets,
        past,
        "the id after b holds partition 0 past the aborted transaction"
    );
    assert_eq!(filtered.events(1).await.0, ["a"]);
    // b is filtered out: the checkpoint that covers it holds the subscriber's own position,
    // which moved past the aborted transaction with the entry that carried the move.
    loop {
        if let Seen::Checkpoint(id) = filtered.next().await {
            if Cursor::decode(&id).unwrap().offsets[1] == 1 {
                assert_eq!(Cursor::decode(&id).unwrap().offsets, past);
                break;
            }
        }
    }
}

#[tokio::test]
async fn retention_trims_memory_so_every_pod_reports_the_same_gap() {
    let source = ScriptedSource::new();
    source.create("t", 1);
    for i in 0..10 {
        source.record("t", 0, None, &format!("r{i}"));
    }
    let old = pod(&source, 1000);
    let mut reader = old.open(None, From::Earliest, Filter::default()).await;
    let (_, _) = reader.events(10).await; // the ring holds r0..r9 on this pod
    source.set_low("t", 0, 5);
    let cursor = Cursor::new(sluice_sse::stream_fingerprint("t"), vec![2]).encode();
    let fresh = pod(&source, 1000);
    for (name, pod) in [("the pod whose ring held them", &old), ("a fresh pod", &fresh)] {
        let mut client = pod.open(Some(&cursor), From::Latest, Filter::default()).await;
        let Seen::Event { kind, data, .. } = client.next().await else {
            panic!("{name}: a gap first")
        };
        assert_eq!(kind, "gap", "{name}");
        let gap: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(gap["reason"], "retention", "{name}");
        assert_eq!(gap["partitions"][0]["from"], 2, "{name}");
        assert_eq!(gap["partitions"][0]["to"], 5, "{name}");
        assert_eq!(client.events(5).await.0, names(5..10), "{name}");
    }
}

#[tokio::test]
async fn a_subscriber_in_memory_below_the_new_start_is_told_of_the_gap() {
    let source = ScriptedSource::new();
    source.create("t", 1);
    let pod = pod(&source, 1000);
    // A client that stopped reading at r1, while the ring holds r0..r9.
    let mut client = pod.open(None, From::Earliest, Filter::default()).await;
    for i in 0..2 {
        source.record("t", 0, None, &format!("r{i}"));
    }
    let (_, id) = client.events(2).await;
    drop(client);
    for i in 2..10 {
        source.record("t", 0, None, &format!("r{i}"));
    }
    source.set_low("t", 0, 6);
    let mut resumed = pod.open(Some(&id), From::Latest, Filter::default()).await;
    let Seen::Event { kind, .. } = resumed.next().await else {
        panic!("a gap first")
    };
    assert_eq!(kind, "gap");
    assert_eq!(resumed.events(4).await.0, names(6..10));
}

#[tokio::test]
async fn a_topic_gaining_partitions_grows_open_streams_and_their_cursors() {
    let source = ScriptedSource::new();
    source.create("t", 2);
    let pod = pod(&source, 1000);
    let mut client = pod.open(None, From::Latest, Filter::default()).await;
    source.record("t", 0, None, "before");
    assert_eq!(client.events(1).await.0, ["before"]);

    // A pod whose feed started while the topic had two partitions, and has not looked since.
    let behind = self::pod(&source, 1000);
    let _held = behind.hub.subscribe("t", "t").await.unwrap();

    source.add_partitions("t", 3);
    let lease = pod.hub.subscribe("t", "t").await.unwrap();
    lease.feed.grow(pod.hub.source().as_ref()).await.unwrap();
    assert_eq!(lease.feed.partitions(), 3, "grown in place, not restarted");
    source.record("t", 2, None, "in the new partition");
    let (got, id) = client.events(1).await;
    assert_eq!(got, ["in the new partition"]);
    assert_eq!(Cursor::decode(&id).unwrap().offsets, vec![1, 0, 1], "the cursor grew");

    // The pod that has not looked takes the wider cursor (it looks first), and resumes exactly.
    source.record("t", 2, None, "after");
    let mut resumed = behind.open(Some(&id), From::Latest, Filter::default()).await;
    assert_eq!(resumed.events(1).await.0, ["after"]);
}

#[tokio::test]
async fn an_old_cursor_without_the_new_partitions_reads_them_from_the_start() {
    let source = ScriptedSource::new();
    source.create("t", 1);
    source.record("t", 0, None, "p0");
    let narrow = Cursor::new(sluice_sse::stream_fingerprint("t"), vec![1]).encode();
    source.add_partitions("t", 2);
    source.record("t", 1, None, "p1-first");
    let pod = pod(&source, 1000);
    let mut client = pod.open(Some(&narrow), From::Latest, Filter::default()).await;
    assert_eq!(client.events(1).await.0, ["p1-first"]);
}

#[tokio::test]
async fn a_cursor_past_a_partitions_end_restarts_it_at_the_earliest_offset_after_a_reset_gap() {
    let source = ScriptedSource::new();
    source.create("t", 2);
    for i in 0..3 {
        source.record("t", 0, None, &format!("r{i}"));
    }
    source.record("t", 1, None, "q0");
    // Partition 0 is beyond its end (the topic was recreated); partition 1 is fine.
    let cursor = Cursor::new(sluice_sse::stream_fingerprint("t"), vec![500, 1]).encode();
    for ring in [1000, 1] {
        let pod = pod(&source, ring);
        let mut client = pod.open(Some(&cursor), From::Latest, Filter::default()).await;
        let Seen::Event { kind, data, id } = client.next().await else {
            panic!("a gap first")
        };
        assert_eq!(kind, "gap");
        let gap: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(gap["reason"], "reset", "ring {ring}: {gap}");
        assert_eq!(gap["partitions"][0]["partition"], 0);
        assert_eq!(gap["partitions"][0]["from"], 500);
        assert_eq!(gap["partitions"][0]["to"], 0);
        assert_eq!(Cursor::decode(&id).unwrap().offsets, vec![0, 1]);
        assert_eq!(client.events(3).await.0, names(0..3), "ring {ring}");
    }
}

#[tokio::test]
async fn a_catch_up_reader_failure_ends_the_stream_and_a_resume_continues_exactly() {
    let source = ScriptedSource::new();
    source.create("t", 1);
    for i in 0..10 {
        source.record("t", 0, None, &format!("r{i}"));
    }
    let pod = pod(&source, 2);
    source.fail_readers(true);
    let mut client = pod.open(None, From::Earliest, Filter::default()).await;
    // Only the retry frame, then the end: no event, no stall.
    let ended = tokio::time::timeout(WAIT, async { while client.rx.recv().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the stream ends when Kafka cannot be read");
    source.fail_readers(false);
    let mut again = pod.open(None, From::Earliest, Filter::default()).await;
    assert_eq!(again.events(10).await.0, names(0..10));
}

/// Events' kinds and data up to and including the first `sluice.caught-up`, and its id.
async fn until_caught_up(client: &mut Client) -> (Vec<String>, String) {
    let mut seen = Vec::new();
    loop {
        if let Seen::Event { id, kind, data } = client.next().await {
            if kind == "sluice.caught-up" {
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&data).unwrap(),
                    serde_json::json!({"streams": ["t"]})
                );
                return (seen, id);
            }
            seen.push(data);
        }
    }
}

#[tokio::test]
async fn caught_up_comes_once_exactly_after_the_backlog_from_memory_and_from_kafka() {
    for ring in [1000, 2] {
        let source = ScriptedSource::new();
        source.create("t", 2);
        for i in 0..10 {
            source.record("t", i % 2, None, &format!("r{i}"));
        }
        let pod = pod(&source, ring);
        let mut client = pod.open(None, From::Earliest, Filter::default()).await;
        let (mut backlog, id) = until_caught_up(&mut client).await;
        backlog.sort();
        assert_eq!(backlog, names(0..10), "ring {ring}: the whole backlog, then the marker");
        assert_eq!(
            Cursor::decode(&id).unwrap().offsets,
            vec![5, 5],
            "its id is the position"
        );
        source.record("t", 0, None, "live");
        let Seen::Event { kind, data, .. } = client.next().await else {
            panic!("an event")
        };
        assert_eq!(
            (kind.as_str(), data.as_str()),
            ("message", "live"),
            "ring {ring}: once only"
        );
    }
}

#[tokio::test]
async fn caught_up_comes_past_trailing_markers_without_waiting_for_a_record() {
    let source = ScriptedSource::new();
    source.create("t", 1);
    for i in 0..3 {
        source.record("t", 0, None, &format!("r{i}"));
    }
    source.aborted("t", 0, 2);
    let pod = pod(&source, 1000);
    let mut client = pod.open(None, From::Earliest, Filter::default()).await;
    let (backlog, id) = until_caught_up(&mut client).await;
    assert_eq!(backlog, names(0..3));
    assert_eq!(Cursor::decode(&id).unwrap().offsets, vec![6]);
}

#[tokio::test]
async fn a_subscriber_that_starts_at_the_head_gets_no_caught_up() {
    let source = ScriptedSource::new();
    source.create("t", 1);
    source.record("t", 0, None, "old");
    let pod = pod(&source, 1000);
    let head = Cursor::new(sluice_sse::stream_fingerprint("t"), vec![1]).encode();
    for (cursor, from) in [(None, From::Latest), (Some(head.as_str()), From::Latest)] {
        let mut client = pod.open(cursor, from, Filter::default()).await;
        source.record("t", 0, None, "new");
        let Seen::Event { kind, .. } = client.next().await else {
            panic!("an event")
        };
        assert_eq!(kind, "message", "{cursor:?}: nothing was behind");
    }
}
