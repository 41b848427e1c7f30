//! The browser-facing parts in a real browser: Debian's Chromium, headless, driven by
//! `playwright-core` (see `sluice_testkit::browser`).
//!
//! 1. The demo page's own `EventSource` reads a stream through two gateway processes behind a
//!    round-robin proxy with no stickiness. The gateway serving it is killed (SIGKILL); the
//!    browser's automatic reconnect lands on the other one carrying `Last-Event-ID`, and the
//!    page ends up with every published event exactly once, in order.
//! 2. The demo page as `make run` serves it (`sluice-dev --gateways 2`): the sample ticker moves,
//!    "Drop connection" and "Switch gateway" resume without a skipped or repeated tick, the
//!    publish form goes through ingest, and event content is shown as text, never as HTML.
//!    Its screenshot is saved under `target/browser/` (a CI artifact).
//! 3. `examples/browser/index.html` resumes after a reload from the cursor it stored.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_testkit::browser::{workspace_root, Browser};
use sluice_testkit::process::{DevStack, ProcessSignal, ServiceProcess};
use sluice_testkit::proxy::RoundRobinProxy;
use sluice_testkit::TestKafka;

const WAIT: Duration = Duration::from_secs(60);

/// Publishes events `{"seq": i}` for `range`, one key (one partition, so one order), type `test`,
/// through ingest at `ingest` (`http://host:port`).
async fn publish(ingest: &str, stream: &str, range: std::ops::Range<usize>) {
    let events: Vec<Value> = range
        .map(|i| json!({"type": "test", "key": "browser", "data": {"seq": i}}))
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{ingest}/v1/streams/{stream}/events"))
        .header("content-type", "application/json")
        .body(Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "publish failed: {}",
        response.text().await.unwrap()
    );
}

/// The `seq` of every `test` event the page received, in order.
async fn received_seqs(browser: &mut Browser) -> Vec<u64> {
    let seqs = browser
        .eval("window.sluiceDemo.received.filter(e => e.type === 'test').map(e => JSON.parse(e.data).seq)")
        .await
        .unwrap();
    seqs.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

async fn wait_for_test_events(browser: &mut Browser, count: usize) {
    let expr = format!("window.sluiceDemo.received.filter(e => e.type === 'test').length >= {count}");
    browser.wait_for(&expr, WAIT).await.unwrap();
}

fn screenshot_path(name: &str) -> std::path::PathBuf {
    workspace_root().join("target/browser").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_resumes_on_the_other_gateway_after_a_kill_with_every_event_exactly_once() {
    let kafka = TestKafka::start().await.unwrap();
    let topic = kafka.unique_topic("browser");
    kafka.create_topic(&topic, 4).await.unwrap();
    let brokers = kafka.bootstrap_servers().to_owned();
    let ingest = ServiceProcess::start("sluice-ingest", &brokers, &[], WAIT)
        .await
        .unwrap();
    // A short retry: so the browser's own reconnect comes quickly.
    let gateway_flags = ["--demo-page", "--retry=300ms"];
    let mut gateways = vec![
        ServiceProcess::start("sluice-gateway", &brokers, &gateway_flags, WAIT)
            .await
            .unwrap(),
        ServiceProcess::start("sluice-gateway", &brokers, &gateway_flags, WAIT)
            .await
            .unwrap(),
    ];
    let proxy = RoundRobinProxy::start(gateways.iter().map(|g| g.listen).collect())
        .await
        .unwrap();
    let mut browser = Browser::launch().await.unwrap();

    let ingest_url = format!("http://{}", ingest.listen);
    publish(&ingest_url, &topic, 0..25).await;
    let page = format!("http://{}/?stream={topic}&from=earliest&types=test", proxy.addr());
    browser.open(&page).await.unwrap();
    wait_for_test_events(&mut browser, 25).await;

    let stream_path = format!("GET /v1/streams/{topic}?");
    let stream_requests = |proxy: &RoundRobinProxy| -> Vec<_> {
        proxy
            .requests()
            .into_iter()
            .filter(|r| r.request_line.starts_with(&stream_path))
            .collect()
    };
    let first = stream_requests(&proxy);
    assert_eq!(first.len(), 1, "one stream request before the kill: {first:?}");
    assert_eq!(first[0].header("last-event-id"), None);
    let serving = first[0].backend;

    let mut victim = gateways.remove(serving);
    victim.child.signal(ProcessSignal::SIGKILL).unwrap();
    victim.child.wait(WAIT).await.unwrap();
    publish(&ingest_url, &topic, 25..50).await;
    wait_for_test_events(&mut browser, 50).await;

    let requests = stream_requests(&proxy);
    let resumed = requests.last().unwrap();
    assert!(requests.len() >= 2, "the browser reconnected: {requests:?}");
    assert_ne!(resumed.backend, serving, "the reconnect reached the surviving gateway");
    let header = resumed
        .header("last-event-id")
        .expect("the reconnect carried Last-Event-ID");
    let last_before_kill = browser
        .eval("window.sluiceDemo.received.filter(e => e.type === 'test')[24].id")
        .await
        .unwrap();
    assert_eq!(
        Some(header),
        last_before_kill.as_str(),
        "it resumed at the last event seen"
    );

    assert_eq!(received_seqs(&mut browser).await, (0..50).collect::<Vec<u64>>());
    let (duplicates, skips) = (
        browser.eval("window.sluiceDemo.duplicates").await.unwrap(),
        browser.eval("window.sluiceDemo.skips").await.unwrap(),
    );
    assert_eq!((duplicates, skips), (json!(0), json!(0)));
    assert_eq!(browser.page_errors().await.unwrap(), Vec::<String>::new());
    browser
        .screenshot(&screenshot_path("resume-after-kill.png"))
        .await
        .unwrap();
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_moves_resumes_across_drop_and_switch_and_shows_content_as_text() {
    let dev = DevStack::start(2, &["--ticker-interval=50ms"], WAIT).await.unwrap();
    let first = dev.gateways[0].clone();
    let mut browser = Browser::launch().await.unwrap();
    browser.open(&format!("{first}/")).await.unwrap();

    // The ticker moves without anyone publishing.
    let ticks = "window.sluiceDemo.received.filter(e => e.type === 'tick').length";
    browser.wait_for(&format!("{ticks} >= 5"), WAIT).await.unwrap();
    assert_eq!(browser.eval("window.sluiceDemo.connects").await.unwrap(), json!(1));

    // Drop: the page reopens on the same gateway from its cursor; ticks published meanwhile
    // arrive, none twice, none skipped.
    browser.click("#drop").await.unwrap();
    browser
        .wait_for("window.sluiceDemo.connects === 2", WAIT)
        .await
        .unwrap();
    let before = browser.eval(ticks).await.unwrap().as_u64().unwrap();
    browser
        .wait_for(&format!("{ticks} >= {}", before + 5), WAIT)
        .await
        .unwrap();

    // Switch: the same cursor on the other gateway (another origin: CORS in the dev stack).
    browser.click("#switch").await.unwrap();
    browser
        .wait_for("window.sluiceDemo.connects === 3", WAIT)
        .await
        .unwrap();
    assert_eq!(
        browser.eval("window.sluiceDemo.gateway").await.unwrap(),
        json!(dev.gateways[1])
    );
    let before = browser.eval(ticks).await.unwrap().as_u64().unwrap();
    browser
        .wait_for(&format!("{ticks} >= {}", before + 5), WAIT)
        .await
        .unwrap();
    assert_eq!(browser.eval("window.sluiceDemo.duplicates").await.unwrap(), json!(0));
    assert_eq!(browser.eval("window.sluiceDemo.skips").await.unwrap(), json!(0));

    // Publish through the form (ingest is another origin too); markup in the data stays text.
    let markup = r#"<img src=x onerror="window.injected=1"><b>bold</b>"#;
    browser.fill("#pub-type", "note").await.unwrap();
    browser
        .fill("#pub-data", &json!({ "text": markup }).to_string())
        .await
        .unwrap();
    browser.click("#publish button[type=submit]").await.unwrap();
    browser
        .wait_for(
            "document.querySelector('#pub-result').textContent.startsWith('acknowledged')",
            WAIT,
        )
        .await
        .unwrap();
    let note = browser
        .wait_for("window.sluiceDemo.received.find(e => e.type === 'note')", WAIT)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(note["data"].as_str().unwrap()).unwrap()["text"],
        markup
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#events img, #events b').length")
            .await
            .unwrap(),
        json!(0)
    );
    assert_eq!(
        browser.eval("window.injected === undefined").await.unwrap(),
        json!(true)
    );
    assert!(browser
        .eval("document.querySelector('#events').textContent")
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .contains("<b>bold</b>"));
    let cursor = browser
        .eval("document.querySelector('#cursor').textContent")
        .await
        .unwrap();
    assert!(!cursor.as_str().unwrap().is_empty(), "the cursor is shown");

    assert_eq!(browser.page_errors().await.unwrap(), Vec::<String>::new());
    browser.screenshot(&screenshot_path("demo.png")).await.unwrap();
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_example_resumes_after_a_reload_from_its_stored_cursor() {
    let dev = DevStack::start(1, &["--ticker-interval=0"], WAIT).await.unwrap();
    let stream = "browser-example";
    publish(&dev.ingest, stream, 0..5).await;
    let page = workspace_root().join("examples/browser/index.html");
    let url = format!(
        "file://{}?gateway={}&stream={stream}&types=test",
        page.display(),
        dev.gateways[0]
    );
    let mut browser = Browser::launch().await.unwrap();
    let seqs = "window.example.received.filter(e => e.type === 'test').map(e => JSON.parse(e.data).seq)";

    browser.open(&url).await.unwrap();
    browser.wait_for(&format!("{seqs}.length >= 5"), WAIT).await.unwrap();
    assert_eq!(browser.eval(seqs).await.unwrap(), json!([0, 1, 2, 3, 4]));

    // A reload starts a new EventSource: the page resumes from the id it stored, so it shows
    // only what came after — nothing again, nothing skipped.
    browser.open(&url).await.unwrap();
    publish(&dev.ingest, stream, 5..8).await;
    browser.wait_for(&format!("{seqs}.length >= 3"), WAIT).await.unwrap();
    assert_eq!(browser.eval(seqs).await.unwrap(), json!([5, 6, 7]));
    assert_eq!(browser.page_errors().await.unwrap(), Vec::<String>::new());
    browser.quit().await.unwrap();
}
