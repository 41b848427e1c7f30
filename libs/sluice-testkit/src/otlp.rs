//! A test OTLP trace receiver: what a collector would see.
//!
//! It serves OTLP/gRPC (`TraceService/Export`, tonic) and OTLP/HTTP protobuf (`POST /v1/traces`)
//! on two `127.0.0.1:0` listeners, decodes every request with `opentelemetry-proto`, and keeps
//! the spans for a test to look for one trace end to end.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// One span as the receiver got it, ids in lowercase hex (the `traceparent` spelling).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's `SpanKind`: 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: Vec<(String, String)>,
}

pub const KIND_SERVER: i32 = 2;
pub const KIND_PRODUCER: i32 = 4;
pub const KIND_CONSUMER: i32 = 5;

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    grpc_requests: usize,
    http_requests: usize,
}

type Shared = Arc<Mutex<Received>>;

/// The receiver; both listeners stop when it is dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    grpc: SocketAddr,
    http: SocketAddr,
    received: Shared,
    stop: CancellationToken,
    http_handle: actix_web::dev::ServerHandle,
}

impl OtlpReceiver {
    /// Starts both listeners. Must be called inside a tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        let received: Shared = Arc::default();
        let stop = CancellationToken::new();

        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc = grpc_listener.local_addr()?;
        let service = TraceServiceServer::new(GrpcReceiver(received.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, until.cancelled_owned())
                .await;
        });

        let http_listener = TcpListener::bind("127.0.0.1:0")?;
        let http = http_listener.local_addr()?;
        let state = received.clone();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(actix_web::web::Data::new(state.clone()))
                .app_data(actix_web::web::PayloadConfig::new(16 << 20))
                .route("/v1/traces", actix_web::web::post().to(http_export))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(http_listener)?
        .run();
        let http_handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            grpc,
            http,
            received,
            stop,
            http_handle,
        })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for `http/protobuf` (the exporter appends `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    /// Export requests received so far: (gRPC, HTTP).
    pub fn requests(&self) -> (usize, usize) {
        let received = self.lock();
        (received.grpc_requests, received.http_requests)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
        drop(self.http_handle.stop(false));
    }
}

struct GrpcReceiver(Shared);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = flatten(request.into_inner());
        let mut received = self.0.lock().unwrap_or_else(|e| e.into_inner());
        received.grpc_requests += 1;
        received.spans.extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(body: actix_web::web::Bytes, state: actix_web::web::Data<Shared>) -> actix_web::HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return actix_web::HttpResponse::BadRequest().finish();
    };
    let spans = flatten(request);
    {
        let mut received = state.lock().unwrap_or_else(|e| e.into_inner());
        received.http_requests += 1;
        received.spans.extend(spans);
    }
    actix_web::HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
        let service = attributes(&resource)
            .into_iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            out.extend(scope.spans.into_iter().map(|span| ReceivedSpan {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attributes: attributes(&span.attributes),
            }));
        }
    }
    out
}

fn attributes(pairs: &[KeyValue]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
