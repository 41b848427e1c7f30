//! `sluice-ingest` and `sluice-dev` as real processes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_kafka::headers;
use sluice_testkit::process::{binary, free_local_addr, wait_ready, Child, ProcessSignal, ServiceProcess};
use sluice_testkit::TestKafka;

const STARTUP: Duration = Duration::from_secs(30);

fn positions(reply: &Value) -> Vec<(i32, i64)> {
    reply["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["partition"].as_i64().unwrap() as i32, e["offset"].as_i64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_keeps_every_acknowledged_event_and_exits_zero() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("e2e-sigterm");
    kafka.create_topic(&topic, 4).await.unwrap();
    let service = ServiceProcess::start("sluice-ingest", kafka.bootstrap_servers(), &[], STARTUP)
        .await
        .unwrap();
    let (mut ingest, listen) = (service.child, service.listen);

    let url = format!("http://{listen}/v1/streams/{topic}/events");
    let acked = Arc::new(Mutex::new(Vec::<((i32, i64), String)>::new()));
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for client in 0..24 {
        let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let data: Vec<String> = (0..10).map(|i| format!("c{client}-r{n}-e{i}")).collect();
                let body: Vec<Value> = data.iter().map(|d| json!({"key": d, "data": d})).collect();
                let sent = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(Value::Array(body).to_string())
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                if response.status() == 200 {
                    if let Ok(reply) = response.json::<Value>().await {
                        acked.lock().unwrap().extend(positions(&reply).into_iter().zip(data));
                    }
                }
            }
        }));
    }
    sluice_testkit::eventually("a burst of acknowledged events", STARTUP, || {
        let n = acked.lock().unwrap().len();
        async move { (n >= 1000).then_some(()) }
    })
    .await
    .unwrap();

    ingest.signal(ProcessSignal::SIGTERM).unwrap();
    let code = ingest.wait(Duration::from_secs(60)).await.unwrap();
    assert_eq!(code, Some(0), "sluice-ingest exits 0 after a drain");
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .unwrap()
            .unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1000);
    let records = kafka
        .read_records(&topic, acked.len(), Duration::from_secs(60))
        .await
        .unwrap();
    let present: HashSet<((i32, i64), String)> = records
        .iter()
        .map(|r| {
            (
                (r.partition, r.offset),
                serde_json::from_slice(r.value.as_deref().unwrap()).unwrap(),
            )
        })
        .collect();
    let missing: Vec<_> = acked.iter().filter(|e| !present.contains(e)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

#[test]
fn invalid_configuration_exits_64_with_one_line_naming_the_problem() {
    let cases: [(&str, &[&str], &str); 10] = [
        ("sluice-ingest", &[], "--kafka-brokers"),
        (
            "sluice-ingest",
            &["--kafka-brokers=k:9092", "--kafka-config=acks=1"],
            "acks=…",
        ),
        (
            "sluice-ingest",
            &["--kafka-brokers=k:9092", "--kafka-config=no.such.thing=1"],
            "no.such.thing",
        ),
        (
            "sluice-ingest",
            &["--kafka-brokers=k:9092", "--max-body-bytes=0"],
            "--max-body-bytes",
        ),
        (
            "sluice-ingest",
            &["--kafka-brokers=k:9092", "--listen=nowhere"],
            "--listen",
        ),
        ("sluice-dev", &["--no-such-flag"], "--no-such-flag"),
        (
            "sluice-ingest",
            &["--kafka-brokers=k:9092", "--kafka-config=linger.ms=1"],
            "--linger",
        ),
        (
            "sluice-gateway",
            &["--kafka-brokers=k:9092", "--kafka-config=group.id=g"],
            "group.id",
        ),
        (
            "sluice-gateway",
            &["--kafka-brokers=k:9092", "--ring-events=0"],
            "--ring-events",
        ),
        // librdkafka refuses this only when the client is created, after the listeners are up.
        (
            "sluice-ingest",
            &[
                "--kafka-brokers=127.0.0.1:9",
                "--listen=127.0.0.1:0",
                "--admin-listen=127.0.0.1:0",
                "--kafka-config=security.protocol=SASL_PLAINTEXT",
                "--kafka-config=sasl.mechanism=GSSAPI",
            ],
            "GSSAPI",
        ),
    ];
    for (bin, args, needle) in cases {
        let output = std::process::Command::new(binary(bin))
            .args(args)
            .env_remove("SLUICE_KAFKA_BROKERS")
            .env("SLUICE_ALLOW_ANONYMOUS", "true")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{bin} {args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{bin} {args:?}: one line, got {stderr:?}"
        );
        assert!(
            stderr.contains(needle),
            "{bin} {args:?}: {stderr:?} should name {needle}"
        );
    }
}

#[test]
fn a_service_without_a_token_key_or_allow_anonymous_exits_64_naming_the_flags() {
    let output = std::process::Command::new(binary("sluice-ingest"))
        .args(["--kafka-brokers=k:9092"])
        .env_remove("SLUICE_ALLOW_ANONYMOUS")
        .env_remove("SLUICE_JWT_HMAC_SECRET_FILE")
        .env_remove("SLUICE_JWT_PUBLIC_KEY_FILE")
        .env_remove("SLUICE_JWKS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    for flag in [
        "--jwt-hmac-secret-file",
        "--jwt-public-key-file",
        "--jwks-url",
        "--allow-anonymous",
    ] {
        assert!(stderr.contains(flag), "{stderr:?} should name {flag}");
    }
}

#[test]
fn help_documents_every_flag_with_its_environment_twin() {
    let expectations: [(&str, &[(&str, &str)]); 2] = [
        (
            "sluice-ingest",
            &[
                ("--listen", "SLUICE_LISTEN"),
                ("--admin-listen", "SLUICE_ADMIN_LISTEN"),
                ("--kafka-brokers", "SLUICE_KAFKA_BROKERS"),
                ("--kafka-config", "SLUICE_KAFKA_CONFIG"),
                ("--topic-prefix", "SLUICE_TOPIC_PREFIX"),
                ("--streams", "SLUICE_STREAMS"),
                ("--max-body-bytes", "SLUICE_MAX_BODY_BYTES"),
                ("--produce-timeout", "SLUICE_PRODUCE_TIMEOUT"),
            ],
        ),
        (
            "sluice-gateway",
            &[
                ("--listen", "SLUICE_LISTEN"),
                ("--kafka-brokers", "SLUICE_KAFKA_BROKERS"),
                ("--streams", "SLUICE_STREAMS"),
                ("--max-connections", "SLUICE_MAX_CONNECTIONS"),
                ("--heartbeat", "SLUICE_HEARTBEAT"),
                ("--drain-window", "SLUICE_DRAIN_WINDOW"),
                ("--max-connection-lifetime", "SLUICE_MAX_CONNECTION_LIFETIME"),
            ],
        ),
    ];
    for (bin, flags) in expectations {
        let output = std::process::Command::new(binary(bin)).arg("--help").output().unwrap();
        assert_eq!(output.status.code(), Some(0));
        let help = String::from_utf8_lossy(&output.stdout);
        for (flag, env) in flags {
            assert!(
                help.contains(flag) && help.contains(&format!("env: {env}")),
                "{bin}: {flag} / {env} in:\n{help}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_dev_runs_broker_and_ingest_and_lets_other_processes_join() {
    let (ingest, admin) = (free_local_addr(), free_local_addr());
    let (gateway, gateway_admin) = (free_local_addr(), free_local_addr());
    let dev = Child::spawn(
        "sluice-dev",
        &[
            format!("--ingest-listen={ingest}"),
            format!("--ingest-admin-listen={admin}"),
            format!("--gateway-listen={gateway}"),
            format!("--gateway-admin-listen={gateway_admin}"),
        ],
        &[],
    )
    .unwrap();
    let bootstrap = dev.wait_for_line("KAFKA_BOOTSTRAP=", STARTUP).await.unwrap();
    assert_eq!(
        dev.wait_for_line("INGEST_URL=", STARTUP).await.unwrap(),
        format!("http://{ingest}")
    );
    wait_ready(admin, STARTUP).await.unwrap();

    let http = reqwest::Client::new();
    let response = http
        .post(format!("http://{ingest}/v1/streams/demo/events"))
        .header("content-type", "application/json")
        .body(r#"{"type":"greeting","key":"user-1","data":{"hello":"world"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Another process (this test) reads it through the printed bootstrap address.
    let records = read_from(&bootstrap, "demo", 1).await;
    assert_eq!(records[0].value.as_deref(), Some(&br#"{"hello":"world"}"#[..]));
    assert_eq!(records[0].header(headers::EVENT_TYPE), Some("greeting"));

    // And the dev stack's gateway streams it.
    assert_eq!(
        dev.wait_for_line("GATEWAY_URL=", STARTUP).await.unwrap(),
        format!("http://{gateway}")
    );
    wait_ready(gateway_admin, STARTUP).await.unwrap();
    let url = format!("http://{gateway}/v1/streams/demo?from=earliest");
    let mut stream = sluice_testkit::SseStream::connect(&http, &url, None).await.unwrap();
    let event = stream.next_event(STARTUP).await.unwrap();
    assert_eq!(
        (event.event_type.as_str(), event.data.as_str()),
        ("greeting", r#"{"hello":"world"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_dev_broker_only_serves_a_separate_ingest() {
    let broker = Child::spawn(
        "sluice-dev",
        &["--broker-only".to_owned(), "--topics=joined".to_owned()],
        &[],
    )
    .unwrap();
    let bootstrap = broker.wait_for_line("KAFKA_BOOTSTRAP=", STARTUP).await.unwrap();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let _ingest = Child::spawn(
        "sluice-ingest",
        &[
            format!("--listen={listen}"),
            format!("--admin-listen={admin}"),
            format!("--kafka-brokers={bootstrap}"),
        ],
        &[],
    )
    .unwrap();
    wait_ready(admin, STARTUP).await.unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{listen}/v1/streams/joined/events"))
        .header("content-type", "application/x-ndjson")
        .body("{\"data\":1}\n{\"data\":2}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let records = read_from(&bootstrap, "joined", 2).await;
    let values: HashSet<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, HashSet::from([b"1".to_vec(), b"2".to_vec()]));
}

async fn read_from(bootstrap: &str, topic: &str, n: usize) -> Vec<sluice_testkit::ReadRecord> {
    let kafka = sluice_testkit::kafka::TestKafka::external(bootstrap);
    kafka.read_records(topic, n, Duration::from_secs(30)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_a_drain_exits_at_once() {
    use tokio::io::AsyncWriteExt;

    let kafka = TestKafka::start().await.unwrap();
    let service = ServiceProcess::start("sluice-ingest", kafka.bootstrap_servers(), &[], STARTUP)
        .await
        .unwrap();
    let (mut ingest, listen, admin) = (service.child, service.listen, service.admin);
    // A request whose body never completes keeps the drain waiting (for --shutdown-timeout).
    let mut socket = tokio::net::TcpStream::connect(listen).await.unwrap();
    let head = "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    socket.write_all(head.as_bytes()).await.unwrap();
    let http = reqwest::Client::new();
    sluice_testkit::eventually("the request to be in flight", STARTUP, || async {
        let m = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("sluice_ingest_requests_in_flight 1").then_some(())
    })
    .await
    .unwrap();
    ingest.signal(ProcessSignal::SIGTERM).unwrap();
    sluice_testkit::eventually("readiness to fail", STARTUP, || async {
        let status = http.get(format!("http://{admin}/readyz")).send().await.ok()?.status();
        (status == 503).then_some(())
    })
    .await
    .unwrap();
    ingest.signal(ProcessSignal::SIGTERM).unwrap();
    assert_eq!(ingest.wait(Duration::from_secs(10)).await.unwrap(), Some(1));
}
