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
//!
//! The scripts need `bash`, `curl` and `python3` on the PATH; a missing one fails the test with
//! what to install.

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
        let status = tokio::time::timeout(WAIT, self.child.wait()).await;
        let status = status.unwrap_or_else(|_| panic!("did not exit within {WAIT:?}\n{}", self.report()));
        assert!(status.unwrap().success(), "failed\n{}", self.report());
        // The exit closes the pipes; the collectors finish right after.
        let collected = sluice_testkit::eventually("the output to be read", WAIT, || async {
            (Arc::strong_count(&self.stdout) == 1 && Arc::strong_count(&self.stderr) == 1).then_some(())
        });
        collected.await.unwrap();
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

/// The two consumer examples, which take the same flags and print the same lines.
#[derive(Clone, Copy, Debug)]
enum Consumer {
    Python,
    Rust,
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
        }
    }
}

/// Publishes like [`publish`], through the example's own publisher where it has one
/// (`examples/python/publish.py`).
async fn publish_with(consumer: Consumer, ingest: &str, stream: &str, seqs: std::ops::Range<usize>) {
    if let Consumer::Rust = consumer {
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
            assert_eq!(line["event"], "message", "{line}");
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
