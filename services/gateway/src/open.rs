//! Opening a stream: a request becomes a running subscriber, or for several streams
//! (`/v1/streams/a,b`) a [`MultiStream`] over a lane per stream. [`open_streams`] is what
//! streams and polls share: access first (an unauthenticated client learns nothing, not even
//! which streams exist), then the streams, the cursor, a connection slot, the feeds, and
//! [`start_position`]: the one place where a subscriber's start is decided.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use futures::FutureExt as _;
use sluice_sse::{Cursor, CursorError, MultiCursor};
use tracing::Instrument as _;

use crate::feed::Feed;
use crate::kafka::RecordSource;
use crate::lanes::{LaneSpec, Lanes};
use crate::metrics::ReasonLabel;
use crate::multi::MultiStream;
use crate::request::{self, From, StreamQuery};
use crate::server::{AppState, ConnectionSlot, SocketFd};
use crate::subscriber::{Out, Reset, Start, Subscriber};
use crate::{access, GatewayError};

pub(crate) async fn stream_events(
    request: HttpRequest,
    stream: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    state.metrics().connection_attempts.inc();
    let result = if sluice_telemetry::enabled() {
        open_traced(&request, &stream, &state).await
    } else {
        open_stream(&request, &stream, &state).await
    };
    if let Err(err) = &result {
        state
            .metrics()
            .connections_rejected
            .get_or_create(&ReasonLabel {
                reason: err.metric_reason(),
            })
            .inc();
    }
    result
}

/// [`open_stream`] inside the open span, which records the answer.
async fn open_traced(
    request: &HttpRequest,
    stream: &str,
    state: &web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let span = crate::trace::open_span(request, stream);
    let result = open_stream(request, stream, state).instrument(span.clone()).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(err) => actix_web::ResponseError::status_code(err),
    };
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

async fn open_stream(
    request: &HttpRequest,
    path: &str,
    state: &web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(GatewayError::Draining);
    }
    let mut query = request::parse_query(request.query_string())?;
    let names = request::stream_names(path, state.max_streams)?;
    let cursor_text = request::cursor_text(request.headers().get("last-event-id"), query.last_event_id.as_deref())?;
    let cursor_text = cursor_text.map(str::to_owned);
    let opened = open_streams(request, names, &mut query, cursor_text.as_deref(), state).await?;
    let Opened {
        admission,
        slot,
        mut specs,
    } = opened;
    let reauth = admission.expires_at.map(access::reauth_in);
    let socket = request.conn_data::<SocketFd>().map(|s| s.0);
    let (out, body) = Out::channel(state.timing.max_queued_bytes, socket, state.timing.write_timeout);
    let subject_slot = admission.subject_slot;
    let held = move |()| drop((slot, subject_slot));
    if specs.len() == 1 {
        let spec = specs.pop().expect("one stream");
        if sluice_telemetry::enabled() {
            record_start(&spec.lease.feed, &spec.start);
        }
        let source = state.hub.source().clone();
        let subscriber = Subscriber::new(
            (spec.lease, source),
            state.runtime().clone(),
            spec.filter,
            spec.start,
            state.timing.clone(),
            out,
        )
        .with_reauth(reauth);
        // `map`, not an async block around `run`: a block would hold the subscriber twice (its
        // capture and the future it moved into), in every connection's task.
        state.runtime().spawn_connection(subscriber.run().map(held));
    } else {
        let lanes = Lanes::open(specs, state, false);
        let connection = MultiStream::new(lanes, out, state.runtime().clone(), state.timing.clone(), reauth);
        state.runtime().spawn_connection(connection.run().map(held));
    }
    state.metrics().connections_opened.inc();
    let mut response = HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body);
    if request.version() < actix_web::http::Version::HTTP_11 {
        // HTTP/1.0 has no chunked encoding: the body runs until the connection closes.
        response.head_mut().no_chunking(true);
        response
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    Ok(response)
}

/// Streams a request may read, each at its start, and what it holds while open.
pub(crate) struct Opened {
    pub(crate) admission: access::Admission,
    pub(crate) slot: ConnectionSlot,
    pub(crate) specs: Vec<LaneSpec>,
}

/// Everything a stream and a poll do before they serve: access first (an unauthenticated
/// client learns nothing, not even which streams exist), then the streams, the cursor, a
/// connection slot, each stream's feed and [`start_position`].
pub(crate) async fn open_streams(
    request: &HttpRequest,
    names: Vec<String>,
    query: &mut StreamQuery,
    cursor_text: Option<&str>,
    state: &AppState,
) -> Result<Opened, GatewayError> {
    let mut filters = vec![query.filter.clone(); names.len()];
    let admission = state
        .gate
        .admit(request, &names, query.access_token.take().as_deref(), &mut filters)
        .await?;
    let topics = names
        .iter()
        .map(|name| state.catalog.topic_for(name))
        .collect::<Result<Vec<_>, _>>()?;
    let cursors = cursor_components(cursor_text, &names, &topics)?;
    let slot = acquire_slot(state)?;
    let source = state.hub.source().clone();
    let mut specs = Vec::with_capacity(names.len());
    for (((stream, topic), filter), cursor) in names.into_iter().zip(&topics).zip(filters).zip(cursors) {
        let lease = state.hub.subscribe(&stream, topic).await?;
        let start = start_position(source.as_ref(), &lease.feed, cursor, query.from).await?;
        specs.push(LaneSpec {
            stream,
            lease,
            filter,
            start,
        });
    }
    Ok(Opened { admission, slot, specs })
}

/// The client's cursor, per stream asked for: a v1 cursor covers one stream, a v2 cursor
/// several. Streams it does not cover start per `from`/`since`; a cursor that covers none of
/// them was minted for something else, and is refused.
fn cursor_components(
    text: Option<&str>,
    names: &[String],
    topics: &[String],
) -> Result<Vec<Option<Cursor>>, GatewayError> {
    let fingerprints: Vec<u32> = topics.iter().map(|t| sluice_sse::stream_fingerprint(t)).collect();
    for (i, fingerprint) in fingerprints.iter().enumerate() {
        if let Some(j) = fingerprints[..i].iter().position(|f| f == fingerprint) {
            return Err(GatewayError::InvalidQuery(format!(
                "streams {:?} and {:?} cannot share a connection: their cursor fingerprints collide",
                names[j], names[i]
            )));
        }
    }
    let Some(text) = text else {
        return Ok(vec![None; topics.len()]);
    };
    let cursor = MultiCursor::decode(text).map_err(GatewayError::InvalidCursor)?;
    let components: Vec<Option<Cursor>> = fingerprints.iter().map(|&f| cursor.get(f).cloned()).collect();
    if components.iter().all(Option::is_none) {
        let found = cursor.streams().first().map_or(0, |c| c.fingerprint);
        return Err(GatewayError::InvalidCursor(CursorError::ForeignStream {
            expected: fingerprints[0],
            found,
        }));
    }
    Ok(components)
}

/// What the open span can say cheaply: where the subscriber starts (memory holds its position,
/// or it reads Kafka first) and, for a cursor, whether it resumes exactly or with a gap (a
/// partition reset; gaps found later, while reading Kafka, are not known here).
fn record_start(feed: &Feed, start: &Start) {
    let span = tracing::Span::current();
    let partitions: Vec<usize> = (0..feed.partitions()).collect();
    let memory = feed.memory_start(&start.position.offsets, &partitions).is_some();
    span.record("sluice.start", if memory { "memory" } else { "kafka" });
    span.record("sluice.resumed", start.resumed);
    if start.resumed {
        span.record("sluice.resume", if start.resets.is_empty() { "exact" } else { "gap" });
        span.record("sluice.resets", start.resets.len() as u64);
    }
}

fn acquire_slot(state: &AppState) -> Result<ConnectionSlot, GatewayError> {
    let taken = state.active.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        (n < state.max_connections).then_some(n + 1)
    });
    if taken.is_err() {
        return Err(GatewayError::TooManyConnections);
    }
    state.metrics().connections_active.inc();
    Ok(ConnectionSlot {
        active: state.active.clone(),
        metrics: state.metrics().clone(),
    })
}

/// Where a subscriber starts: the client's cursor, else `from` (`latest` by default) or `since`.
///
/// A cursor is taken as it is, except: partitions the topic gained since it was minted start at
/// their earliest offset (the feed first looks at the topic again if the cursor is wider than
/// it); and a partition whose cursor offset is beyond the partition's end (the topic was deleted
/// and recreated, or the cursor comes from another cluster) restarts at its earliest offset,
/// reported as a [`Reset`], never a silent stall.
pub async fn start_position(
    source: &dyn RecordSource,
    feed: &Arc<Feed>,
    cursor: Option<Cursor>,
    from: From,
) -> Result<Start, GatewayError> {
    let Some(mut cursor) = cursor else {
        let position = from_position(source, feed, from).await?;
        return Ok(Start {
            position,
            resumed: false,
            resets: Vec::new(),
        });
    };
    if cursor.offsets.len() > feed.partitions() {
        // Another pod may have minted it on a newer view of the topic.
        feed.grow(source).await?;
    }
    let partitions = feed.partitions();
    if cursor.offsets.len() > partitions {
        return Err(GatewayError::InvalidQuery(format!(
            "the cursor names {} partitions but the stream has {partitions}",
            cursor.offsets.len()
        )));
    }
    let latest = feed.latest();
    let minted = cursor.offsets.len();
    // Partitions the cursor lacks, and those it puts beyond what this pod has seen: only those
    // cost a look at Kafka.
    let check: Vec<usize> = (0..partitions)
        .filter(|&p| p >= minted || cursor.offsets[p] > latest.offsets[p])
        .collect();
    let mut resets = Vec::new();
    if !check.is_empty() {
        let watermarks = source.watermarks(&feed.topic, &check).await?;
        for (&p, w) in check.iter().zip(&watermarks) {
            if p >= minted {
                cursor.set_next(p, w.low);
            } else if cursor.offsets[p] > w.high {
                resets.push(Reset {
                    partition: p,
                    from: cursor.offsets[p],
                    to: w.low,
                });
                cursor.set_next(p, w.low);
            }
        }
    }
    Ok(Start {
        position: cursor,
        resumed: true,
        resets,
    })
}

async fn from_position(source: &dyn RecordSource, feed: &Feed, from: From) -> Result<Cursor, GatewayError> {
    let partitions = feed.partitions();
    Ok(match from {
        From::Latest => feed.latest(),
        From::Earliest => {
            let all: Vec<usize> = (0..partitions).collect();
            let watermarks = source.watermarks(&feed.topic, &all).await?;
            Cursor::new(feed.fingerprint, watermarks.iter().map(|w| w.low).collect())
        }
        From::Since(ms) => Cursor::new(
            feed.fingerprint,
            source.offsets_for_time(&feed.topic, partitions, ms).await?,
        ),
    })
}
