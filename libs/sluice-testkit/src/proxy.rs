//! A round-robin TCP proxy with no stickiness: what an ingress in front of several gateways
//! looks like to a client. Each new connection goes to the next backend; a backend that refuses
//! the connection (it died) is skipped. When a backend's side closes, the client's does too, so
//! the client sees the drop.
//!
//! It records the HTTP request heads clients sent and which backend got each, so a test can
//! check, say, that a browser's reconnect reached the other gateway carrying `Last-Event-ID`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of each connection's client side kept for [`RoundRobinProxy::requests`].
const CAPTURE_BYTES: usize = 64 * 1024;

/// One HTTP request a client sent through the proxy.
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    /// Index of the backend (in the list given to [`RoundRobinProxy::start`]) that got it.
    pub backend: usize,
    /// `GET /path?query HTTP/1.1`.
    pub request_line: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
}

impl ProxiedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Bytes a client sent on one connection, and where they went.
#[derive(Debug)]
struct Capture {
    backend: usize,
    bytes: Vec<u8>,
}

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct RoundRobinProxy {
    addr: SocketAddr,
    captures: Arc<Mutex<Vec<Arc<Mutex<Capture>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobinProxy {
    /// Listens on a free loopback port in front of `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        anyhow::ensure!(!backends.is_empty(), "a proxy needs at least one backend");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let captures: Arc<Mutex<Vec<Arc<Mutex<Capture>>>>> = Arc::default();
        let log = captures.clone();
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (backends, log, next) = (backends.clone(), log.clone(), next.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::SeqCst);
                    // Round robin, skipping backends that refuse.
                    for attempt in 0..backends.len() {
                        let index = (first + attempt) % backends.len();
                        if let Ok(backend) = TcpStream::connect(backends[index]).await {
                            let capture = Arc::new(Mutex::new(Capture {
                                backend: index,
                                bytes: Vec::new(),
                            }));
                            log.lock().unwrap_or_else(|e| e.into_inner()).push(capture.clone());
                            pipe(client, backend, capture).await;
                            return;
                        }
                    }
                    // Every backend refused: the client sees its connection closed.
                });
            }
        });
        Ok(Self { addr, captures, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request head clients have sent so far, connection by connection in the order
    /// they were accepted.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        let captures = self.captures.lock().unwrap_or_else(|e| e.into_inner());
        captures
            .iter()
            .flat_map(|capture| {
                let capture = capture.lock().unwrap_or_else(|e| e.into_inner());
                parse_heads(&capture.bytes, capture.backend)
            })
            .collect()
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until either side closes, then closes both.
async fn pipe(client: TcpStream, backend: TcpStream, capture: Arc<Mutex<Capture>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut backend_read, mut backend_write) = backend.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            {
                let mut capture = capture.lock().unwrap_or_else(|e| e.into_inner());
                let room = CAPTURE_BYTES.saturating_sub(capture.bytes.len());
                capture.bytes.extend_from_slice(&buffer[..n.min(room)]);
            }
            if backend_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut backend_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    // Whichever side ends first ends the connection: a dead backend must look dead to the client.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// Request heads in a client's byte stream (requests without bodies, as browsers send for GET).
fn parse_heads(bytes: &[u8], backend: usize) -> Vec<ProxiedRequest> {
    let text = String::from_utf8_lossy(bytes);
    text.split("\r\n\r\n")
        .filter_map(|head| {
            let mut lines = head.split("\r\n");
            let request_line = lines.next()?.trim();
            if !request_line.ends_with("HTTP/1.1") && !request_line.ends_with("HTTP/1.0") {
                return None;
            }
            let headers = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                .collect();
            Some(ProxiedRequest {
                backend,
                request_line: request_line.to_owned(),
                headers,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_request_heads() {
        let bytes = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /v1/streams/s HTTP/1.1\r\nLast-Event-ID: abc\r\n\r\n";
        let requests = parse_heads(bytes, 1);
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].request_line, "GET /v1/streams/s HTTP/1.1");
        assert_eq!(requests[1].header("last-event-id"), Some("abc"));
        assert_eq!(requests[0].backend, 1);
    }

    #[tokio::test]
    async fn spreads_connections_and_skips_a_dead_backend() {
        async fn echo_server(tag: u8) -> (SocketAddr, tokio::task::JoinHandle<()>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut byte = [0u8; 1];
                        if socket.read_exact(&mut byte).await.is_ok() {
                            let _ = socket.write_all(&[tag]).await;
                        }
                    });
                }
            });
            (addr, task)
        }
        async fn ask(proxy: SocketAddr) -> Option<u8> {
            let mut socket = TcpStream::connect(proxy).await.unwrap();
            socket.write_all(b"?").await.unwrap();
            let mut answer = [0u8; 1];
            socket.read_exact(&mut answer).await.ok().map(|_| answer[0])
        }
        let (a, a_task) = echo_server(b'a').await;
        let (b, _b_task) = echo_server(b'b').await;
        let proxy = RoundRobinProxy::start(vec![a, b]).await.unwrap();
        assert_eq!(
            (ask(proxy.addr()).await, ask(proxy.addr()).await),
            (Some(b'a'), Some(b'b'))
        );
        a_task.abort();
        let _ = a_task.await;
        // a's listener is gone: both connections land on b.
        assert_eq!(
            (ask(proxy.addr()).await, ask(proxy.addr()).await),
            (Some(b'b'), Some(b'b'))
        );
    }
}
