//! "Never log a token": `sluice-ingest` as a real process with access control on and its logs
//! at `debug`, served good, bad and refused tokens; then everything it wrote (stdout and
//! stderr) is scanned for any of them.

use std::time::Duration;

use serde_json::json;
use sluice_testkit::auth::{TestKey, TestToken};
use sluice_testkit::process::{free_local_addr, wait_ready, Child, ProcessSignal};
use sluice_testkit::TestKafka;

const STARTUP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_logs_no_token_over_good_bad_and_refused_requests() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("auth-logs");
    kafka.create_topic(&topic, 1).await.unwrap();
    let (listen, admin) = (free_local_addr(), free_local_addr());
    let secret = TestKey::Hmac.verify_file();
    let mut ingest = Child::spawn_capturing_stderr(
        "sluice-ingest",
        &[
            format!("--listen={listen}"),
            format!("--admin-listen={admin}"),
            format!("--kafka-brokers={}", kafka.bootstrap_servers()),
            format!("--jwt-hmac-secret-file={}", secret.display()),
        ],
        &[("SLUICE_ALLOW_ANONYMOUS", "false"), ("SLUICE_LOG", "debug")],
    )
    .unwrap();
    wait_ready(admin, STARTUP).await.unwrap();

    let grant = json!([topic]);
    let tokens = [
        TestToken::new(TestKey::Hmac).publish(grant.clone()).mint(),
        TestToken::new(TestKey::Hmac)
            .publish(grant.clone())
            .expires_in(-60)
            .mint(),
        TestToken::new(TestKey::Hmac).publish(json!(["elsewhere"])).mint(),
        TestToken::new(TestKey::Rsa2).publish(grant.clone()).mint(),
        TestToken::new(TestKey::Hmac)
            .publish(json!([{"stream": topic, "keys": ["mine"]}]))
            .mint(),
        "not.a-real.token-but-secret-looking".to_owned(),
    ];
    let url = format!("http://{listen}/v1/streams/{topic}/events");
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for token in &tokens {
        for body in [r#"{"key":"mine","data":1}"#, r#"{"key":"theirs","data":2}"#, "{broken"] {
            let response = http
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
    }
    // Every path was taken: accepted, unauthenticated, forbidden, bad request.
    for status in [200, 401, 403, 400] {
        assert!(statuses.contains(&status), "no {status} in {statuses:?}");
    }

    ingest.signal(ProcessSignal::SIGTERM).unwrap();
    assert_eq!(ingest.wait(STARTUP).await.unwrap(), Some(0));
    let mut output = ingest.stderr_lines();
    output.extend(ingest.stdout_lines());
    assert!(
        !output.is_empty(),
        "the service logged nothing at debug: the scan would prove nothing"
    );
    for token in &tokens {
        // The signature alone is as secret as the whole token is.
        let signature = token.rsplit('.').next().unwrap();
        for line in &output {
            assert!(!line.contains(token.as_str()), "a log line holds a token: {line}");
            assert!(
                signature.len() < 8 || !line.contains(signature),
                "a log line holds a token's signature: {line}"
            );
        }
    }
}
