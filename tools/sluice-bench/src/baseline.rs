//! `sluice-bench baseline-server` (hidden): the floor every gateway figure is compared with.
//!
//! A bare SSE writer on plain tokio TCP, built for the benchmark and nothing else: it speaks
//! just enough HTTP/1.1 for the harness, keeps no history, reads no Kafka, checks nothing.
//! What it does do is what any SSE server must: hold the connections, send a `retry:` frame
//! and heartbeat comments, and write every event to every subscriber as chunked
//! `text/event-stream` — one task per connection, frames built once and shared (`Bytes`
//! through a broadcast channel), everything pending written in one chunk. Running the same
//! harness (`idle`, `fanout` with `--server baseline`) against it in the same session gives
//! this machine's floor, so gateway figures can be read as ratios instead of raw numbers
//! from a noisy shared machine.
//!
//! Routes:
//! - `GET /readyz` → `200` (so the rig's readiness wait works unchanged);
//! - `GET /<anything else>` → the event stream (the query is ignored: no filters);
//! - `POST /<anything>` with the ingest body (one event object or a JSON array of them) →
//!   one frame `id: <n>` + `data: <the event's data, compact JSON>` per event, broadcast to
//!   every connection; answers `200 {}` once broadcast.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::cli::parse_positive_duration;

/// Flags of the hidden `sluice-bench baseline-server` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    /// Address to listen on, `IP:PORT`.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Heartbeat comment after this long without a frame (the gateway's default).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_positive_duration)]
    pub heartbeat: Duration,

    /// Worker threads [default: one per logical CPU, as the gateway].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// Publish batches a connection may fall behind before it is closed.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub buffer: usize,
}

/// Runs the server until the process is killed.
pub fn run_blocking(args: BaselineArgs) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers.into());
    }
    runtime.build().context("starting the runtime")?.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        serve(listener, args).await
    })
}

/// Accepts connections for ever.
async fn serve(listener: TcpListener, args: BaselineArgs) -> anyhow::Result<()> {
    let (events, _) = broadcast::channel::<Bytes>(args.buffer.max(1));
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await.context("accepting")?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, events.clone(), Arc::clone(&ids), args.heartbeat));
    }
}

/// One HTTP connection: requests until it turns into an event stream or closes.
async fn connection(mut stream: TcpStream, events: broadcast::Sender<Bytes>, ids: Arc<AtomicU64>, heartbeat: Duration) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        let reply: &[u8] = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/readyz") => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            ("GET", _) => {
                // Nothing of the request is needed any more: an idle stream keeps no buffer.
                drop(buffer);
                let _ = stream_events(stream, events.subscribe(), heartbeat).await;
                return;
            }
            ("POST", _) => match frames(&request.body, &ids) {
                Ok(batch) => {
                    // No subscriber is not an error: the warm-up event comes first.
                    let _ = events.send(batch);
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                }
                Err(_) => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            },
            _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// A request's method, path (without query) and body.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Reads one request; `None` at EOF or on anything malformed. Leftover bytes stay in `buffer`.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some((request, used)) = parse_request(buffer) {
            buffer.drain(..used);
            return Some(request);
        }
        if buffer.len() > 64 * 1024 * 1024 {
            return None;
        }
        // Into the heap buffer, not a stack array: an array would live in every connection's
        // task (its future) for the whole stream, and count as memory per idle connection.
        buffer.reserve(4096);
        if stream.read_buf(buffer).await.ok()? == 0 {
            return None;
        }
    }
}

/// Parses a complete request (head + `content-length` body) at the start of `buffer`.
fn parse_request(buffer: &[u8]) -> Option<(Request, usize)> {
    let head_end = buffer.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buffer[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let body = buffer.get(head_end..head_end + length)?.to_vec();
    Some((Request { method, path, body }, head_end + length))
}

/// The frames of one publish body, as one shared buffer.
fn frames(body: &[u8], ids: &AtomicU64) -> Result<Bytes, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let events = match value {
        serde_json::Value::Array(events) => events,
        single => vec![single],
    };
    let mut out = Vec::with_capacity(body.len() + events.len() * 16);
    for event in &events {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let data = serde_json::to_string(&event["data"])?;
        out.extend_from_slice(format!("id: {id}\ndata: {data}\n\n").as_bytes());
    }
    Ok(Bytes::from(out))
}

/// Streams every broadcast batch to one client, with heartbeats, until it goes away or falls
/// behind by more than the channel holds.
async fn stream_events(
    mut stream: TcpStream,
    mut events: broadcast::Receiver<Bytes>,
    heartbeat: Duration,
) -> std::io::Result<()> {
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .await?;
    stream.write_all(&chunk(&[b"retry: 2000\n\n"])).await?;
    loop {
        let first = tokio::select! {
            received = events.recv() => received,
            () = tokio::time::sleep(heartbeat) => {
                stream.write_all(&chunk(&[b": \n\n"])).await?;
                continue;
            }
        };
        let Ok(first) = first else {
            // Lagged or closed: a client this far behind resumes elsewhere, as with the gateway.
            return Ok(());
        };
        let mut batch = vec![first];
        while let Ok(more) = events.try_recv() {
            batch.push(more);
        }
        let parts: Vec<&[u8]> = batch.iter().map(|bytes| bytes.as_ref()).collect();
        stream.write_all(&chunk(&parts)).await?;
    }
}

/// One HTTP chunk holding `parts` back to back.
fn chunk(parts: &[&[u8]]) -> Vec<u8> {
    let length: usize = parts.iter().map(|part| part.len()).sum();
    let mut out = Vec::with_capacity(length + 12);
    out.extend_from_slice(format!("{length:x}\r\n").as_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse_wire::{ChunkedDecoder, Frame, SseParser};

    #[test]
    fn parses_requests_with_and_without_bodies() {
        let get = b"GET /v1/streams/s?from=latest HTTP/1.1\r\nHost: x\r\n\r\nPOST";
        let (request, used) = parse_request(get).unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", "/v1/streams/s")
        );
        assert_eq!(&get[used..], b"POST");
        let post = b"POST /e HTTP/1.1\r\nContent-Length: 4\r\n\r\n[1,2";
        assert_eq!(parse_request(&post[..post.len() - 1]), None, "body incomplete");
        let (request, _) = parse_request(post).unwrap();
        assert_eq!(request.body, b"[1,2");
    }

    #[test]
    fn publish_bodies_become_frames_the_holders_read() {
        let ids = AtomicU64::new(7);
        let batch = frames(br#"[{"key":"a","data":{"x":1}},{"data":"two"}]"#, &ids).unwrap();
        let single = frames(br#"{"data":3}"#, &ids).unwrap();
        let mut wire = Vec::new();
        for body in [&batch, &single] {
            wire.extend_from_slice(&chunk(&[body]));
        }
        let mut decoded = Vec::new();
        ChunkedDecoder::default().decode(&wire, &mut decoded).unwrap();
        let mut seen = Vec::new();
        SseParser::default().feed(&decoded, &mut |frame| {
            if let Frame::Event { data, id } = frame {
                seen.push(format!(
                    "{} {}",
                    String::from_utf8_lossy(id.unwrap_or_default()),
                    String::from_utf8_lossy(data)
                ));
            }
        });
        assert_eq!(seen, [r#"7 {"x":1}"#, r#"8 "two""#, "9 3"]);
        assert!(frames(b"not json", &ids).is_err());
    }
}
