//! A gateway process serving many streams at once (issue 12): what each more stream costs it
//! in threads and in connections to the broker. One Kafka client per pod serves every stream,
//! so going from one stream to fifty may add a few threads (a worker's timers, a catch-up
//! reader) but no Kafka client: librdkafka's clients bring a thread per broker and a
//! connection per broker each. Measured from the outside: `/proc/<pid>/status` and the
//! gateway's sockets in `/proc/net/tcp`.

use std::time::Duration;

use sluice_kafka::OutRecord;
use sluice_testkit::process::ServiceProcess;
use sluice_testkit::{eventually, procfs, SseStream, TestKafka};

const WAIT: Duration = Duration::from_secs(60);
const STREAMS: usize = 50;
/// Threads the gateway may add for 49 more streams: none per stream.
const MORE_THREADS: i64 = 8;
/// Broker connections it may add: none per stream.
const MORE_BROKER_CONNECTIONS: i64 = 4;
/// How long the thread count may take to settle: tokio's blocking pool lets an idle thread go
/// after 10 s.
const SETTLE: Duration = Duration::from_secs(30);

/// What one look at the gateway process found.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    threads: i64,
    broker_connections: i64,
}

fn footprint(gateway: &ServiceProcess, broker_ports: &[u16]) -> Footprint {
    let pid = gateway.child.pid().expect("the gateway runs");
    Footprint {
        threads: procfs::threads(pid).expect("the gateway's /proc status") as i64,
        broker_connections: procfs::tcp_connections_to(pid, broker_ports).expect("the gateway's /proc fds") as i64,
    }
}

/// Waits until no catch-up reader runs: each is a Kafka client of its own, bounded apart, and
/// with one record per stream none should be needed.
async fn no_catchup_readers(http: &reqwest::Client, gateway: &ServiceProcess) {
    eventually("the gateway's catch-up readers to finish", WAIT, || async {
        let readers = gateway.metric(http, "sluice_gateway_catchup_readers_active").await?;
        (readers == 0.0).then_some(())
    })
    .await
    .unwrap();
}

/// Opens `/v1/streams/{topic}?from=earliest` and waits for its one event.
async fn open_and_read_first(http: reqwest::Client, url: String) -> SseStream {
    let mut stream = SseStream::connect(&http, &url, None).await.unwrap();
    let event = stream.next_event(WAIT).await.unwrap();
    assert!(event.data.contains("\"n\""), "{url}: unexpected first event {event:?}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_streams_share_one_kafka_client() {
    let kafka = TestKafka::start().await.unwrap();
    let topics: Vec<String> = (0..STREAMS).map(|_| kafka.unique_topic("e2e-streams")).collect();
    for topic in &topics {
        kafka.create_topic(topic, 4).await.unwrap();
    }
    let records: Vec<OutRecord> = topics
        .iter()
        .enumerate()
        .map(|(n, topic)| OutRecord {
            topic: topic.clone(),
            value: format!("{{\"n\":{n}}}").into_bytes(),
            ..OutRecord::default()
        })
        .collect();
    kafka.produce(&records).await.unwrap();
    let broker_ports = procfs::ports_of(kafka.bootstrap_servers());
    assert!(!broker_ports.is_empty(), "no port in {}", kafka.bootstrap_servers());

    let gateway = ServiceProcess::start("sluice-gateway", kafka.bootstrap_servers(), &[], WAIT)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = |topic: &String| format!("http://{}/v1/streams/{topic}?from=earliest", gateway.listen);

    let first = open_and_read_first(http.clone(), url(&topics[0])).await;
    no_catchup_readers(&http, &gateway).await;
    let one = footprint(&gateway, &broker_ports);

    let mut opening = tokio::task::JoinSet::new();
    for topic in &topics[1..] {
        opening.spawn(open_and_read_first(http.clone(), url(topic)));
    }
    let mut open = vec![first];
    while let Some(stream) = opening.join_next().await {
        open.push(stream.unwrap());
    }
    no_catchup_readers(&http, &gateway).await;
    let opened = footprint(&gateway, &broker_ports);
    // Opening streams runs metadata and watermark calls on tokio's blocking pool, whose idle
    // threads leave after 10 s; what stays after that is what the streams cost.
    let settled = eventually("the gateway's threads to settle", SETTLE, || async {
        let now = footprint(&gateway, &broker_ports);
        (now.threads - one.threads <= MORE_THREADS).then_some(now)
    })
    .await
    .unwrap_or_else(|_| footprint(&gateway, &broker_ports));
    let pid = gateway.child.pid().expect("the gateway runs");

    eprintln!(
        "gateway threads: {} with 1 stream, {} just after opening {STREAMS}, {} settled; broker connections: {} \
         with 1 stream, {} with {STREAMS}, {} settled (threads {} → {}, broker connections {} → {})",
        one.threads,
        opened.threads,
        settled.threads,
        one.broker_connections,
        opened.broker_connections,
        settled.broker_connections,
        one.threads,
        settled.threads,
        one.broker_connections,
        settled.broker_connections
    );
    assert!(
        settled.threads - one.threads <= MORE_THREADS,
        "{} more streams added {} threads for good (at most {MORE_THREADS} allowed); by name: {:?}",
        STREAMS - 1,
        settled.threads - one.threads,
        procfs::thread_names(pid)
    );
    assert!(
        opened.broker_connections.max(settled.broker_connections) - one.broker_connections <= MORE_BROKER_CONNECTIONS,
        "{} more streams added {} broker connections (at most {MORE_BROKER_CONNECTIONS} allowed)",
        STREAMS - 1,
        opened.broker_connections.max(settled.broker_connections) - one.broker_connections
    );
    assert_eq!(open.len(), STREAMS);
}
