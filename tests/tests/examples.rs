//! The client examples in `examples/`, run as a newcomer runs them, against the dev stack
//! (`sluice-dev` as a process on free ports), so none of them rots.
//!
//! - `examples/curl`: `publish.sh` writes its events; `watch.sh` streams them from the start on
//!   one gateway and, given an id, exactly the events after it on the other.
//! - `examples/python/sluice_consumer.py` and the `sluice-consume` binary (`examples/rust`), the
//!   same tests for both: a first run reads some events and saves its cursor file; a second run,
//!   on the other gateway with that file, prints exactly the rest. And a consumer given two
//!   gateways keeps going when the one it reads from is killed (SIGKILL), losing and repeating
//!   nothing. The Python tests publish with `examples/python/publish.py`.
//! - The polling examples, `examples/curl/poll.sh` and `examples/python/sluice_poller.py`, on two
//!   streams at once: a rerun with the cursor the first run kept prints exactly the rest, on the
//!   other gateway; the poller pages through events published while it polls, and keeps going
//!   when its gateway is killed (the consumers' test); both wait what `Retry-After` says, send the
//!   access token and stop at a 4xx (against a scripted stand-in for a gateway). And a poll
//!   cursor resumes an SSE stream (`watch.sh`) exactly, and an SSE id continues polling exactly.
//!
//! The scripts need `bash`, `curl` and `python3` on the PATH; a missing one fails the test with
//! what to install.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_sse::{parse_stream, ParsedEvent};
use sluice_testkit::process::{binary, DevStack, ProcessSignal, ServiceProcess};
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(60);

/// Publishes `{"seq": i}` for every `i` in `seqs`, all with one key: one partition, in order.
async fn publish(ingest: &str, stream: &str, seqs: std::ops::Range<usize>) {
    let events: Vec<Value> = seqs.map(|i| json!({"key": "k", "data": {"seq": i}})).collect();
    let response = reqwest::Client::new()
        .post(format!("{ingest}/v1/streams/{stream}/events"))
        .header("content-type", "application/json")
        .body(Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "publish: {}", response.text().await.unwrap());
}

/// Fails with what to install when `tool` is not on the PATH.
fn require(tool: &str, package: &str) {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{tool}` is not installed, and these tests run the examples with it: install {package} \
         (Debian/Ubuntu: apt-get install {package})"
    );
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// An example run as a process, its stdout and stderr collected.
struct Example {
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    name: String,
}

impl Example {
    fn spawn(program: impl AsRef<std::ffi::OsStr>, args: &[String], env: &[(&str, &str)]) -> Self {
        let program = program.as_ref();
        let name = format!("{} {}", program.to_string_lossy(), args.join(" "));
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
            name,
        }
    }

    fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until `check` finds what it wants in the output so far.
    async fn wait_for<T>(&self, what: &str, check: impl Fn(&[u8]) -> Option<T>) -> T {
        let found = sluice_testkit::eventually(what, WAIT, || async { check(&self.stdout()) }).await;
        found.unwrap_or_else(|e| panic!("{e}\n{}", self.report()))
    }

    /// Waits for the process to exit 0.
    async fn success(&mut self) {
        let status = self.exit().await;
        assert!(status.success(), "failed\n{}", self.report());
    }

    /// Waits for the process to exit and its output to be read.
    async fn exit(&mut self) -> std::process::ExitStatus {
        let status = tokio::time::timeout(WAIT, self.child.wait()).await;
        let status = status.unwrap_or_else(|_| panic!("did not exit within {WAIT:?}\n{}", self.report()));
        // The exit closes the pipes; the collectors finish right after.
        let collected = sluice_testkit::eventually("the output to be read", WAIT, || async {
            (Arc::strong_count(&self.stdout) == 1 && Arc::strong_count(&self.stderr) == 1).then_some(())
        });
        collected.await.unwrap();
        status.unwrap()
    }

    fn report(&self) -> String {
        format!(
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.name,
            String::from_utf8_lossy(&self.stdout()),
            self.stderr()
        )
    }
}

fn collect(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = output.clone();
    tokio::spawn(async move {
        let mut buffer = [0u8; 8192];
        while let Ok(n @ 1..) = pipe.read(&mut buffer).await {
            sink.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    });
    output
}

/// The SSE events in raw `text/event-stream` output (what `watch.sh` prints), once there are `n`.
fn sse_events(n: usize) -> impl Fn(&[u8]) -> Option<Vec<ParsedEvent>> {
    move |output| {
        let events = parse_stream(output).events;
        (events.len() >= n).then_some(events)
    }
}

fn type_and_data(events: &[ParsedEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_scripts_publish_watch_and_resume_on_the_other_gateway() {
    require("bash", "bash");
    require("curl", "curl");
    let dev = DevStack::start(2, &[], WAIT).await.unwrap();
    let stream = "examples-curl";
    let env = |gateway: &str| {
        vec![
            ("INGEST_URL", dev.ingest.clone()),
            ("GATEWAY_URL", gateway.to_owned()),
            ("STREAM", stream.to_owned()),
        ]
    };
    let script = |name: &str| examples_dir().join("curl").join(name).display().to_string();
    let run = |args: Vec<String>, env: &[(&'static str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Example::spawn("bash", &args, &env)
    };

    let mut publisher = run(vec![script("publish.sh")], &env(&dev.gateways[0]));
    publisher.success().await;
    // One line per request: one event, a batch of two, NDJSON of two.
    let replies: Vec<Value> = String::from_utf8(publisher.stdout())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let counts: Vec<usize> = replies.iter().map(|r| r["events"].as_array().unwrap().len()).collect();
    assert_eq!(counts, [1, 2, 2], "{replies:?}");

    let published = [
        ("greeting", r#"{"hello":"world"}"#),
        ("message", "1"),
        ("count", "2"),
        ("message", r#""a""#),
        ("note", r#"{"text":"b"}"#),
    ];
    let watch = run(vec![script("watch.sh")], &env(&dev.gateways[0]));
    // The raw stream: the five events, then the marker that the backlog is done.
    let events = watch
        .wait_for("watch.sh to print 5 events and the marker", sse_events(6))
        .await;
    assert_eq!(type_and_data(&events[..5]), published, "{}", watch.report());
    assert_eq!(events[5].event_type, "sluice.caught-up", "{}", watch.report());
    assert_eq!(
        events[5].id, events[4].id,
        "the marker's id is the position after the backlog"
    );
    assert!(parse_stream(&watch.stdout()).retry_ms.is_some(), "a retry: first");

    // Resume after the second event, on the other gateway; then an event published live.
    let second_id = events[1].id.clone().expect("an id");
    let resume = run(vec![script("watch.sh"), second_id], &env(&dev.gateways[1]));
    resume
        .wait_for("the resumed watch.sh to print 3 events", sse_events(3))
        .await;
    publish(&dev.ingest, stream, 0..1).await;
    let events = resume.wait_for("the live event", sse_events(5)).await;
    let mut expected = published[2..].to_vec();
    expected.push(("sluice.caught-up", r#"{"streams":["examples-curl"]}"#));
    expected.push(("message", r#"{"seq":0}"#));
    assert_eq!(type_and_data(&events), expected, "{}", resume.report());

    // An error stops the script with a non-zero exit and prints the JSON error.
    let mut bad = env(&dev.gateways[0]);
    bad[2].1 = "no~such".into();
    let mut refused = run(vec![script("publish.sh")], &bad);
    let status = tokio::time::timeout(WAIT, refused.child.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "{}", refused.report());
    refused
        .wait_for("the error body", |out| {
            String::from_utf8_lossy(out)
                .contains("invalid_stream_name")
                .then_some(())
        })
        .await;
}

/// The two consumer examples, which take the same flags and print the same lines, and the
/// polling client, which takes those flags too and prints the gateway's poll events (`type` for
/// `event`).
#[derive(Clone, Copy, Debug)]
enum Consumer {
    Python,
    Rust,
    Poller,
}

impl Consumer {
    fn spawn(self, args: &[String]) -> Example {
        match self {
            Consumer::Python => {
                require("python3", "python3");
                let script = examples_dir().join("python/sluice_consumer.py");
                let mut all = vec![script.display().to_string()];
                all.extend_from_slice(args);
                Example::spawn("python3", &all, &[])
            }
            Consumer::Rust => Example::spawn(binary("sluice-consume"), args, &[]),
            Consumer::Poller => {
                require("python3", "python3");
                let script = examples_dir().join("python/sluice_poller.py");
                let mut all = vec![script.display().to_string()];
                all.extend_from_slice(args);
                Example::spawn("python3", &all, &[])
            }
        }
    }
}

/// Publishes like [`publish`], through the example's own publisher where it has one
/// (`examples/python/publish.py`).
async fn publish_with(consumer: Consumer, ingest: &str, stream: &str, seqs: std::ops::Range<usize>) {
    if let Consumer::Rust | Consumer::Poller = consumer {
        return publish(ingest, stream, seqs).await;
    }
    let n = seqs.len();
    let script = examples_dir().join("python/publish.py").display().to_string();
    let mut all = vec![
        script,
        format!("--ingest={ingest}"),
        format!("--stream={stream}"),
        "--key=k".into(),
    ];
    all.extend(seqs.map(|i| json!({"seq": i}).to_string()));
    let mut publisher = Example::spawn("python3", &all, &[]);
    publisher.success().await;
    let reply: Value = serde_json::from_slice(&publisher.stdout()).unwrap();
    assert_eq!(
        reply["events"].as_array().map(Vec::len),
        Some(n),
        "{}",
        publisher.report()
    );
}

/// A consumer's stdout: one `{"id","event","data"}` line per event (complete lines only: the
/// output may be read in the middle of one).
fn printed(output: &[u8]) -> Vec<Value> {
    let complete = output.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&output[..complete])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// The `seq` of each printed event, after checking each line is a whole, well-formed event.
fn seqs(lines: &[Value]) -> Vec<usize> {
    lines
        .iter()
        .map(|line| {
            let event_type = line.get("event").unwrap_or(&line["type"]);
            assert_eq!(event_type, "message", "{line}");
            assert!(line["id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
            let data: Value = serde_json::from_str(line["data"].as_str().expect("data")).unwrap();
            data["seq"].as_u64().expect("seq") as usize
        })
        .collect()
}

fn args(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().map(|(flag, value)| format!("--{flag}={value}")).collect()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-examples-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run 1 reads the first events and saves its cursor; run 2, on the other gateway, from the file,
/// prints exactly the rest.
async fn resumes_from_its_cursor_file_on_the_other_gateway(consumer: Consumer, stream: &str) {
    let dev = DevStack::start(2, &[], WAIT).await.unwrap();
    let dir = TempDir::new(stream);
    let cursor_file = dir.0.join("cursor").display().to_string();
    publish_with(consumer, &dev.ingest, stream, 0..10).await;

    let common = [("stream", stream), ("cursor-file", cursor_file.as_str())];
    let mut first = consumer.spawn(&args(
        &[
            &common[..],
            &[("gateway", &dev.gateways[0]), ("from", "earliest"), ("max-events", "4")],
        ]
        .concat(),
    ));
    first.success().await;
    let lines = printed(&first.stdout());
    assert_eq!(seqs(&lines), (0..4).collect::<Vec<_>>(), "{}", first.report());
    let saved = std::fs::read_to_string(&cursor_file).unwrap();
    assert_eq!(
        saved.trim(),
        lines[3]["id"],
        "the cursor file holds the last printed id"
    );

    publish_with(consumer, &dev.ingest, stream, 10..20).await;
    // No --from: the cursor decides where it starts (the default, latest, would print nothing).
    let mut second = consumer.spawn(&args(
        &[&common[..], &[("gateway", &dev.gateways[1]), ("max-events", "16")]].concat(),
    ));
    second.success().await;
    let lines = printed(&second.stdout());
    assert_eq!(seqs(&lines), (4..20).collect::<Vec<_>>(), "{}", second.report());
    let saved = std::fs::read_to_string(&cursor_file).unwrap();
    assert_eq!(saved.trim(), lines[15]["id"]);
}

/// A consumer given two gateways reads from the first; it is killed; the consumer goes on on the
/// second with its last id and prints every event exactly once, in order.
async fn survives_a_killed_gateway(consumer: Consumer, stream: &str) {
    let dev = DevStack::start(0, &[], WAIT).await.unwrap();
    // Separate gateway processes on the dev stack's broker, so one can be killed. A short
    // retry: keeps the reconnect quick; the consumer must honour it.
    let flags = ["--retry=200ms", "--kafka-config=fetch.wait.max.ms=5"];
    let mut a = ServiceProcess::start("sluice-gateway", &dev.bootstrap, &flags, WAIT)
        .await
        .unwrap();
    let b = ServiceProcess::start("sluice-gateway", &dev.bootstrap, &flags, WAIT)
        .await
        .unwrap();
    publish(&dev.ingest, stream, 0..10).await;

    let (url_a, url_b) = (format!("http://{}", a.listen), format!("http://{}", b.listen));
    let mut reader = consumer.spawn(&args(&[
        ("gateway", &url_a),
        ("gateway", &url_b),
        ("stream", stream),
        ("from", "earliest"),
        ("max-events", "30"),
    ]));
    reader
        .wait_for("the first 10 events", |out| (printed(out).len() >= 10).then_some(()))
        .await;
    a.child.signal(ProcessSignal::SIGKILL).unwrap();
    a.child.wait(WAIT).await.unwrap();
    publish(&dev.ingest, stream, 10..20).await;
    publish(&dev.ingest, stream, 20..30).await;

    reader.success().await;
    assert_eq!(
        seqs(&printed(&reader.stdout())),
        (0..30).collect::<Vec<_>>(),
        "{}",
        reader.report()
    );
    assert!(
        reader.stderr().contains(&url_a),
        "it reported the lost connection\n{}",
        reader.report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_resumes_from_its_cursor_file_on_the_other_gateway() {
    resumes_from_its_cursor_file_on_the_other_gateway(Consumer::Python, "examples-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_consumer_resumes_from_its_cursor_file_on_the_other_gateway() {
    resumes_from_its_cursor_file_on_the_other_gateway(Consumer::Rust, "examples-rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_survives_a_killed_gateway_without_loss_or_duplicates() {
    survives_a_killed_gateway(Consumer::Python, "examples-python-kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_consumer_survives_a_killed_gateway_without_loss_or_duplicates() {
    survives_a_killed_gateway(Consumer::Rust, "examples-rust-kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_poller_survives_a_killed_gateway_without_loss_or_duplicates() {
    survives_a_killed_gateway(Consumer::Poller, "examples-poller-kill").await;
}

/// The Python consumer's own SSE parser reads every corner of the format as the project's
/// reference parser (`sluice_sse::Parser`, the model of a browser's `EventSource`) does: line
/// breaks of every kind split anywhere, id-only checkpoints, `retry:`, comments, a BOM, UTF-8.
#[test]
fn python_parser_agrees_with_the_reference_parser() {
    require("python3", "python3");
    let streams: [&[u8]; 10] = [
        b"retry: 1500\n\nid: a1\nevent: count\ndata: x\ndata: y\n\n: heartbeat\n\n",
        b"event: typed\r\ndata: 1\r\ndata: 2\r\n\r\nid: checkpoint\r\n\r\n",
        b"event: a\rdata: 1\r\rdata: 2\r\n\r\n",
        b"\xEF\xBB\xBFdata: bom\n\n\xEF\xBB\xBFdata: not a field\n\n",
        b"id: 7\ndata: a\n\nid: x\0y\ndata: b\n\nid\ndata: c\n\n",
        b"retry: 12x\nretry:\nretry: 40\nfoo: bar\nData: no\ndata\n\ndata:  two spaces\n\n",
        "data: caf\u{e9} \u{1F30A}\n\n".as_bytes(),
        b"data: a\xFFb\n\ndata: unfinished",
        b"id: gap-id\nevent: gap\ndata: {\"partitions\":[]}\n\nid: after\n\n",
        b":only a comment\n\n\n\ndata: last\n\n",
    ];
    // Each stream in one chunk, and one byte per chunk (splitting CRLFs and UTF-8 sequences).
    let cases: Vec<Vec<Vec<u8>>> = streams
        .iter()
        .flat_map(|s| [vec![s.to_vec()], s.iter().map(|&b| vec![b]).collect()])
        .collect();

    let expected: Vec<Value> = cases
        .iter()
        .map(|chunks| {
            let mut parser = sluice_sse::Parser::new();
            let events: Vec<Value> = chunks
                .iter()
                .flat_map(|chunk| parser.feed(chunk))
                .map(|e| json!([e.id, e.event_type, e.data]))
                .collect();
            json!({"events": events, "last_event_id": parser.last_event_id(), "retry": parser.retry_ms()})
        })
        .collect();

    let driver = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
from sluice_consumer import SseParser
results = []
for chunks in json.load(sys.stdin):
    parser = SseParser()
    events = [list(e) for chunk in chunks for e in parser.feed(bytes(chunk))]
    results.append({"events": events, "last_event_id": parser.last_event_id or None, "retry": parser.retry_ms})
print(json.dumps(results))
"#;
    let mut python = std::process::Command::new("python3")
        .args(["-c", driver, &examples_dir().join("python").display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&cases).unwrap();
    std::io::Write::write_all(&mut python.stdin.take().unwrap(), &input).unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(output.status.success(), "the Python driver failed");
    let got: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got.len(), expected.len());
    for ((got, expected), chunks) in got.iter().zip(&expected).zip(&cases) {
        assert_eq!(
            got,
            expected,
            "stream {:?} in {} chunks",
            String::from_utf8_lossy(&chunks.concat()),
            chunks.len()
        );
    }
}

/// Publishes `{"seq": i}` for every `i` in `seqs`, keys `k0`, `k1`, `k2` in turn: several
/// partitions, each in order.
async fn publish_keyed(ingest: &str, stream: &str, seqs: std::ops::Range<usize>) {
    let events: Vec<Value> = seqs
        .map(|i| json!({"key": format!("k{}", i % 3), "data": {"seq": i}}))
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{ingest}/v1/streams/{stream}/events"))
        .header("content-type", "application/json")
        .body(Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "publish: {}", response.text().await.unwrap());
}

/// `examples/curl/poll.sh <gateway> <streams> [cursor]`, with `env`.
fn poll_sh(gateway: &str, streams: &str, cursor: Option<&str>, env: &[(&str, &str)]) -> Example {
    require("bash", "bash");
    require("curl", "curl");
    require("python3", "python3");
    let script = examples_dir().join("curl/poll.sh").display().to_string();
    let mut args = vec![script, gateway.to_owned(), streams.to_owned()];
    args.extend(cursor.map(str::to_owned));
    Example::spawn("bash", &args, env)
}

/// `poll.sh`'s stdout: `(stream, type, data)` of each complete `stream<TAB>type<TAB>data` line.
fn poll_lines(output: &[u8]) -> Vec<(String, String, String)> {
    let complete = output.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&output[..complete])
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t').map(str::to_owned);
            let mut next = || {
                fields
                    .next()
                    .unwrap_or_else(|| panic!("not stream, type, data: {line:?}"))
            };
            (next(), next(), next())
        })
        .collect()
}

/// The `seq` of `{"seq": n}` data.
fn seq_of(data: &str) -> usize {
    let data: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{data:?}: {e}"));
    data["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {data}")) as usize
}

/// The `seq`s read from each stream, in the order they were read.
fn per_stream<'a>(events: impl IntoIterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, Vec<usize>> {
    let mut streams = BTreeMap::<String, Vec<usize>>::new();
    for (stream, data) in events {
        streams.entry(stream.to_owned()).or_default().push(seq_of(data));
    }
    streams
}

/// What `seqs` published to each of `streams` looks like read back by [`per_stream`].
fn expected(streams: &[&str], seqs: std::ops::Range<usize>) -> BTreeMap<String, Vec<usize>> {
    streams
        .iter()
        .map(|stream| (stream.to_string(), seqs.clone().collect()))
        .collect()
}

fn poll_sh_events(lines: &[(String, String, String)]) -> impl Iterator<Item = (&str, &str)> {
    lines.iter().map(|(stream, event_type, data)| {
        assert_eq!(event_type, "message", "{stream} {data}");
        (stream.as_str(), data.as_str())
    })
}

fn poller_events(lines: &[Value]) -> impl Iterator<Item = (&str, &str)> {
    lines.iter().map(|line| {
        assert_eq!(line["type"], "message", "{line}");
        assert!(line["id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
        (
            line["stream"].as_str().expect("stream"),
            line["data"].as_str().expect("data"),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_sh_reads_two_streams_and_a_rerun_with_its_cursor_prints_exactly_the_rest_on_the_other_gateway() {
    let dev = DevStack::start(2, &[], WAIT).await.unwrap();
    let (a, b) = ("examples-poll-sh-a", "examples-poll-sh-b");
    let streams = format!("{a},{b}");
    publish(&dev.ingest, a, 0..6).await;
    publish(&dev.ingest, b, 0..6).await;
    let dir = TempDir::new("poll-sh");
    let cursor_file = dir.0.join("cursor").display().to_string();

    // Two pages of at most 4 events: some of the 12, not all. A page answers as soon as it has
    // events; the long wait only keeps a slow start from giving an empty page.
    let env = [
        ("LIMIT", "4"),
        ("PAGES", "2"),
        ("WAIT", "10"),
        ("CURSOR_FILE", &cursor_file),
    ];
    let mut first = poll_sh(&dev.gateways[0], &streams, None, &env);
    first.success().await;
    let first_lines = poll_lines(&first.stdout());
    assert!((2..=8).contains(&first_lines.len()), "{}", first.report());
    let cursor = std::fs::read_to_string(&cursor_file).unwrap().trim().to_owned();
    assert!(
        first.stderr().contains(&format!("cursor: {cursor}\n")),
        "the cursor is on stderr too\n{}",
        first.report()
    );

    publish(&dev.ingest, a, 6..10).await;
    publish(&dev.ingest, b, 6..10).await;
    // The cursor as the argument, on the other gateway; it polls until stopped.
    let rest = 20 - first_lines.len();
    let second = poll_sh(&dev.gateways[1], &streams, Some(&cursor), &[("WAIT", "1")]);
    let second_lines = second
        .wait_for("the rest of the events", |out| {
            let lines = poll_lines(out);
            (lines.len() >= rest).then_some(lines)
        })
        .await;
    let all = [first_lines, second_lines].concat();
    assert_eq!(
        per_stream(poll_sh_events(&all)),
        expected(&[a, b], 0..10),
        "{}",
        second.report()
    );

    // A 4xx stops it, with the gateway's JSON error on stderr.
    let mut refused = poll_sh(&dev.gateways[0], &streams, Some("not-a-cursor"), &[]);
    assert!(!refused.exit().await.success(), "{}", refused.report());
    assert!(
        refused.stderr().contains(r#"{"error":{"code":"invalid_cursor""#),
        "{}",
        refused.report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_poller_reads_two_streams_and_resumes_from_its_cursor_file_on_the_other_gateway() {
    let dev = DevStack::start(2, &[], WAIT).await.unwrap();
    let (a, b) = ("examples-poller-a", "examples-poller-b");
    let streams = format!("{a},{b}");
    publish(&dev.ingest, a, 0..5).await;
    publish(&dev.ingest, b, 0..5).await;
    let dir = TempDir::new("poller");
    let cursor_file = dir.0.join("cursor").display().to_string();
    let common = [
        ("streams", streams.as_str()),
        ("cursor-file", cursor_file.as_str()),
        ("wait", "1"),
    ];

    // Pages of 3, stopping in the middle of the third.
    let mut first = Consumer::Poller.spawn(&args(
        &[
            &common[..],
            &[
                ("gateway", &dev.gateways[0]),
                ("from", "earliest"),
                ("limit", "3"),
                ("max-events", "7"),
            ],
        ]
        .concat(),
    ));
    first.success().await;
    let first_lines = printed(&first.stdout());
    assert_eq!(first_lines.len(), 7, "{}", first.report());
    let saved = std::fs::read_to_string(&cursor_file).unwrap();
    assert_eq!(
        saved.trim(),
        first_lines[6]["id"],
        "the cursor file holds the last printed id"
    );

    publish(&dev.ingest, a, 5..10).await;
    publish(&dev.ingest, b, 5..10).await;
    let mut second = Consumer::Poller.spawn(&args(
        &[&common[..], &[("gateway", &dev.gateways[1]), ("max-events", "13")]].concat(),
    ));
    second.success().await;
    let second_lines = printed(&second.stdout());
    let all = [first_lines, second_lines.clone()].concat();
    assert_eq!(
        per_stream(poller_events(&all)),
        expected(&[a, b], 0..10),
        "{}",
        second.report()
    );
    let saved = std::fs::read_to_string(&cursor_file).unwrap();
    assert_eq!(saved.trim(), second_lines[12]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_poller_pages_through_events_published_while_it_polls_without_loss_or_repeats() {
    const PER_STREAM: usize = 60;
    const BATCH: usize = 5;
    let dev = DevStack::start(1, &[], WAIT).await.unwrap();
    let (a, b) = ("examples-poller-live-a", "examples-poller-live-b");
    // The streams exist (ingest creates them) before the poller asks for them.
    publish_keyed(&dev.ingest, a, 0..BATCH).await;
    publish_keyed(&dev.ingest, b, 0..BATCH).await;

    let mut poller = Consumer::Poller.spawn(&args(&[
        ("gateway", &dev.gateways[0]),
        ("streams", &format!("{a},{b}")),
        ("from", "earliest"),
        ("limit", "7"),
        ("wait", "1"),
        ("max-events", &(2 * PER_STREAM).to_string()),
    ]));
    let ingest = dev.ingest.clone();
    let output = poller.stdout.clone();
    let publisher = tokio::spawn(async move {
        for start in (BATCH..PER_STREAM).step_by(BATCH) {
            // Never more than two batches ahead of the poller: it polls while they are published.
            let ahead = || async { (printed(&output.lock().unwrap()).len() >= 2 * (start - BATCH)).then_some(()) };
            sluice_testkit::eventually("the poller to keep up", WAIT, ahead)
                .await
                .unwrap();
            publish_keyed(&ingest, a, start..start + BATCH).await;
            publish_keyed(&ingest, b, start..start + BATCH).await;
        }
    });
    poller.success().await;
    publisher.await.unwrap();

    let lines = printed(&poller.stdout());
    let mut by_stream = per_stream(poller_events(&lines));
    // Per key (a partition), in the order published.
    for stream in [a, b] {
        for key in ["k0", "k1", "k2"] {
            let seqs: Vec<usize> = lines
                .iter()
                .filter(|line| line["stream"] == stream && line["key"] == key)
                .map(|line| seq_of(line["data"].as_str().unwrap()))
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{stream} {key}: {seqs:?}");
        }
    }
    by_stream.values_mut().for_each(|seqs| seqs.sort_unstable());
    assert_eq!(by_stream, expected(&[a, b], 0..PER_STREAM), "{}", poller.report());
}

/// A stand-in for a gateway on a free loopback port that answers its requests with `replies`,
/// in turn (then the last one again), and notes each request's head and when it came.
type Requests = Arc<Mutex<Vec<(tokio::time::Instant, String)>>>;

async fn scripted_gateway(replies: Vec<String>) -> (String, Requests) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match socket.read(&mut buffer).await {
                    Ok(n @ 1..) => head.extend_from_slice(&buffer[..n]),
                    _ => break,
                }
            }
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push((tokio::time::Instant::now(), String::from_utf8_lossy(&head).into_owned()));
                seen.len()
            };
            let reply = &replies[(n - 1).min(replies.len() - 1)];
            let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, reply.as_bytes()).await;
        }
    });
    (url, requests)
}

fn http_reply(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Against a stand-in that answers 503 with `Retry-After: 3`, then a page, then a 400: the
/// example waits those 3 s (not its own back-off), prints the page's event, asks for the next
/// page with its cursor, sends the token every time, and stops at the 400 with its JSON.
async fn waits_retry_after_sends_the_token_and_stops_at_a_4xx(
    spawn: impl FnOnce(&str) -> Example,
    printed_event: &str,
) {
    let page = json!({"events": [{"id": "c1", "stream": "s", "type": "message", "data": "1", "key": null,
        "partition": 0, "offset": 0, "timestamp": 0}], "cursor": "c1"});
    let (url, requests) = scripted_gateway(vec![
        http_reply(
            "503 Service Unavailable",
            "retry-after: 3\r\n",
            r#"{"error":{"code":"draining","message":"scripted"}}"#,
        ),
        http_reply("200 OK", "", &page.to_string()),
        http_reply(
            "400 Bad Request",
            "",
            r#"{"error":{"code":"invalid_cursor","message":"scripted"}}"#,
        ),
    ])
    .await;
    let mut example = spawn(&url);
    assert!(!example.exit().await.success(), "{}", example.report());
    assert!(
        String::from_utf8_lossy(&example.stdout()).contains(printed_event),
        "{}",
        example.report()
    );
    assert!(example.stderr().contains("invalid_cursor"), "{}", example.report());

    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "{requests:?}");
    let waited = requests[1].0 - requests[0].0;
    assert!(
        (Duration::from_secs(3)..Duration::from_millis(4500)).contains(&waited),
        "waited {waited:?} after the 503, not its Retry-After (3 s)\n{}",
        example.report()
    );
    for (_, head) in &requests {
        assert!(head.starts_with("GET /v1/streams/s/poll?"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nauthorization: bearer the-token\r\n"),
            "{head}"
        );
    }
    assert!(
        requests[2].1.contains("cursor=c1"),
        "the next page after the cursor: {}",
        requests[2].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_sh_waits_retry_after_sends_the_token_and_stops_at_a_4xx() {
    let spawn = |url: &str| poll_sh(url, "s", None, &[("ACCESS_TOKEN", "the-token"), ("WAIT", "0")]);
    waits_retry_after_sends_the_token_and_stops_at_a_4xx(spawn, "s\tmessage\t1\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_poller_waits_retry_after_sends_the_token_and_stops_at_a_4xx() {
    let dir = TempDir::new("poller-token");
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "the-token\n").unwrap();
    let spawn = |url: &str| {
        let token_file = token_file.display().to_string();
        Consumer::Poller.spawn(&args(&[
            ("gateway", url),
            ("streams", "s"),
            ("wait", "0"),
            ("token-file", &token_file),
        ]))
    };
    waits_retry_after_sends_the_token_and_stops_at_a_4xx(spawn, r#""id":"c1""#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_cursors_and_sse_ids_continue_each_other_exactly() {
    require("bash", "bash");
    require("curl", "curl");
    let dev = DevStack::start(2, &[], WAIT).await.unwrap();
    let (a, b) = ("examples-swap-a", "examples-swap-b");
    let streams = format!("{a},{b}");
    publish(&dev.ingest, a, 0..4).await;
    publish(&dev.ingest, b, 0..4).await;
    let dir = TempDir::new("swap");
    let cursor_file = dir.0.join("cursor").display().to_string();
    let watch = |gateway: &str, streams: &str, id: &str| {
        let script = examples_dir().join("curl/watch.sh").display().to_string();
        Example::spawn(
            "bash",
            &[script, id.to_owned()],
            &[("GATEWAY_URL", gateway), ("STREAM", streams)],
        )
    };

    // A page of poll.sh, then watch.sh (SSE, the other gateway) from the page's v2 cursor.
    let env = [
        ("LIMIT", "3"),
        ("PAGES", "1"),
        ("WAIT", "10"),
        ("CURSOR_FILE", &cursor_file),
    ];
    let mut polled = poll_sh(&dev.gateways[0], &streams, None, &env);
    polled.success().await;
    let polled_lines = poll_lines(&polled.stdout());
    let cursor = std::fs::read_to_string(&cursor_file).unwrap().trim().to_owned();
    let rest = 8 - polled_lines.len();
    let watched = watch(&dev.gateways[1], &streams, &cursor);
    let events = watched
        .wait_for("the rest and the caught-up marker", sse_events(rest + 1))
        .await;
    assert_eq!(events[rest].event_type, "sluice.caught-up", "{}", watched.report());
    let sse: Vec<(String, String)> = events[..rest]
        .iter()
        .map(|e| {
            let (stream, event_type) = e.event_type.split_once(':').expect("<stream>:<type>");
            assert_eq!(event_type, "message", "{}", watched.report());
            (stream.to_owned(), e.data.clone())
        })
        .collect();
    let both = poll_sh_events(&polled_lines).chain(sse.iter().map(|(s, d)| (s.as_str(), d.as_str())));
    assert_eq!(per_stream(both), expected(&[a, b], 0..4), "{}", watched.report());

    // The first SSE id, polled (the first gateway): exactly the events the stream sent after it.
    let id = events[0].id.clone().expect("an id");
    let repolled = poll_sh(&dev.gateways[0], &streams, Some(&id), &[("WAIT", "1")]);
    let lines = repolled
        .wait_for("the events after the id", |out| {
            let lines = poll_lines(out);
            (lines.len() >= rest - 1).then_some(lines)
        })
        .await;
    // Each stream's events in order; between streams, a poll and a stream may interleave
    // differently.
    let sse_after = sse[1..].iter().map(|(s, d)| (s.as_str(), d.as_str()));
    assert_eq!(
        per_stream(poll_sh_events(&lines)),
        per_stream(sse_after),
        "{}",
        repolled.report()
    );

    // One stream: the poller's v1 ids are single-stream SSE ids.
    let mut poller = Consumer::Poller.spawn(&args(&[
        ("gateway", &dev.gateways[1]),
        ("streams", a),
        ("from", "earliest"),
        ("max-events", "2"),
    ]));
    poller.success().await;
    let id = printed(&poller.stdout())[1]["id"].as_str().expect("an id").to_owned();
    let watched = watch(&dev.gateways[0], a, &id);
    let events = watched
        .wait_for("the last two events and the marker", sse_events(3))
        .await;
    let expected_events = [
        ("message", r#"{"seq":2}"#),
        ("message", r#"{"seq":3}"#),
        ("sluice.caught-up", ""),
    ];
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.event_type.as_str(),
                if e.event_type == "message" { e.data.as_str() } else { "" },
            )
        })
        .collect();
    assert_eq!(got, expected_events, "{}", watched.report());
}
