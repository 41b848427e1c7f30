//! A real HTTP SSE client for tests, reading frames with `sluice-sse`'s reference parser (the
//! model of a browser's `EventSource`).

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt as _;
use sluice_sse::{ParsedEvent, Parser};

/// An open SSE response.
pub struct SseStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: Parser,
    ready: VecDeque<ParsedEvent>,
    pub status: u16,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// What reading the next event gave.
#[derive(Debug)]
pub enum Next {
    Event(ParsedEvent),
    /// The server ended the response.
    Ended,
}

impl SseStream {
    /// `GET url` with `Last-Event-ID` when given. Fails on a non-200 answer.
    pub async fn connect(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> anyhow::Result<Self> {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("GET {url}: {status} {body}");
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        anyhow::ensure!(
            content_type.starts_with("text/event-stream"),
            "content-type {content_type:?}"
        );
        Ok(Self {
            body: response.bytes_stream().boxed(),
            parser: Parser::new(),
            ready: VecDeque::new(),
            status,
        })
    }

    /// The next dispatched event, or `Ended`, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Next> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Next::Event(event));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => anyhow::bail!("no event within {timeout:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Ok(Next::Ended),
                Ok(Some(Ok(chunk))) => self.ready.extend(self.parser.feed(&chunk)),
            }
        }
    }

    /// The next event; an error when the stream ended.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<ParsedEvent> {
        match self.next(timeout).await? {
            Next::Event(event) => Ok(event),
            Next::Ended => anyhow::bail!("the stream ended"),
        }
    }

    /// [`SseStream::next`], as a client listening for the stream's events sees it: the
    /// `sluice.caught-up` marker (the backlog is done; not an event of the stream) is skipped,
    /// within the same `timeout`.
    pub async fn next_stream_event(&mut self, timeout: Duration) -> anyhow::Result<Next> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Next::Event(event) if event.event_type == "sluice.caught-up" => continue,
                other => return Ok(other),
            }
        }
    }

    /// The last event id the stream has set (dispatched events and id-only checkpoints).
    pub fn last_event_id(&self) -> Option<String> {
        self.parser.last_event_id().map(str::to_owned)
    }

    /// The `retry:` the server asked for, if any.
    pub fn retry_ms(&self) -> Option<u64> {
        self.parser.retry_ms()
    }

    /// Comments (heartbeats) seen so far, taken.
    pub fn take_comments(&mut self) -> Vec<String> {
        self.parser.take_comments()
    }

    /// Reads until `predicate` holds for the parser state (e.g. a checkpoint arrived), within
    /// `timeout`; events dispatched meanwhile are kept for `next`.
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        mut predicate: impl FnMut(&mut Self) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !predicate(self) {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => anyhow::bail!("condition not met within {timeout:?}"),
                Ok(None) | Ok(Some(Err(_))) => anyhow::bail!("the stream ended"),
                Ok(Some(Ok(chunk))) => {
                    let events = self.parser.feed(&chunk);
                    self.ready.extend(events);
                }
            }
        }
        Ok(())
    }
}
