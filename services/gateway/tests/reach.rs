//! Several streams in one connection (`GET /v1/streams/a,b`) and polling
//! (`GET /v1/streams/{streams}/poll`): `sluice-gateway` in-process on port 0 against the test
//! kit's Kafka, streams read with the reference SSE parser, pages with serde_json.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sluice_sse::{Cursor, MultiCursor, ParsedEvent};
use sluice_testkit::sse::Next;
use sluice_testkit::{RunningService, SseStream};

mod support;

use support::{Fixture, WAIT};

/// The next `n` events, the gateway's own (`sluice.caught-up`) set aside.
async fn read_events(stream: &mut SseStream, n: usize) -> Vec<ParsedEvent> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match stream.next_stream_event(WAIT).await.unwrap() {
            Next::Event(event) => events.push(event),
            Next::Ended => panic!("after {} of {n} events: the stream ended", events.len()),
        }
    }
    events
}

/// `(stream, data)` of events typed `<stream>:<type>`, checking the type is one of `types`.
fn by_stream(events: &[ParsedEvent], types: &[&str]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let (stream, kind) = e
                .event_type
                .split_once(':')
                .unwrap_or_else(|| panic!("type {:?}", e.event_type));
            assert!(types.contains(&kind), "type {:?}", e.event_type);
            (stream.to_owned(), serde_json::from_str::<String>(&e.data).unwrap())
        })
        .collect()
}

/// The data of one stream's events, in the order they came.
fn of(events: &[(String, String)], stream: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(s, _)| s == stream)
        .map(|(_, d)| d.clone())
        .collect()
}

fn seq(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Sorted per key (`k{i % keys}`): what per-partition order promises.
fn per_key(data: &[String], keys: usize) -> HashMap<usize, Vec<usize>> {
    let mut out: HashMap<usize, Vec<usize>> = HashMap::new();
    for d in data {
        let i: usize = d.rsplit('-').next().unwrap().parse().unwrap();
        out.entry(i % keys).or_default().push(i);
    }
    out
}

fn assert_exactly(got: &[String], want: &[String], keys: usize, who: &str) {
    let mut sorted = got.to_vec();
    sorted.sort();
    let mut expected = want.to_vec();
    expected.sort();
    assert_eq!(sorted, expected, "{who}: not every event exactly once");
    for (key, seqs) in per_key(got, keys) {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{who}: key k{key} out of order: {seqs:?}"
        );
    }
}

async fn poll(gateway: &RunningService, path: &str) -> Value {
    let response = reqwest::get(gateway.url(path)).await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn refused(gateway: &RunningService, path: &str) -> (u16, String) {
    let response = reqwest::get(gateway.url(path)).await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

fn page_data(page: &Value) -> Vec<(String, String)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let data: String = serde_json::from_str(e["data"].as_str().unwrap()).unwrap();
            (e["stream"].as_str().unwrap().to_owned(), data)
        })
        .collect()
}

fn cursor_of(page: &Value) -> String {
    page["cursor"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_share_one_connection_with_stream_typed_events_and_one_cursor() {
    let f = Fixture::start().await;
    let (a, b) = (f.topic(4).await, f.topic(2).await);
    f.publish(&a, "a", 40, 4).await;
    f.publish(&b, "b", 30, 3).await;
    let gateway = f.gateway(|_| {}).await;
    let mut stream = f
        .open(&gateway, &format!("/v1/streams/{a},{b}?from=earliest"), None)
        .await;

    // The backlog of both streams, then one caught-up marker naming both.
    let mut backlog = Vec::new();
    let caught_up = loop {
        match stream.next_event(WAIT).await.unwrap() {
            event if event.event_type == "sluice.caught-up" => break event,
            event => backlog.push(event),
        }
    };
    let got = by_stream(&backlog, &["t0", "t1"]);
    assert_exactly(&of(&got, &a), &seq("a", 0..40), 4, "stream a");
    assert_exactly(&of(&got, &b), &seq("b", 0..30), 3, "stream b");
    assert_eq!(got.len(), 70);
    let streams: Value = serde_json::from_str(&caught_up.data).unwrap();
    assert_eq!(streams, serde_json::json!({ "streams": [a, b] }));

    // Every id is one v2 cursor over both streams, and the marker's is the last event's.
    let fingerprints = [sluice_sse::stream_fingerprint(&a), sluice_sse::stream_fingerprint(&b)];
    for event in &backlog {
        let cursor = MultiCursor::decode(event.id.as_deref().unwrap()).unwrap();
        assert!(fingerprints.iter().all(|&f| cursor.get(f).is_some()), "{cursor:?}");
        assert!(Cursor::decode(event.id.as_deref().unwrap()).is_err(), "a v1 id");
    }
    assert_eq!(caught_up.id, backlog.last().unwrap().id);

    // Live events of both follow.
    f.publish(&b, "b-live", 2, 1).await;
    f.publish(&a, "a-live", 2, 1).await;
    let live = by_stream(&read_events(&mut stream, 4).await, &["t0", "t1"]);
    assert_eq!(of(&live, &a), seq("a-live", 0..2));
    assert_eq!(of(&live, &b), seq("b-live", 0..2));
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_stream_id_resumes_exactly_on_another_gateway() {
    let f = Fixture::start().await;
    let (a, b) = (f.topic(4).await, f.topic(4).await);
    f.publish(&a, "a", 60, 4).await;
    f.publish(&b, "b", 60, 4).await;
    let (one, two) = (f.gateway(|_| {}).await, f.gateway(|_| {}).await);
    let path = format!("/v1/streams/{a},{b}?from=earliest");
    let mut first = f.open(&one, &path, None).await;
    let events = read_events(&mut first, 45).await;
    let mut got = by_stream(&events, &["t0", "t1"]);
    let id = events.last().unwrap().id.clone().unwrap();
    drop(first);
    let mut second = f.open(&two, &path, Some(&id)).await;
    got.extend(by_stream(&read_events(&mut second, 120 - 45).await, &["t0", "t1"]));
    assert_exactly(&of(&got, &a), &seq("a", 0..60), 4, "a");
    assert_exactly(&of(&got, &b), &seq("b", 0..60), 4, "b");
    one.stop(WAIT).await.unwrap();
    two.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_to_every_stream_and_checkpoints_carry_the_combined_cursor() {
    let f = Fixture::start().await;
    let (a, b) = (f.topic(2).await, f.topic(2).await);
    let gateway = f.gateway(|c| c.checkpoint_interval = Duration::from_millis(100)).await;
    let mut stream = f.open(&gateway, &format!("/v1/streams/{a},{b}?type=t1"), None).await;
    f.publish(&a, "a", 10, 2).await;
    f.publish(&b, "b", 10, 2).await;
    let got = by_stream(&read_events(&mut stream, 10).await, &["t1"]);
    assert_eq!(of(&got, &a), ["a-1", "a-3", "a-5", "a-7", "a-9"]);
    assert_eq!(of(&got, &b), ["b-1", "b-3", "b-5", "b-7", "b-9"]);

    // Only t0 records now: no event, but a checkpoint moves the id past them, in both streams.
    let before = stream.last_event_id().unwrap();
    f.publish(&a, "a-more", 1, 1).await;
    f.publish(&b, "b-more", 1, 1).await;
    let (fa, fb) = (sluice_sse::stream_fingerprint(&a), sluice_sse::stream_fingerprint(&b));
    let total = |id: &str, fingerprint: u32| -> i64 {
        MultiCursor::decode(id)
            .unwrap()
            .get(fingerprint)
            .unwrap()
            .offsets
            .iter()
            .sum()
    };
    stream
        .read_until(WAIT, |s| {
            let now = s.last_event_id().unwrap();
            total(&now, fa) > total(&before, fa) && total(&now, fb) > total(&before, fb)
        })
        .await
        .unwrap();
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_naming_streams_twice_badly_too_many_or_unknown_are_refused() {
    let f = Fixture::start().await;
    let (a, b, c) = (f.topic(1).await, f.topic(1).await, f.topic(1).await);
    let gateway = f.gateway(|c| c.max_streams_per_connection = 2).await;
    for suffix in ["", "/poll"] {
        let cases = [
            (format!("/v1/streams/{a},{a}{suffix}"), 400, "invalid_stream_name"),
            (format!("/v1/streams/{a},,{b}{suffix}"), 400, "invalid_stream_name"),
            (format!("/v1/streams/{a},b%20c{suffix}"), 400, "invalid_stream_name"),
            (format!("/v1/streams/{a},{b},{c}{suffix}"), 400, "invalid_query"),
            (format!("/v1/streams/{a},nope-{b}{suffix}"), 404, "unknown_stream"),
        ];
        for (path, status, code) in cases {
            assert_eq!(refused(&gateway, &path).await, (status, code.to_owned()), "{path}");
        }
    }
    // A cursor of another stream covers none of these.
    let foreign = Cursor::new(sluice_sse::stream_fingerprint(&c), vec![0]).encode();
    for path in [
        format!("/v1/streams/{a},{b}?lastEventId={foreign}"),
        format!("/v1/streams/{a},{b}/poll?cursor={foreign}"),
    ] {
        assert_eq!(refused(&gateway, &path).await, (400, "invalid_cursor".into()), "{path}");
    }
    for (query, code) in [
        ("limit=0", "invalid_query"),
        ("limit=1001", "invalid_query"),
        ("wait=soon", "invalid_query"),
    ] {
        let path = format!("/v1/streams/{a}/poll?{query}");
        assert_eq!(refused(&gateway, &path).await, (400, code.into()), "{path}");
    }
    gateway
        .wait_for_metric("sluice_gateway_polls_total{outcome=\"invalid_query\"} 4", WAIT)
        .await
        .unwrap();
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_page_through_a_stream_with_limit_and_cursor() {
    let f = Fixture::start().await;
    let a = f.topic(4).await;
    f.publish(&a, "a", 25, 4).await;
    let gateway = f.gateway(|_| {}).await;
    let first = poll(&gateway, &format!("/v1/streams/{a}/poll?from=earliest&limit=10")).await;
    let events = first["events"].as_array().unwrap();
    assert_eq!(events.len(), 10);
    let event = &events[0];
    for field in [
        "id",
        "stream",
        "type",
        "data",
        "key",
        "partition",
        "offset",
        "timestamp",
    ] {
        assert!(event.get(field).is_some(), "{field} missing from {event}");
    }
    assert_eq!(event["stream"], a.as_str());
    assert!(event["type"] == "t0" || event["type"] == "t1", "{event}");
    assert!(event["key"].as_str().unwrap().starts_with('k'));
    assert!(event["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    // One stream: v1 cursors, the same as its SSE ids; the last event's id is the page's cursor.
    assert!(Cursor::decode(&cursor_of(&first)).is_ok());
    assert_eq!(events.last().unwrap()["id"], first["cursor"]);

    let mut got = page_data(&first);
    let mut cursor = cursor_of(&first);
    let mut sizes = vec![10];
    while got.len() < 25 {
        let page = poll(&gateway, &format!("/v1/streams/{a}/poll?cursor={cursor}&limit=10")).await;
        sizes.push(page["events"].as_array().unwrap().len());
        got.extend(page_data(&page));
        cursor = cursor_of(&page);
    }
    assert_eq!(sizes, [10, 10, 5]);
    let data: Vec<String> = got.into_iter().map(|(_, d)| d).collect();
    assert_exactly(&data, &seq("a", 0..25), 4, "pages");

    // Nothing new and no wait: an empty page at once, the cursor where it was.
    let empty = poll(&gateway, &format!("/v1/streams/{a}/poll?cursor={cursor}")).await;
    assert_eq!(empty["events"].as_array().unwrap().len(), 0);
    assert_eq!(cursor_of(&empty), cursor);
    assert!(empty.get("gap").is_none());
    // No subscriber outlives its poll.
    let metrics = gateway.metrics().await.unwrap();
    assert!(metrics.contains("sluice_gateway_subscribers_active 0\n"), "{metrics}");
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_cursors_and_sse_ids_are_interchangeable() {
    let f = Fixture::start().await;
    let (a, b) = (f.topic(2).await, f.topic(2).await);
    f.publish(&a, "a", 20, 2).await;
    f.publish(&b, "b", 20, 2).await;
    let gateway = f.gateway(|_| {}).await;
    let both = format!("{a},{b}");

    // Poll 15, stream 10 from the poll's cursor, poll the rest from the stream's id.
    let page = poll(&gateway, &format!("/v1/streams/{both}/poll?from=earliest&limit=15")).await;
    let mut got = page_data(&page);
    assert_eq!(got.len(), 15);
    let mut stream = f
        .open(&gateway, &format!("/v1/streams/{both}"), Some(&cursor_of(&page)))
        .await;
    let events = read_events(&mut stream, 10).await;
    got.extend(by_stream(&events, &["t0", "t1"]));
    // The last event taken (the parser may hold more of the chunk it came in).
    let id = events.last().unwrap().id.clone().unwrap();
    drop(stream);
    let rest = poll(&gateway, &format!("/v1/streams/{both}/poll?cursor={id}")).await;
    got.extend(page_data(&rest));
    assert_exactly(&of(&got, &a), &seq("a", 0..20), 2, "a");
    assert_exactly(&of(&got, &b), &seq("b", 0..20), 2, "b");

    // A two-stream cursor also resumes each stream on its own.
    let mut only_b = f
        .open(&gateway, &format!("/v1/streams/{b}"), Some(&cursor_of(&page)))
        .await;
    let polled_b = of(&page_data(&page), &b).len();
    let data: Vec<String> = read_events(&mut only_b, 20 - polled_b)
        .await
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let mut all_b = of(&page_data(&page), &b);
    all_b.extend(data);
    assert_exactly(&all_b, &seq("b", 0..20), 2, "b alone");
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_as_soon_as_an_event_arrives() {
    let f = Fixture::start().await;
    let (a, b) = (f.topic(2).await, f.topic(2).await);
    let gateway = f.gateway(|_| {}).await;
    let start = poll(&gateway, &format!("/v1/streams/{a},{b}/poll")).await;
    let url = gateway.url(&format!(
        "/v1/streams/{a},{b}/poll?wait=25&cursor={}",
        cursor_of(&start)
    ));
    let asked = tokio::time::Instant::now();
    let pending = tokio::spawn(async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() });
    // The poll holds a connection slot while it waits.
    gateway
        .wait_for_metric("sluice_gateway_connections_active 1", WAIT)
        .await
        .unwrap();
    f.publish(&b, "b", 1, 1).await;
    let page = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    let waited = asked.elapsed();
    assert_eq!(page_data(&page), [(b.clone(), "b-0".to_owned())]);
    assert!(
        waited < Duration::from_secs(20),
        "answered after {waited:?}, not when the event came"
    );
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_keeps_to_its_keys_and_its_cursor_passes_what_it_skipped() {
    let f = Fixture::start().await;
    let a = f.topic(4).await;
    f.publish(&a, "a", 20, 4).await;
    let gateway = f.gateway(|_| {}).await;
    let page = poll(&gateway, &format!("/v1/streams/{a}/poll?from=earliest&key=k1")).await;
    let data: Vec<String> = page_data(&page).into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, ["a-1", "a-5", "a-9", "a-13", "a-17"]);
    let mut cursor = cursor_of(&page);
    f.publish(&a, "b", 8, 4).await;
    // A long poll answers with what has arrived: the two events may come in one page or two.
    let mut data = Vec::new();
    while data.len() < 2 {
        let next = poll(
            &gateway,
            &format!("/v1/streams/{a}/poll?cursor={cursor}&key=k1&wait=10"),
        )
        .await;
        assert!(!next["events"].as_array().unwrap().is_empty(), "{next}");
        data.extend(page_data(&next).into_iter().map(|(_, d)| d));
        cursor = cursor_of(&next);
    }
    assert_eq!(data, ["b-1", "b-5"]);
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_cursor_past_the_end_restarts_the_partition_and_reports_the_gap() {
    let f = Fixture::start().await;
    let a = f.topic(1).await;
    f.publish(&a, "a", 3, 1).await;
    let gateway = f.gateway(|_| {}).await;
    let ahead = Cursor::new(sluice_sse::stream_fingerprint(&a), vec![1_000]).encode();
    let page = poll(&gateway, &format!("/v1/streams/{a}/poll?cursor={ahead}")).await;
    let gap = &page["gap"][0];
    assert_eq!(gap["stream"], a.as_str(), "{page}");
    assert_eq!(gap["reason"], "reset", "{page}");
    let data: Vec<String> = page_data(&page).into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, ["a-0", "a-1", "a-2"]);
    gateway
        .wait_for_metric("sluice_gateway_polls_total{outcome=\"gap\"} 1", WAIT)
        .await
        .unwrap();
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_read_what_memory_no_longer_holds_from_kafka_a_page_at_a_time() {
    let f = Fixture::start().await;
    let (a, b) = (f.topic(1).await, f.topic(2).await);
    f.publish(&a, "a", 120, 1).await;
    f.publish(&b, "b", 80, 2).await;
    // A ring of two events: every page but the last reads Kafka, whose reads come in chunks of
    // many events; a page must stop inside one without skipping the rest.
    let gateway = f.gateway(|c| c.ring_events = 2).await;
    let both = format!("{a},{b}");
    let mut page = poll(&gateway, &format!("/v1/streams/{both}/poll?from=earliest&limit=7")).await;
    let mut got = page_data(&page);
    while got.len() < 200 {
        let cursor = cursor_of(&page);
        page = poll(&gateway, &format!("/v1/streams/{both}/poll?cursor={cursor}&limit=7")).await;
        let events = page["events"].as_array().unwrap();
        assert!(!events.is_empty() && events.len() <= 7, "{page}");
        got.extend(page_data(&page));
    }
    assert_exactly(&of(&got, &a), &seq("a", 0..120), 1, "a");
    assert_exactly(&of(&got, &b), &seq("b", 0..80), 2, "b");
    gateway.stop(WAIT).await.unwrap();
}
