//! The connection engine without HTTP or a broker: a feed fed by hand, a subscriber writing
//! into a channel, and tokio's paused clock, so timers are tested exactly and instantly.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_gateway::body::BodyRx;
use sluice_gateway::feed::{Feed, FeedLimits};
use sluice_gateway::hub::FeedLease;
use sluice_gateway::kafka::scripted::ScriptedSource;
use sluice_gateway::kafka::{Record, RecordHeaders};
use sluice_gateway::runtime::Runtime;
use sluice_gateway::subscriber::{Filter, Out, Start, Subscriber, Timing};
use sluice_sse::{parse_stream, Cursor};
use tokio_util::sync::CancellationToken;

const HEARTBEAT: Duration = Duration::from_secs(15);
const CHECKPOINT: Duration = Duration::from_secs(5);

fn timing() -> Timing {
    Timing {
        heartbeat: HEARTBEAT,
        checkpoint_interval: CHECKPOINT,
        retry: Duration::from_secs(2),
        lifetime: None,
        drain_window: Duration::from_secs(10),
        write_timeout: Duration::from_secs(30),
        inbox_events: 16,
        max_queued_bytes: 64 * 1024,
    }
}

struct Harness {
    feed: Arc<Feed>,
    rx: BodyRx,
    drain: CancellationToken,
}

fn subscribe(partitions: usize, filter: Filter) -> Harness {
    subscribe_with(partitions, filter, Setup::default())
}

/// What a test changes about a subscriber: its queue bound, its ring, when its token expires.
struct Setup {
    queued: usize,
    ring_bytes: usize,
    /// The subscriber must end `reauth` from now, as when its token expires.
    reauth: Option<Duration>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            queued: 64 * 1024,
            ring_bytes: 1 << 20,
            reauth: None,
        }
    }
}

fn subscribe_with(partitions: usize, filter: Filter, setup: Setup) -> Harness {
    let Setup {
        queued,
        ring_bytes,
        reauth,
    } = setup;
    let limits = FeedLimits {
        ring_events: 1000,
        ring_bytes,
    };
    let start = Cursor::new(sluice_sse::stream_fingerprint("t"), vec![0; partitions]);
    let runtime = Runtime::unregistered(1);
    let feed = Feed::detached("t", "t", start.clone(), limits, runtime.clone());
    feed.add_subscriber();
    // Never asked: the feed is driven by hand and the position is in memory.
    let source = ScriptedSource::new();
    source.create("t", partitions);
    let (out, rx) = Out::channel(queued, None, Duration::from_secs(30));
    let drain = runtime.drain.clone();
    let subscriber = Subscriber::new(
        (FeedLease { feed: feed.clone() }, source),
        runtime,
        filter,
        Start {
            position: start,
            resumed: false,
            resets: Vec::new(),
        },
        Arc::new(Timing {
            max_queued_bytes: queued,
            ..timing()
        }),
        out,
    )
    .with_reauth(reauth);
    tokio::spawn(subscriber.run());
    Harness { feed, rx, drain }
}

/// A record as the source would hand it to the feed.
fn record(
    partition: u32,
    offset: i64,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    event_type: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Record {
    Record {
        partition,
        offset,
        timestamp_ms,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: RecordHeaders {
            event_type: event_type.map(Bytes::copy_from_slice),
            traceparent: None,
        },
    }
}

/// The next whole frame; one may be queued in parts (an id line, then the shared body).
async fn next_frame(rx: &mut BodyRx) -> String {
    let mut frame = Vec::new();
    while !frame.ends_with(b"\n\n") {
        frame.extend_from_slice(&rx.recv().await.expect("a frame"));
    }
    String::from_utf8(frame).unwrap()
}

#[tokio::test(start_paused = true)]
async fn first_frame_is_a_jittered_retry_then_heartbeats_every_interval() {
    let mut h = subscribe(1, Filter::default());
    let first = next_frame(&mut h.rx).await;
    let retry = parse_stream(first.as_bytes()).retry_ms.expect("retry: first");
    assert!((1000..=3000).contains(&retry), "2 s ± 50%: {retry}");

    let before = tokio::time::Instant::now();
    assert_eq!(next_frame(&mut h.rx).await, ": \n\n");
    assert_eq!(
        before.elapsed(),
        HEARTBEAT,
        "a heartbeat after exactly the interval of silence"
    );
    assert_eq!(next_frame(&mut h.rx).await, ": \n\n");
    assert_eq!(before.elapsed(), HEARTBEAT * 2);
}

#[tokio::test(start_paused = true)]
async fn events_postpone_the_heartbeat() {
    let mut h = subscribe(1, Filter::default());
    next_frame(&mut h.rx).await; // retry
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.feed.append(&record(0, 0, 0, None, None, Some(b"\"x\"")));
    let started = tokio::time::Instant::now();
    assert!(next_frame(&mut h.rx).await.contains("data: \"x\""));
    assert_eq!(next_frame(&mut h.rx).await, ": \n\n");
    assert_eq!(started.elapsed(), HEARTBEAT, "measured from the last frame sent");
}

#[tokio::test(start_paused = true)]
async fn filtered_streams_checkpoint_past_skipped_records_and_only_then() {
    let filter = Filter {
        keys: Vec::new(),
        types: vec!["wanted".into()],
    };
    let mut h = subscribe(2, filter);
    next_frame(&mut h.rx).await; // retry
    h.feed.append(&record(0, 0, 0, None, Some(b"other"), Some(b"1")));
    h.feed.append(&record(1, 0, 0, None, Some(b"other"), Some(b"2")));
    let started = tokio::time::Instant::now();
    let checkpoint = next_frame(&mut h.rx).await;
    assert_eq!(started.elapsed(), CHECKPOINT);
    let parsed = parse_stream(checkpoint.as_bytes());
    assert!(parsed.events.is_empty(), "id-only: nothing dispatched");
    let id = parsed.last_event_id.expect("the id moved");
    assert_eq!(Cursor::decode(&id).unwrap().offsets, vec![1, 1]);
    // Nothing moved since: the next frame is a heartbeat, not another checkpoint.
    assert_eq!(next_frame(&mut h.rx).await, ": \n\n");
}

#[tokio::test(start_paused = true)]
async fn key_filtered_subscribers_get_only_their_keys_and_a_checkpoint_for_the_rest() {
    // One partition, so both keys live in it: the subscriber must skip "b" but still advance.
    let filter = Filter {
        keys: vec![Bytes::from_static(b"a")],
        types: Vec::new(),
    };
    let mut h = subscribe(1, filter);
    next_frame(&mut h.rx).await; // retry
    h.feed.append(&record(0, 0, 0, Some(b"b"), None, Some(b"\"b0\"")));
    h.feed.append(&record(0, 1, 0, Some(b"a"), None, Some(b"\"a1\"")));
    h.feed.append(&record(0, 2, 0, Some(b"b"), None, Some(b"\"b2\"")));
    let frame = next_frame(&mut h.rx).await;
    let parsed = parse_stream(frame.as_bytes());
    assert_eq!(parsed.events.len(), 1);
    assert_eq!(parsed.events[0].data, "\"a1\"");
    assert_eq!(
        Cursor::decode(parsed.events[0].id.as_deref().unwrap()).unwrap().offsets,
        vec![2]
    );
    let checkpoint = parse_stream(next_frame(&mut h.rx).await.as_bytes());
    assert_eq!(
        Cursor::decode(&checkpoint.last_event_id.unwrap()).unwrap().offsets,
        vec![3]
    );
}

#[tokio::test(start_paused = true)]
async fn drain_ends_the_stream_within_the_window_with_a_retry() {
    let mut h = subscribe(1, Filter::default());
    next_frame(&mut h.rx).await; // retry
    let started = tokio::time::Instant::now();
    h.drain.cancel();
    let last = next_frame(&mut h.rx).await;
    assert!(parse_stream(last.as_bytes()).retry_ms.is_some(), "{last:?}");
    assert!(started.elapsed() <= timing().drain_window);
    assert!(h.rx.recv().await.is_none(), "then the stream ends");
}

#[tokio::test(start_paused = true)]
async fn a_match_followed_by_skipped_records_still_gets_a_checkpoint() {
    let filter = Filter {
        keys: Vec::new(),
        types: vec!["wanted".into()],
    };
    let mut h = subscribe(1, filter);
    next_frame(&mut h.rx).await; // retry
                                 // One batch: a match, then two records the filter skips.
    h.feed.append(&record(0, 0, 0, None, Some(b"wanted"), Some(b"1")));
    h.feed.append(&record(0, 1, 0, None, Some(b"other"), Some(b"2")));
    h.feed.append(&record(0, 2, 0, None, Some(b"other"), Some(b"3")));
    let event = parse_stream(next_frame(&mut h.rx).await.as_bytes());
    assert_eq!(event.events.len(), 1);
    assert_eq!(
        Cursor::decode(event.events[0].id.as_deref().unwrap()).unwrap().offsets,
        vec![1]
    );
    let checkpoint = parse_stream(next_frame(&mut h.rx).await.as_bytes());
    assert!(checkpoint.events.is_empty());
    assert_eq!(
        Cursor::decode(&checkpoint.last_event_id.unwrap()).unwrap().offsets,
        vec![3],
        "past the skipped records"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopped_feed_ends_its_streams_with_a_retry() {
    let mut h = subscribe(1, Filter::default());
    next_frame(&mut h.rx).await; // retry
    h.feed.stop.cancel();
    let last = next_frame(&mut h.rx).await;
    assert!(parse_stream(last.as_bytes()).retry_ms.is_some(), "{last:?}");
    assert!(h.rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_holds_at_most_its_bound_of_shared_frames_then_is_cut() {
    const LIMIT: usize = 64 * 1024;
    let mut h = subscribe_with(
        1,
        Filter::default(),
        Setup {
            queued: LIMIT,
            ring_bytes: 64 << 20,
            ..Setup::default()
        },
    );
    next_frame(&mut h.rx).await; // retry
    let big = format!("\"{}\"", "x".repeat(100_000));
    for offset in 0..40 {
        h.feed.append(&record(0, offset, 0, None, None, Some(big.as_bytes())));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // paused clock: every task runs until idle
    let queued = h.rx.queued_bytes();
    assert!(
        queued > 0 && queued <= LIMIT + big.len() + 200,
        "{queued} bytes queued: the bound plus one event at most (4 MB were available)"
    );

    // The client takes one frame 20 s after it stopped: the write timeout counts from then.
    tokio::time::sleep(Duration::from_secs(19)).await;
    let frame = h.rx.recv().await.expect("an event");
    let mut ring = Vec::new();
    h.feed
        .read((0, &[0], &[0]), (100, usize::MAX), &mut ring, None)
        .unwrap();
    assert!(
        ring.iter().any(|e| e.frame.as_ptr_range().contains(&frame.as_ptr())),
        "the frame is the ring's, not a copy"
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(h.feed.idle_for().is_none(), "25 s after the last take: still open");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        h.feed.idle_for().is_some(),
        "closed 30 s after the socket last took data"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expiring_token_ends_the_stream_with_reauth_at_the_cursor() {
    let filter = Filter {
        keys: Vec::new(),
        types: vec!["wanted".into()],
    };
    let reauth = Duration::from_secs(40);
    let mut h = subscribe_with(
        2,
        filter,
        Setup {
            reauth: Some(reauth),
            ..Setup::default()
        },
    );
    let started = tokio::time::Instant::now();
    next_frame(&mut h.rx).await; // retry
    h.feed.append(&record(0, 0, 0, None, Some(b"wanted"), Some(b"1")));
    h.feed.append(&record(1, 0, 0, None, Some(b"other"), Some(b"2")));
    let mut frames = String::new();
    while !frames.contains("sluice.reauth") {
        assert!(
            started.elapsed() <= reauth,
            "no reauth by the moment picked: {frames:?}"
        );
        frames.push_str(&next_frame(&mut h.rx).await);
    }
    assert_eq!(started.elapsed(), reauth, "at the moment picked, not a heartbeat later");
    let parsed = parse_stream(frames.as_bytes());
    let last = parsed.events.last().unwrap();
    assert_eq!(last.event_type, "sluice.reauth");
    assert_eq!(last.data, r#"{"reason":"token_expiring"}"#);
    assert_eq!(
        Cursor::decode(last.id.as_deref().unwrap()).unwrap().offsets,
        vec![1, 1],
        "the id is the position, past the record the filter skipped"
    );
    assert!(h.rx.recv().await.is_none(), "then the stream ends");
}

#[tokio::test(start_paused = true)]
async fn a_drain_heard_when_an_earlier_end_is_set_keeps_that_end() {
    // The token's end is 1 ms away; the drain picks one moment in its 10 s window, almost
    // surely later, and must pick it once: re-picking on every wake would soon land earlier
    // (and spin on the cancelled drain token meanwhile). 1 in 10,000 runs the drain wins fairly.
    let mut h = subscribe_with(
        1,
        Filter::default(),
        Setup {
            reauth: Some(Duration::from_millis(1)),
            ..Setup::default()
        },
    );
    next_frame(&mut h.rx).await; // retry
    h.drain.cancel();
    let mut frames = String::new();
    while let Some(frame) = h.rx.recv().await {
        frames.push_str(std::str::from_utf8(&frame).unwrap());
    }
    assert!(frames.contains("event: sluice.reauth"), "{frames:?}");
}
