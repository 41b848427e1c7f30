//! `GET /v1/streams/{streams}/poll`: the streams as JSON pages, for clients that cannot hold a
//! stream open (serverless functions, cron jobs, proxies that buffer).
//!
//! A poll is a short-lived several-stream client: the same access, cursor, start and errors as
//! a stream ([`crate::open::open_streams`]), a lane per stream ([`crate::lanes`]) served from
//! memory or by catch-up readers like any subscriber. It answers with what the lanes delivered:
//!
//! - at once when `limit` events (or [`PAGE_BYTES`]) are read;
//! - when every lane waits at its stream's head and some event was read, or `wait` has passed;
//! - in any case [`CATCHUP_ALLOWANCE`] after `wait`, while a lane is still reading Kafka;
//! - and early when the gateway drains.
//!
//! The page's `cursor` is the position after the last event in it (past records the filters
//! skipped, where the lanes got that far), in the same format as SSE ids: a poll cursor resumes
//! a stream and an SSE id continues polling. Each event's `id` is the cursor after it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::Serialize;
use sluice_sse::{Cursor, MultiCursor};
use tokio::time::Instant;

use crate::lanes::{Lanes, Step};
use crate::metrics::OutcomeLabel;
use crate::open::{open_streams, Opened};
use crate::request::{self, PollQuery};
use crate::server::AppState;
use crate::GatewayError;

/// A page stops taking events at this much data (at least one event is always taken).
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// How long past `wait` a poll keeps reading a lane that is still reading Kafka.
pub const CATCHUP_ALLOWANCE: Duration = Duration::from_secs(2);

/// One event of a page.
#[derive(Debug, Serialize)]
pub struct PolledEvent {
    pub id: String,
    pub stream: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The string SSE's `data` would carry.
    pub data: String,
    /// The record's key as text; `null` without a key or when it is not UTF-8.
    pub key: Option<String>,
    /// A key that is not UTF-8, in standard base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    pub partition: u32,
    pub offset: i64,
    /// Kafka's timestamp, ms since the epoch.
    pub timestamp: i64,
}

/// A poll's answer.
#[derive(Debug, Default, Serialize)]
pub struct Page {
    pub events: Vec<PolledEvent>,
    pub cursor: String,
    /// What the cursor had lost (retention) or was reset from, as `event: gap` data, per stream.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gap: Vec<serde_json::Value>,
    #[serde(skip)]
    bytes: usize,
}

pub(crate) async fn poll_events(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let result = poll(&request, &path, &state).await;
    let outcome = match &result {
        Ok(page) if !page.gap.is_empty() => "gap",
        Ok(page) if !page.events.is_empty() => "events",
        Ok(_) => "empty",
        Err(err) => err.metric_reason(),
    };
    state.metrics().polls.get_or_create(&OutcomeLabel { outcome }).inc();
    result.map(|page| {
        HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(page)
    })
}

async fn poll(request: &HttpRequest, path: &str, state: &web::Data<AppState>) -> Result<Page, GatewayError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(GatewayError::Draining);
    }
    let mut query = request::parse_query(request.query_string())?;
    let asked = PollQuery::parse(&query.poll, state.max_poll_limit, state.max_poll_wait)?;
    let names = request::stream_names(path, state.max_streams)?;
    let cursor_text = match query.poll.cursor.clone() {
        Some(text) => Some(text),
        None => request::cursor_text(request.headers().get("last-event-id"), query.last_event_id.as_deref())?
            .map(str::to_owned),
    };
    let Opened { admission, slot, specs } =
        open_streams(request, names, &mut query, cursor_text.as_deref(), state).await?;
    let lanes = Lanes::open(specs, state, true);
    let page = collect(lanes, asked, &state.runtime().drain).await;
    drop((slot, admission));
    Ok(page)
}

/// Reads the lanes until the page is full, they have nothing more, or time is up.
async fn collect(mut lanes: Lanes, asked: PollQuery, drain: &tokio_util::sync::CancellationToken) -> Page {
    let settle_by = Instant::now() + asked.wait;
    let give_up = settle_by + CATCHUP_ALLOWANCE;
    let marks = lanes.marks.clone().expect("poll lanes report when they wait");
    let mut positions: Vec<Cursor> = lanes.lanes.iter().map(|lane| lane.position.clone()).collect();
    let mut page = Page::default();
    loop {
        if page.events.len() >= asked.limit || page.bytes >= PAGE_BYTES {
            break;
        }
        if lanes.settle() {
            // Every lane read everything it had: its position includes what its filter skipped.
            positions = lanes.lanes.iter().map(|lane| lane.position.clone()).collect();
            if !page.events.is_empty() || !page.gap.is_empty() || Instant::now() >= settle_by {
                break;
            }
        }
        let wake = if Instant::now() < settle_by { settle_by } else { give_up };
        tokio::select! {
            biased;
            (i, bytes) = lanes.next() => match bytes {
                Some(bytes) => {
                    if !take(&mut lanes, i, &bytes, &mut positions, &mut page, asked.limit) {
                        break;
                    }
                }
                // A lane ended (its feed stopped, Kafka failed): answer with what was read.
                None => break,
            },
            _ = marks.notify.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= give_up {
                    break;
                }
            }
            _ = drain.cancelled() => break,
        }
    }
    page.cursor = combine(&positions);
    page
}

/// Adds what lane `i` sent to the page, up to `limit` events. `false` when the lane's output
/// made no sense (a bug; the page ends there).
fn take(lanes: &mut Lanes, i: usize, bytes: &[u8], positions: &mut [Cursor], page: &mut Page, limit: usize) -> bool {
    let steps = match lanes.take(i, bytes) {
        Ok(steps) => steps,
        Err(err) => {
            tracing::error!(error = %err, "ending a poll early");
            return false;
        }
    };
    let stream = lanes.lanes[i].stream.clone();
    let mut all = true;
    for step in steps {
        if page.events.len() >= limit || page.bytes >= PAGE_BYTES {
            // The rest is not in this page, and the cursor stays before it.
            all = false;
            break;
        }
        match step {
            Step::Record { event, note, position } => {
                positions[i] = position;
                let (key, key_base64) = match note.key.as_deref().map(std::str::from_utf8) {
                    None => (None, None),
                    Some(Ok(text)) => (Some(text.to_owned()), None),
                    Some(Err(_)) => (
                        None,
                        note.key
                            .as_deref()
                            .map(|k| base64::engine::general_purpose::STANDARD.encode(k)),
                    ),
                };
                page.bytes += event.data.len();
                page.events.push(PolledEvent {
                    id: combine(positions),
                    stream: stream.clone(),
                    event_type: event.event_type,
                    data: event.data,
                    key,
                    key_base64,
                    partition: note.partition,
                    offset: note.offset,
                    timestamp: note.timestamp_ms,
                });
            }
            Step::Control { event, position } => {
                positions[i] = position;
                if event.event_type == "gap" {
                    if let Ok(gap) = serde_json::from_str(&event.data) {
                        page.gap.push(gap);
                    }
                }
            }
            Step::Moved | Step::Heartbeat => {}
        }
    }
    if all {
        positions[i] = lanes.lanes[i].position.clone();
    }
    true
}

/// The cursor of `positions`: v1 for one stream (as a single-stream SSE id), v2 for several.
fn combine(positions: &[Cursor]) -> String {
    match positions {
        [one] => one.encode(),
        several => MultiCursor::new(several.to_vec())
            .expect("the streams of a request are distinct and within the limits")
            .encode(),
    }
}
