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
//! 4. Several streams in one connection: a plain `EventSource` on `/v1/streams/a,b` gets events
//!    named `a:created` and `b:paid`, in order per stream, each id one v2 cursor over both; after
//!    the serving gateway is killed, its reconnect (`Last-Event-ID`) and then a new `EventSource`
//!    (`?lastEventId=`) continue exactly. The demo page follows two streams, shows both, and
//!    resumes across "Switch gateway".
//! 5. Access control: a page gets a token as a cookie from a tiny token endpoint the test
//!    serves on two origins. Its `EventSource` (`withCredentials`) streams from the origin in
//!    `--allow-origins` and is refused by the gateway (403, counted) from the other. A token that
//!    expires while the page streams ends the stream with `sluice.reauth`; the page fetches a new
//!    token and resumes with `lastEventId`, missing nothing published meanwhile.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_sse::{Cursor, MultiCursor};
use sluice_testkit::auth::{TestKey, TestToken};
use sluice_testkit::browser::{workspace_root, Browser};
use sluice_testkit::process::{free_local_addr, wait_ready, Child, DevStack, ProcessSignal, ServiceProcess};
use sluice_testkit::proxy::RoundRobinProxy;
use sluice_testkit::TestKafka;

const WAIT: Duration = Duration::from_secs(60);

/// Publishes events `{"seq": i}` for `range`, one key (one partition, so one order), type `test`,
/// through ingest at `ingest` (`http://host:port`).
async fn publish(ingest: &str, stream: &str, range: std::ops::Range<usize>) {
    publish_typed(ingest, stream, "test", range).await;
}

/// [`publish`] with events of type `kind`.
async fn publish_typed(ingest: &str, stream: &str, kind: &str, range: std::ops::Range<usize>) {
    let events: Vec<Value> = range
        .map(|i| json!({"type": kind, "key": "browser", "data": {"seq": i}}))
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

/// The page of the several-streams test, served by [`PageSite`]: one `EventSource` on
/// `gateway`/v1/streams/`streams`, listening for each name in `listen` (`a:created,b:paid`) and
/// for `sluice.caught-up`, keeping the last id it saw; `reopen(id)` replaces it with a new
/// `EventSource` that resumes with `?lastEventId=`.
const STREAMS_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>sluice streams</title><script>
const params = new URLSearchParams(location.search);
const multi = window.multi = { received: [], unnamed: 0, caughtUp: 0, lastId: null, source: null };
function open(query) {
  const es = new EventSource(`${params.get("gateway")}/v1/streams/${params.get("streams")}?${query}`);
  for (const name of params.get("listen").split(",")) {
    es.addEventListener(name, (e) => {
      multi.received.push({ name, id: e.lastEventId, seq: JSON.parse(e.data).seq });
      multi.lastId = e.lastEventId;
    });
  }
  es.addEventListener("sluice.caught-up", (e) => { multi.caughtUp += 1; multi.lastId = e.lastEventId; });
  es.onmessage = () => { multi.unnamed += 1; };
  multi.source = es;
}
window.reopen = (lastId) => { multi.source.close(); open(`lastEventId=${encodeURIComponent(lastId)}`); };
open("from=earliest");
</script>"#;

/// A test's web page on a loopback origin of its own, at `/`.
struct PageSite {
    origin: String,
    handle: actix_web::dev::ServerHandle,
}

impl PageSite {
    fn start(page: &'static str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().route(
                "/",
                actix_web::web::get()
                    .to(move || async move { actix_web::HttpResponse::Ok().content_type("text/html").body(page) }),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { origin, handle }
    }
}

/// The `seq` of each entry of `entries`, an expression for an array of received events (the
/// test page's `{seq}`, or the demo page's `{data}`), in order.
async fn seqs_where(browser: &mut Browser, entries: &str) -> Vec<u64> {
    let seqs = browser
        .eval(&format!("{entries}.map(e => e.seq ?? JSON.parse(e.data).seq)"))
        .await
        .unwrap();
    seqs.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

/// Asserts `id` is a v2 cursor (one v1 cannot be) covering `streams` streams.
fn assert_v2_cursor(id: &Value, streams: usize) {
    let id = id.as_str().expect("an id");
    assert!(Cursor::decode(id).is_err(), "{id} is not a one-stream (v1) cursor");
    let cursor = MultiCursor::decode(id).unwrap_or_else(|e| panic!("{id} is no cursor: {e}"));
    assert_eq!(cursor.streams().len(), streams, "{id} covers every stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_source_on_two_streams_gets_both_in_order_with_v2_ids_and_resumes_exactly() {
    let kafka = TestKafka::start().await.unwrap();
    let (orders, payments) = (kafka.unique_topic("orders"), kafka.unique_topic("payments"));
    kafka.create_topic(&orders, 4).await.unwrap();
    kafka.create_topic(&payments, 2).await.unwrap();
    let brokers = kafka.bootstrap_servers().to_owned();
    let ingest = ServiceProcess::start("sluice-ingest", &brokers, &[], WAIT)
        .await
        .unwrap();
    // The test page is on another origin; a short retry so the browser's reconnect comes quickly.
    let gateway_flags = ["--retry=300ms", "--allow-origins=*"];
    let mut gateways = Vec::new();
    for _ in 0..2 {
        gateways.push(
            ServiceProcess::start("sluice-gateway", &brokers, &gateway_flags, WAIT)
                .await
                .unwrap(),
        );
    }
    let proxy = RoundRobinProxy::start(gateways.iter().map(|g| g.listen).collect())
        .await
        .unwrap();
    let site = PageSite::start(STREAMS_PAGE);
    let ingest_url = format!("http://{}", ingest.listen);
    let publish_both = |range: std::ops::Range<usize>| {
        let (ingest_url, orders, payments) = (ingest_url.clone(), orders.clone(), payments.clone());
        async move {
            publish_typed(&ingest_url, &orders, "created", range.clone()).await;
            publish_typed(&ingest_url, &payments, "paid", range).await;
        }
    };
    let (created, paid) = (format!("{orders}:created"), format!("{payments}:paid"));
    let seqs_of = |name: &str| format!("window.multi.received.filter(e => e.name === '{name}')");
    let mut browser = Browser::launch().await.unwrap();

    publish_both(0..10).await;
    let page = format!(
        "{}/?gateway=http://{}&streams={orders},{payments}&listen={created},{paid}",
        site.origin,
        proxy.addr()
    );
    browser.open(&page).await.unwrap();
    browser
        .wait_for(
            "window.multi.received.length >= 20 && window.multi.caughtUp === 1",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        seqs_where(&mut browser, &seqs_of(&created)).await,
        (0..10).collect::<Vec<u64>>()
    );
    assert_eq!(
        seqs_where(&mut browser, &seqs_of(&paid)).await,
        (0..10).collect::<Vec<u64>>()
    );
    assert_eq!(
        browser.eval("window.multi.unnamed").await.unwrap(),
        json!(0),
        "no event came unnamed (as `message`)"
    );
    let ids = browser.eval("window.multi.received.map(e => e.id)").await.unwrap();
    for id in ids.as_array().unwrap() {
        assert_v2_cursor(id, 2);
    }

    // Kill the serving gateway: the browser reconnects by itself, through the proxy to the
    // other one, with the last id it saw.
    let stream_path = format!("GET /v1/streams/{orders},{payments}?");
    let stream_requests = |proxy: &RoundRobinProxy| -> Vec<_> {
        proxy
            .requests()
            .into_iter()
            .filter(|r| r.request_line.starts_with(&stream_path))
            .collect()
    };
    let first = stream_requests(&proxy);
    assert_eq!(first.len(), 1, "one stream request before the kill: {first:?}");
    let serving = first[0].backend;
    let last_before_kill = browser.eval("window.multi.lastId").await.unwrap();
    let mut victim = gateways.remove(serving);
    victim.child.signal(ProcessSignal::SIGKILL).unwrap();
    victim.child.wait(WAIT).await.unwrap();
    publish_both(10..20).await;
    browser
        .wait_for("window.multi.received.length >= 40", WAIT)
        .await
        .unwrap();
    let requests = stream_requests(&proxy);
    let resumed = requests.last().unwrap();
    assert_ne!(resumed.backend, serving, "the reconnect reached the surviving gateway");
    assert_eq!(
        resumed.header("last-event-id"),
        last_before_kill.as_str(),
        "it resumed at the last id seen"
    );
    assert_eq!(
        seqs_where(&mut browser, &seqs_of(&created)).await,
        (0..20).collect::<Vec<u64>>()
    );
    assert_eq!(
        seqs_where(&mut browser, &seqs_of(&paid)).await,
        (0..20).collect::<Vec<u64>>()
    );

    // A new EventSource (as after a reload) resumes by query parameter from the id of the last
    // event handled, as a page storing it in its handler would: each event's own id must be
    // exactly the position after it (a `sluice.caught-up` id would hide one that is not).
    let last = browser.eval("window.multi.received.at(-1).id").await.unwrap();
    assert_v2_cursor(&last, 2);
    browser.eval(&format!("window.reopen({last})")).await.unwrap();
    publish_both(20..25).await;
    browser
        .wait_for("window.multi.received.length >= 50", WAIT)
        .await
        .unwrap();
    let reopened = stream_requests(&proxy).pop().unwrap();
    assert!(
        reopened.request_line.contains("lastEventId="),
        "the new EventSource resumed by query: {reopened:?}"
    );
    assert_eq!(
        seqs_where(&mut browser, &seqs_of(&created)).await,
        (0..25).collect::<Vec<u64>>()
    );
    assert_eq!(
        seqs_where(&mut browser, &seqs_of(&paid)).await,
        (0..25).collect::<Vec<u64>>()
    );
    assert_eq!(browser.page_errors().await.unwrap(), Vec::<String>::new());
    browser.quit().await.unwrap();
    site.handle.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_follows_two_streams_in_one_connection_and_resumes_on_the_other_gateway() {
    let dev = DevStack::start(2, &["--ticker-interval=0"], WAIT).await.unwrap();
    publish_typed(&dev.ingest, "orders", "created", 0..5).await;
    publish_typed(&dev.ingest, "payments", "paid", 0..5).await;
    let mut browser = Browser::launch().await.unwrap();
    let of_stream = |stream: &str| format!("window.sluiceDemo.received.filter(e => e.stream === '{stream}')");
    let (orders, payments) = (of_stream("orders"), of_stream("payments"));
    let reach = |o: usize, p: usize| format!("{orders}.length >= {o} && {payments}.length >= {p}");

    // The page starts on one stream; the streams input switches it to two in one connection.
    browser
        .open(&format!(
            "{}/?stream=orders&from=earliest&types=created,paid",
            dev.gateways[0]
        ))
        .await
        .unwrap();
    browser.wait_for(&format!("{orders}.length >= 5"), WAIT).await.unwrap();
    browser.fill("#streams", "orders,payments").await.unwrap();
    browser.click("#follow button").await.unwrap();
    // From `from=earliest` again: `orders` 0..5 a second time, and `payments` 0..5.
    browser.wait_for(&reach(10, 5), WAIT).await.unwrap();
    assert_eq!(
        browser
            .eval("document.querySelector('#stream-name').textContent")
            .await
            .unwrap(),
        json!("orders, payments")
    );
    assert_eq!(
        browser
            .eval("new URLSearchParams(location.search).get('streams')")
            .await
            .unwrap(),
        json!("orders,payments"),
        "a reload follows the same streams"
    );
    let url = browser.eval("window.sluiceDemo.source.url").await.unwrap();
    assert!(
        url.as_str().unwrap().contains("/v1/streams/orders,payments?"),
        "one EventSource for both: {url}"
    );
    browser
        .wait_for(
            "window.sluiceDemo.caughtUp.some(d => (JSON.parse(d).streams || []).length === 2)",
            WAIT,
        )
        .await
        .unwrap();
    let badges = "[...document.querySelectorAll('#events .badge')].map(b => b.textContent)";
    let shown = browser.eval(badges).await.unwrap();
    for name in ["orders:created", "payments:paid"] {
        assert!(
            shown.as_array().unwrap().contains(&json!(name)),
            "{name} shown: {shown}"
        );
    }
    let last = browser.eval(&format!("{payments}.at(-1).id")).await.unwrap();
    assert_v2_cursor(&last, 2);

    // Switch gateway: the v2 cursor resumes both streams on the other one.
    browser.click("#switch").await.unwrap();
    publish_typed(&dev.ingest, "orders", "created", 5..10).await;
    publish_typed(&dev.ingest, "payments", "paid", 5..10).await;
    browser
        .wait_for("window.sluiceDemo.connects === 3", WAIT)
        .await
        .unwrap();
    assert_eq!(
        browser.eval("window.sluiceDemo.gateway").await.unwrap(),
        json!(dev.gateways[1])
    );
    browser.wait_for(&reach(15, 10), WAIT).await.unwrap();
    let expected_orders: Vec<u64> = (0..5).chain(0..10).collect();
    assert_eq!(seqs_where(&mut browser, &orders).await, expected_orders);
    assert_eq!(seqs_where(&mut browser, &payments).await, (0..10).collect::<Vec<u64>>());
    assert_eq!(browser.eval("window.sluiceDemo.duplicates").await.unwrap(), json!(0));
    assert_eq!(browser.eval("window.sluiceDemo.skips").await.unwrap(), json!(0));

    // Publishing a new type to the second stream from the page listens for it too.
    browser.fill("#pub-stream", "payments").await.unwrap();
    browser.fill("#pub-type", "refunded").await.unwrap();
    browser.fill("#pub-data", r#"{"seq": 10}"#).await.unwrap();
    browser.click("#publish button[type=submit]").await.unwrap();
    let refund = browser
        .wait_for(
            "window.sluiceDemo.received.find(e => e.event === 'payments:refunded')",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(refund["stream"], "payments");
    assert_eq!(refund["type"], "refunded");

    assert_eq!(browser.page_errors().await.unwrap(), Vec::<String>::new());
    browser
        .screenshot(&screenshot_path("demo-two-streams.png"))
        .await
        .unwrap();
    browser.quit().await.unwrap();
}

/// The page of the access-control tests, served by [`TokenSite`]: it fetches a token cookie
/// from `/token?ttl=…`, then reads `stream` from `gateway` with a credentialed `EventSource`;
/// on `sluice.reauth` it closes the stream and waits for the test to call `resume()`, which
/// fetches a fresh token and reopens at the last id with `lastEventId`.
const AUTH_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>sluice auth</title><script>
const params = new URLSearchParams(location.search);
const auth = window.auth = { received: [], reauths: 0, reason: null, errors: 0, state: null, lastId: null };
function open(lastId) {
  let url = `${params.get("gateway")}/v1/streams/${params.get("stream")}?from=earliest`;
  if (lastId) url += `&lastEventId=${encodeURIComponent(lastId)}`;
  const es = new EventSource(url, { withCredentials: true });
  es.addEventListener("test", (e) => { auth.received.push(JSON.parse(e.data).seq); auth.lastId = e.lastEventId; });
  es.addEventListener("sluice.reauth", (e) => {
    es.close();
    auth.reauths += 1;
    auth.reason = JSON.parse(e.data).reason;
    auth.lastId = e.lastEventId;
  });
  es.onerror = () => { auth.errors += 1; auth.state = es.readyState; };
}
window.resume = async () => { await fetch("/token?ttl=3600"); open(auth.lastId); };
fetch(`/token?ttl=${params.get("ttl")}`).then(() => open(null));
</script>"#;

/// The test's web site on two loopback origins: `/` serves [`AUTH_PAGE`], `/token?ttl=SECS`
/// sets a `sluice_token` cookie granting `stream` (HS256, the test secret).
struct TokenSite {
    origins: [String; 2],
    handle: actix_web::dev::ServerHandle,
}

impl TokenSite {
    fn start(stream: &str) -> Self {
        let listeners = [(); 2].map(|()| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let origins = [0, 1].map(|i| format!("http://{}", listeners[i].local_addr().unwrap()));
        let stream = stream.to_owned();
        let mut server = actix_web::HttpServer::new(move || {
            let stream = stream.clone();
            actix_web::App::new()
                .route(
                    "/",
                    actix_web::web::get()
                        .to(|| async { actix_web::HttpResponse::Ok().content_type("text/html").body(AUTH_PAGE) }),
                )
                .route(
                    "/token",
                    actix_web::web::get().to(move |query: actix_web::web::Query<TokenQuery>| {
                        let token = TestToken::new(TestKey::Hmac)
                            .subject("browser")
                            .subscribe(json!([stream]))
                            .expires_in(query.ttl)
                            .mint();
                        async move {
                            actix_web::HttpResponse::Ok()
                                .insert_header(("set-cookie", format!("sluice_token={token}; Path=/; SameSite=Lax")))
                                .body("ok")
                        }
                    }),
                )
        })
        .workers(1)
        .disable_signals();
        for listener in listeners {
            server = server.listen(listener).unwrap();
        }
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { origins, handle }
    }
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    ttl: i64,
}

/// Kafka, ingest (open, to publish) and one gateway process that verifies the test secret and
/// allows only the first origin of `site`.
struct AuthStack {
    topic: String,
    ingest_url: String,
    gateway_url: String,
    admin: std::net::SocketAddr,
    site: TokenSite,
    // Dropped in this order: the services before the broker they read.
    _ingest: ServiceProcess,
    _gateway: Child,
    _kafka: TestKafka,
}

impl AuthStack {
    async fn start(topic_prefix: &str) -> Self {
        let kafka = TestKafka::start().await.unwrap();
        let topic = kafka.unique_topic(topic_prefix);
        kafka.create_topic(&topic, 1).await.unwrap();
        let brokers = kafka.bootstrap_servers().to_owned();
        let ingest = ServiceProcess::start("sluice-ingest", &brokers, &[], WAIT)
            .await
            .unwrap();
        let site = TokenSite::start(&topic);
        let (listen, admin) = (free_local_addr(), free_local_addr());
        let args = [
            format!("--listen={listen}"),
            format!("--admin-listen={admin}"),
            format!("--kafka-brokers={brokers}"),
            format!("--jwt-hmac-secret-file={}", TestKey::Hmac.verify_file().display()),
            format!("--allow-origins={}", site.origins[0]),
        ];
        let gateway = Child::spawn("sluice-gateway", &args, &[("SLUICE_ALLOW_ANONYMOUS", "false")]).unwrap();
        wait_ready(admin, WAIT).await.unwrap();
        Self {
            ingest_url: format!("http://{}", ingest.listen),
            gateway_url: format!("http://{listen}"),
            _kafka: kafka,
            _ingest: ingest,
            _gateway: gateway,
            topic,
            admin,
            site,
        }
    }

    fn page(&self, origin: usize, ttl: u64) -> String {
        format!(
            "{}/?gateway={}&stream={}&ttl={ttl}",
            self.site.origins[origin], self.gateway_url, self.topic
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_event_source_streams_from_an_allowed_origin_and_is_refused_from_another() {
    let stack = AuthStack::start("browser-cookie").await;
    publish(&stack.ingest_url, &stack.topic, 0..5).await;
    let mut browser = Browser::launch().await.unwrap();

    browser.open(&stack.page(1, 3600)).await.unwrap();
    browser
        .wait_for("window.auth.state === EventSource.CLOSED", WAIT)
        .await
        .unwrap();
    let metrics = reqwest::get(format!("http://{}/metrics", stack.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sluice_gateway_auth_failures_total{reason=\"forbidden\"} 1"),
        "the gateway itself refused the foreign origin's cookie, not only the browser: {metrics}"
    );
    assert_eq!(browser.eval("window.auth.received").await.unwrap(), json!([]));

    browser.open(&stack.page(0, 3600)).await.unwrap();
    browser
        .wait_for("window.auth.received.length >= 5", WAIT)
        .await
        .unwrap();
    assert_eq!(
        browser.eval("window.auth.received").await.unwrap(),
        json!([0, 1, 2, 3, 4])
    );
    assert_eq!(browser.page_errors().await.unwrap(), Vec::<String>::new());
    browser.quit().await.unwrap();
    stack.site.handle.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_token_expires_reauthenticates_and_resumes_missing_nothing() {
    let stack = AuthStack::start("browser-reauth").await;
    publish(&stack.ingest_url, &stack.topic, 0..10).await;
    let mut browser = Browser::launch().await.unwrap();
    browser.open(&stack.page(0, 6)).await.unwrap();
    browser
        .wait_for("window.auth.received.length >= 10", WAIT)
        .await
        .unwrap();
    browser.wait_for("window.auth.reauths === 1", WAIT).await.unwrap();
    assert_eq!(
        browser.eval("window.auth.reason").await.unwrap(),
        json!("token_expiring")
    );

    // Published while the page holds no stream: it must get exactly these on resuming.
    publish(&stack.ingest_url, &stack.topic, 10..20).await;
    browser.eval("window.resume()").await.unwrap();
    browser
        .wait_for("window.auth.received.length >= 20", WAIT)
        .await
        .unwrap();
    publish(&stack.ingest_url, &stack.topic, 20..21).await;
    browser
        .wait_for("window.auth.received.length >= 21", WAIT)
        .await
        .unwrap();
    assert_eq!(
        browser.eval("window.auth.received").await.unwrap(),
        json!((0..21).collect::<Vec<u64>>())
    );
    assert_eq!(browser.page_errors().await.unwrap(), Vec::<String>::new());
    browser.quit().await.unwrap();
    stack.site.handle.stop(false).await;
}
