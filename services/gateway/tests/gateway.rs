//! Service tests: `sluice-gateway` in-process on port 0 against the test kit's Kafka, read with
//! a real HTTP client and the reference SSE parser.

use std::collections::HashMap;
use std::time::Duration;

use sluice_kafka::{KafkaArgs, OutRecord, Producer, ProducerSettings};
use sluice_sse::Cursor;
use sluice_testkit::sse::{Next, SseStream};

mod support;

use support::{data, read_n, Fixture, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_from_earliest_then_tails_live() {
    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    f.publish(&topic, "old", 50, 5).await;
    let gateway = f.gateway(|_| {}).await;
    let mut stream = f
        .open(&gateway, &format!("/v1/streams/{topic}?from=earliest"), None)
        .await;
    let events = read_n(&mut stream, 50).await;
    assert_eq!(data(&events), (0..50).map(|i| format!("old-{i}")).collect::<Vec<_>>());
    assert_eq!(events[1].event_type, "t1");
    assert!(stream.retry_ms().is_some(), "the first frame sets retry:");

    f.publish(&topic, "new", 5, 5).await;
    let live = read_n(&mut stream, 5).await;
    assert_eq!(data(&live), (0..5).map(|i| format!("new-{i}")).collect::<Vec<_>>());
    // Every id is a cursor of this stream: next offset after the event.
    let cursor = Cursor::decode(live[4].id.as_deref().unwrap()).unwrap();
    assert_eq!(cursor.offsets, vec![55]);
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_the_default_and_skips_history() {
    let f = Fixture::start().await;
    let topic = f.topic(2).await;
    f.publish(&topic, "old", 20, 4).await;
    let gateway = f.gateway(|_| {}).await;
    let mut stream = f.open(&gateway, &format!("/v1/streams/{topic}"), None).await;
    f.publish(&topic, "new", 4, 4).await;
    let mut got = data(&read_n(&mut stream, 4).await);
    got.sort();
    assert_eq!(got, vec!["new-0", "new-1", "new-2", "new-3"]);
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_on_another_gateway_exactly_after_the_last_id() {
    let f = Fixture::start().await;
    let topic = f.topic(3).await;
    f.publish(&topic, "e", 300, 17).await;
    let a = f.gateway(|_| {}).await;
    let b = f.gateway(|_| {}).await;
    let mut first = f.open(&a, &format!("/v1/streams/{topic}?from=earliest"), None).await;
    let head = read_n(&mut first, 120).await;
    let last_id = head.last().unwrap().id.clone().unwrap();
    drop(first);

    let mut second = f
        .open(&b, &format!("/v1/streams/{topic}?from=earliest"), Some(&last_id))
        .await;
    let tail = read_n(&mut second, 180).await;
    let mut all = data(&head);
    all.extend(data(&tail));
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 300, "every event exactly once");
    // Per-partition order: events of one key are in publish order.
    let mut last_by_key: HashMap<usize, usize> = HashMap::new();
    for d in &all {
        let i: usize = d.trim_start_matches("e-").parse().unwrap();
        if let Some(prev) = last_by_key.insert(i % 17, i) {
            assert!(i > prev, "key order broken: {prev} then {i}");
        }
    }
    // Nothing more, but the marker that the backlog is done.
    let marker = second.next_event(Duration::from_millis(500)).await.unwrap();
    assert_eq!(marker.event_type, "sluice.caught-up");
    assert!(second.next(Duration::from_millis(300)).await.is_err(), "nothing more");
    a.stop(WAIT).await.unwrap();
    b.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_memory_is_read_from_kafka() {
    let f = Fixture::start().await;
    let topic = f.topic(2).await;
    f.publish(&topic, "e", 400, 8).await;
    // A ring of 50 events: the cursor from the start must come from Kafka, then hand off.
    let gateway = f.gateway(|c| c.ring_events = 50).await;
    let mut stream = f
        .open(&gateway, &format!("/v1/streams/{topic}?from=earliest"), None)
        .await;
    let events = read_n(&mut stream, 400).await;
    let mut got = data(&events);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 400);
    f.publish(&topic, "live", 3, 8).await;
    assert_eq!(read_n(&mut stream, 3).await.len(), 3);
    let metrics = gateway.metrics().await.unwrap();
    assert!(metrics.contains("sluice_gateway_connections_active 1"), "{metrics}");
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_type_filters_deliver_only_matches_and_checkpoint() {
    let f = Fixture::start().await;
    let topic = f.topic(4).await;
    let gateway = f.gateway(|c| c.checkpoint_interval = Duration::from_millis(100)).await;
    let mut keyed = f
        .open(
            &gateway,
            &format!("/v1/streams/{topic}?from=earliest&key=k3&key=k5"),
            None,
        )
        .await;
    let mut typed = f
        .open(&gateway, &format!("/v1/streams/{topic}?from=earliest&type=t1"), None)
        .await;
    f.publish(&topic, "e", 100, 10).await;

    let keyed_events = read_n(&mut keyed, 20).await;
    for e in &keyed_events {
        let i: usize = serde_json::from_str::<String>(&e.data)
            .unwrap()
            .trim_start_matches("e-")
            .parse()
            .unwrap();
        assert!(i % 10 == 3 || i % 10 == 5, "unexpected event {i}");
    }
    let typed_events = read_n(&mut typed, 50).await;
    assert!(typed_events.iter().all(|e| e.event_type == "t1"));

    // Filtered streams get id-only checkpoints once the position moved past filtered-out data.
    // A checkpoint for records skipped among the first 100 may still be on its way; the one that
    // matters covers the record published now as well.
    f.publish(&topic, "skipped", 1, 1).await; // key k0, type t0: neither stream wants it
    let covered = |s: &SseStream| {
        s.last_event_id()
            .and_then(|id| Cursor::decode(&id).ok())
            .map_or(0, |c| c.offsets.iter().sum::<i64>())
    };
    typed
        .read_until(WAIT, |s| covered(s) >= 101)
        .await
        .expect("a checkpoint covering every record");
    assert_eq!(covered(&typed), 101, "the checkpoint covers every record, no more");
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_quiet_stream_alive() {
    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let gateway = f.gateway(|c| c.heartbeat = Duration::from_millis(100)).await;
    let mut stream = f.open(&gateway, &format!("/v1/streams/{topic}"), None).await;
    stream
        .read_until(WAIT, |s| !s.take_comments().is_empty())
        .await
        .unwrap();
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_before_the_stream() {
    let f = Fixture::start().await;
    let topic = f.topic(2).await;
    let other = f.topic(2).await;
    let gateway = f.gateway(|c| c.streams.streams = vec!["gw-*".into()]).await;
    let foreign = Cursor::new(sluice_sse::stream_fingerprint(&other), vec![0, 0]).encode();
    let too_wide = Cursor::new(sluice_sse::stream_fingerprint(&topic), vec![0, 0, 0]).encode();
    let cases = [
        (format!("/v1/streams/{topic}"), Some("garbage!"), 400, "invalid_cursor"),
        (
            format!("/v1/streams/{topic}"),
            Some(foreign.as_str()),
            400,
            "invalid_cursor",
        ),
        (
            format!("/v1/streams/{topic}"),
            Some(too_wide.as_str()),
            400,
            "invalid_query",
        ),
        (
            format!("/v1/streams/{topic}?lastEventId=AAAA"),
            None,
            400,
            "invalid_cursor",
        ),
        (format!("/v1/streams/{topic}?from=middle"), None, 400, "invalid_query"),
        (
            format!("/v1/streams/{topic}?since=yesterday"),
            None,
            400,
            "invalid_query",
        ),
        ("/v1/streams/not-allowed".to_owned(), None, 404, "unknown_stream"),
        ("/v1/streams/bad%20name".to_owned(), None, 400, "invalid_stream_name"),
    ];
    for (path, id, status, code) in cases {
        let mut request = f.http.get(gateway.url(&path));
        if let Some(id) = id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} {id:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path} {id:?}: {body}");
    }
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_with_503_at_the_connection_limit() {
    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let gateway = f.gateway(|c| c.max_connections = 2).await;
    let _one = f.open(&gateway, &format!("/v1/streams/{topic}"), None).await;
    let _two = f.open(&gateway, &format!("/v1/streams/{topic}"), None).await;
    let response = f
        .http
        .get(gateway.url(&format!("/v1/streams/{topic}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_slow_another_and_is_closed() {
    use tokio::io::AsyncWriteExt;

    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let gateway = f.gateway(|c| c.write_timeout = Duration::from_millis(500)).await;
    // A raw client that sends its request and never reads a byte.
    let mut stuck = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!("GET /v1/streams/{topic} HTTP/1.1\r\nHost: x\r\n\r\n");
    stuck.write_all(request.as_bytes()).await.unwrap();
    let mut reader = f.open(&gateway, &format!("/v1/streams/{topic}"), None).await;
    gateway
        .wait_for_metric("sluice_gateway_connections_active 2", WAIT)
        .await
        .unwrap();

    // ~20 MB: far more than the socket buffers of the stuck client can absorb.
    let big = "x".repeat(10_000);
    for batch in 0..20 {
        let mut pending = Vec::new();
        for i in 0..100 {
            let record = OutRecord {
                topic: topic.clone(),
                value: format!("\"{batch}-{i}-{big}\"").into_bytes(),
                ..OutRecord::default()
            };
            pending.push(f.producer.enqueue(&record).unwrap());
        }
        for p in pending {
            p.acknowledged().await.unwrap();
        }
    }
    let got = read_n(&mut reader, 2000).await;
    assert_eq!(got.len(), 2000);
    // The stuck connection is closed by the write timeout.
    gateway
        .wait_for_metric("sluice_gateway_disconnects_total{reason=\"write_timeout\"} 1", WAIT)
        .await
        .unwrap();
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_gap_is_announced_then_the_stream_continues_from_earliest() {
    let f = Fixture::start().await;
    if !f.kafka.supports_fault_injection() {
        eprintln!("skipped: needs the embedded broker's small retention (a real broker keeps the data)");
        return;
    }
    let topic = f.topic(1).await;
    // The embedded broker keeps about 5 MiB per partition: 8 MB (uncompressed, so they count
    // in full) pushes the start forward.
    let settings = ProducerSettings {
        compression: "none".into(),
        ..ProducerSettings::default()
    };
    let producer = Producer::new(&KafkaArgs::new(f.kafka.bootstrap_servers()), settings).unwrap();
    let big = "y".repeat(100_000);
    for i in 0..80 {
        let record = OutRecord {
            topic: topic.clone(),
            value: format!("\"{i}-{big}\"").into_bytes(),
            ..OutRecord::default()
        };
        producer.send(&record).await.unwrap();
    }
    let gateway = f.gateway(|c| c.ring_events = 10).await;
    let from_zero = Cursor::new(sluice_sse::stream_fingerprint(&topic), vec![0]).encode();
    let mut stream = f
        .open(&gateway, &format!("/v1/streams/{topic}"), Some(&from_zero))
        .await;
    let gap = stream.next_event(WAIT).await.unwrap();
    assert_eq!(gap.event_type, "gap");
    let body: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    let low = body["partitions"][0]["to"].as_i64().unwrap();
    assert!(low > 0, "{body}");
    assert_eq!(body["partitions"][0]["lost"].as_i64().unwrap(), low);
    let first = stream.next_event(WAIT).await.unwrap();
    assert!(serde_json::from_str::<String>(&first.data)
        .unwrap()
        .starts_with(&format!("{low}-")));
    let remaining = 80 - low as usize - 1;
    assert_eq!(read_n(&mut stream, remaining).await.len(), remaining);
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_streams_with_a_retry_and_refuses_new_ones() {
    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let gateway = f.gateway(|c| c.drain_window = Duration::from_millis(300)).await;
    let mut stream = f.open(&gateway, &format!("/v1/streams/{topic}"), None).await;
    gateway.begin_shutdown();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Next::Ended) = stream.next(WAIT).await {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends within the drain window");
    assert!(stream.retry_ms().is_some());
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_counts_as_gone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let gateway = f.gateway(|_| {}).await;
    let mut socket = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!("GET /v1/streams/{topic} HTTP/1.1\r\nHost: x\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = socket.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(gateway
        .metrics()
        .await
        .unwrap()
        .contains("sluice_gateway_connections_active 1"));
    socket.shutdown().await.unwrap(); // FIN: the client will send nothing more
    gateway
        .wait_for_metric("sluice_gateway_connections_active 0", WAIT)
        .await
        .unwrap();
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_end_at_their_maximum_lifetime_with_a_retry() {
    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let gateway = f
        .gateway(|c| c.max_connection_lifetime = Duration::from_millis(300))
        .await;
    let mut stream = f.open(&gateway, &format!("/v1/streams/{topic}"), None).await;
    loop {
        if let Next::Ended = stream.next(WAIT).await.unwrap() {
            break;
        }
    }
    assert!(stream.retry_ms().is_some(), "the closing frame says when to come back");
    let metrics = gateway.metrics().await.unwrap();
    assert!(
        metrics.contains("sluice_gateway_disconnects_total{reason=\"lifetime\"} 1"),
        "{metrics}"
    );
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_other_producers_follow_the_documented_mapping() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let f = Fixture::start().await;
    let topic = f.topic(1).await;
    let foreign: FutureProducer = f.kafka.client_config().create().unwrap();
    let timeout = rdkafka::util::Timeout::After(WAIT);
    // No headers, plain text with a line break; bytes that are not UTF-8; a tombstone.
    foreign
        .send(
            FutureRecord::<[u8], [u8]>::to(&topic).payload(b"line one\nline two"),
            timeout,
        )
        .await
        .unwrap();
    foreign
        .send(
            FutureRecord::<[u8], [u8]>::to(&topic).payload(&[0xff, 0xfe, 0x00]),
            timeout,
        )
        .await
        .unwrap();
    foreign
        .send(FutureRecord::<[u8], [u8]>::to(&topic).key(b"user-9"), timeout)
        .await
        .unwrap();

    let gateway = f.gateway(|_| {}).await;
    let mut stream = f
        .open(&gateway, &format!("/v1/streams/{topic}?from=earliest"), None)
        .await;
    let events = read_n(&mut stream, 3).await;
    assert_eq!(
        (events[0].event_type.as_str(), events[0].data.as_str()),
        ("message", "line one\nline two")
    );
    assert_eq!(events[1].event_type, "sluice.binary");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&events[1].data).unwrap()["base64"],
        "//4A"
    );
    assert_eq!(events[2].event_type, "sluice.tombstone");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&events[2].data).unwrap()["key"],
        "user-9"
    );
    gateway.stop(WAIT).await.unwrap();
}

/// `since` needs Kafka's offsets-by-timestamp, which the embedded broker cannot answer: this
/// runs against a real broker (`SLUICE_TEST_KAFKA_BROKERS`) and says so otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_starts_at_the_first_record_at_or_after_the_time() {
    let f = Fixture::start().await;
    if f.kafka.supports_fault_injection() {
        eprintln!("skipped: the embedded broker cannot look up offsets by timestamp; set SLUICE_TEST_KAFKA_BROKERS");
        return;
    }
    let topic = f.topic(1).await;
    for (i, ts) in [1_000_000_i64, 2_000_000, 3_000_000].into_iter().enumerate() {
        let record = OutRecord {
            topic: topic.clone(),
            value: format!("\"e-{i}\"").into_bytes(),
            timestamp_ms: Some(ts),
            ..OutRecord::default()
        };
        f.producer.send(&record).await.unwrap();
    }
    let gateway = f.gateway(|_| {}).await;
    let mut stream = f
        .open(&gateway, &format!("/v1/streams/{topic}?since=1500000"), None)
        .await;
    assert_eq!(data(&read_n(&mut stream, 2).await), vec!["e-1", "e-2"]);
    let mut rfc = f
        .open(
            &gateway,
            &format!("/v1/streams/{topic}?since=1970-01-01T00:50:00Z"),
            None,
        )
        .await;
    assert_eq!(data(&read_n(&mut rfc, 1).await), vec!["e-2"]);
    gateway.stop(WAIT).await.unwrap();
}

/// A reader that falls behind a small ring continues from Kafka and comes back to memory; every
/// id it was given along the way still resumes exactly after its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_the_ring_continues_and_its_ids_stay_exact() {
    let f = Fixture::start().await;
    let topic = f.topic(3).await;
    let gateway = f.gateway(|c| c.ring_events = 20).await;
    let mut stream = f.open(&gateway, &format!("/v1/streams/{topic}"), None).await;
    f.publish(&topic, "warm", 1, 5).await;
    let mut events = read_n(&mut stream, 1).await;
    // Not reading while 3000 events (~1 MB of frames) go by: far past the ring and buffers.
    let payload = "p".repeat(300);
    f.publish(&topic, &format!("e-{payload}"), 3000, 5).await;
    // More keep coming while it catches up, so it returns to a ring that has moved on.
    let producer = f.producer.clone();
    let more_topic = topic.clone();
    let more = tokio::spawn(async move {
        for batch in 0..30 {
            for i in 0..100 {
                let record = OutRecord {
                    topic: more_topic.clone(),
                    key: Some(format!("k{}", i % 5).into_bytes()),
                    value: format!("\"more-{batch}-{i}\"").into_bytes(),
                    ..OutRecord::default()
                };
                producer.send(&record).await.unwrap();
            }
        }
    });
    events.extend(read_n(&mut stream, 6000).await);
    more.await.unwrap();
    let mut seen: Vec<String> = data(&events);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6001, "no loss, no duplicate");
    let metrics = gateway.metrics().await.unwrap();
    assert!(metrics.contains("sluice_gateway_catchup_readers_active 0"), "{metrics}");
    assert!(
        !metrics.contains("sluice_gateway_resumes_total{source=\"kafka\""),
        "no client resumed: {metrics}"
    );
    // Each id is the previous one advanced in exactly one partition by exactly one record.
    let cursors: Vec<Cursor> = events
        .iter()
        .map(|e| Cursor::decode(e.id.as_deref().unwrap()).unwrap())
        .collect();
    for (i, pair) in cursors.windows(2).enumerate() {
        let steps: Vec<i64> = pair[1]
            .offsets
            .iter()
            .zip(&pair[0].offsets)
            .map(|(b, a)| b - a)
            .collect();
        assert!(
            steps.iter().all(|&d| d >= 0) && steps.iter().sum::<i64>() == 1,
            "ids {i}→{}: {steps:?}",
            i + 1
        );
    }
    // Resume from ids taken all along the way: each gives exactly the events after it.
    for k in [0, 1, 1500, 3100, 5999] {
        let id = events[k].id.clone().unwrap();
        let mut resumed = f.open(&gateway, &format!("/v1/streams/{topic}"), Some(&id)).await;
        let rest = read_n(&mut resumed, 6000 - k).await;
        let mut expected: Vec<String> = data(&events[k + 1..]);
        let mut got = data(&rest);
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "resume after event {k}");
    }
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_consumer_lag_per_partition() {
    let f = Fixture::start().await;
    let topic = f.topic(2).await;
    f.publish(&topic, "e", 10, 2).await;
    let gateway = f
        .gateway(|c| c.consumer_lag_interval = Duration::from_millis(100))
        .await;
    let mut stream = f
        .open(&gateway, &format!("/v1/streams/{topic}?from=earliest"), None)
        .await;
    read_n(&mut stream, 10).await;
    for partition in 0..2 {
        let sample = format!("sluice_gateway_consumer_lag{{stream=\"{topic}\",partition=\"{partition}\"}} 0");
        gateway.wait_for_metric(&sample, WAIT).await.unwrap();
    }
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_cors_headers_on_streams_and_preflights() {
    let fx = Fixture::start().await;
    let topic = fx.topic(1).await;
    let gateway = fx
        .gateway(|c| c.cors.allow_origins = vec!["http://app.test".into()])
        .await;
    let url = gateway.url(&format!("/v1/streams/{topic}?from=earliest"));
    let allowed = fx
        .http
        .get(&url)
        .header("origin", "http://app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "http://app.test");
    assert_eq!(allowed.headers()["content-type"], "text/event-stream");
    drop(allowed);

    let other = fx
        .http
        .get(&url)
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    drop(other);

    // An EventSource resuming cross-origin may be preflighted for Last-Event-ID.
    let preflight = fx
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://app.test")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-headers"], "last-event-id");

    // Errors carry the header too, so a page can read why it was refused.
    let bad = fx
        .http
        .get(gateway.url(&format!("/v1/streams/{topic}?from=sometime")))
        .header("origin", "http://app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["access-control-allow-origin"], "http://app.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_is_served_only_when_enabled() {
    let fx = Fixture::start().await;
    let plain = fx.gateway(|_| {}).await;
    let response = fx.http.get(plain.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 404, "a production gateway serves only the API");

    let demo = fx
        .gateway(|c| {
            c.demo_page = true;
            c.demo.stream = "orders".into();
        })
        .await;
    let response = fx.http.get(demo.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"const INJECTED = {"stream":"orders""#),
        "settings injected"
    );
}
