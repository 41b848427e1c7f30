//! What the gateway scenarios (`idle`, `fanout`, `latency`) share: the system under test as
//! separate processes, and the fleet of holder processes that subscribe to it.
//!
//! The gateway runs as its **own** process (not inside `sluice-dev`), so that its resident
//! memory and CPU time, read from `/proc/<pid>`, are the gateway's alone. Next to it run the
//! embedded broker (`sluice-bench broker`, which creates the stream's topic up front: no Sluice
//! client creates a topic by asking) and `sluice-ingest`, through which the scenarios publish. All three are [`Service`]s: killed when dropped,
//! so they die with the bench on every path.
//!
//! The subscribers are a [`Fleet`] of `sluice-bench hold` processes (see [`crate::hold`]),
//! each holding its share of the connections and reporting counts on its stdout.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use crate::auth::{Auth, AuthMode};
use crate::cli::parse_positive_duration;
use crate::hold::{add_pairs, HolderCounts, HolderFinal, HolderMessage, Tally};
use crate::machine::Machine;
use crate::procfs;
use crate::publish::{Published, Publisher};
use crate::report::{format_bytes, format_count, write_json};
use crate::stack::{free_loopback_ports, sibling_binary, Service};

/// Connections one process can hold: the machine allows 20,000 open files per process, and a
/// process needs some descriptors besides its sockets.
pub const MAX_CONNECTIONS_PER_PROCESS: u32 = 19_000;

/// What serves the SSE connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// `sluice-gateway`, with the broker and ingest beside it.
    Gateway,
    /// `sluice-bench baseline-server`: a bare tokio SSE writer, this machine's floor.
    Baseline,
}

/// Flags for the system under test, shared by the gateway scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct RigArgs {
    /// What serves the connections: the gateway, or the baseline server (same workload, no
    /// Kafka: the floor every gateway figure is compared with).
    #[arg(long, value_enum, default_value_t = ServerKind::Gateway)]
    pub server: ServerKind,

    /// Create the stream's topic with this many partitions before the run, on the broker the
    /// bench runs itself (`sluice-bench broker`) [default: 4, the mock cluster's default].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub partitions: Option<u32>,

    /// The `sluice-ingest` binary [default: next to this executable].
    #[arg(long, value_name = "PATH")]
    pub ingest_binary: Option<PathBuf>,

    /// The `sluice-gateway` binary [default: next to this executable].
    #[arg(long, value_name = "PATH")]
    pub gateway_binary: Option<PathBuf>,

    /// Extra argument for the gateway (repeatable), e.g. `--gateway-arg=--heartbeat=5s`.
    #[arg(long = "gateway-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,

    /// The gateway's `--max-connections` [default: the scenario's connections + 1,000].
    #[arg(long, value_name = "N")]
    pub gateway_max_connections: Option<u32>,

    /// Access control on the gateways (and ingest): `none` runs them open; `hs256` and `rs256`
    /// give them a fresh key, and every connection a token of its own, sent as
    /// `Authorization: Bearer` on every (re)connect.
    #[arg(long, value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,

    /// Stream to subscribe to (and publish to). Created by a warm-up event before the run.
    #[arg(long, value_name = "NAME", default_value = "bench-gateway")]
    pub stream: String,

    /// How long each spawned service may take to become ready.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_duration)]
    pub ready_timeout: Duration,

    /// Hard limit on the whole run; past it the bench kills everything and fails.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_positive_duration)]
    pub timeout: Duration,
}

/// Flags for the subscribing side, shared by the gateway scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Helper processes (`sluice-bench hold`) the connections are spread over; each can hold
    /// at most 19,000.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub client_processes: u32,

    /// Connections opened per second, over all helper processes (the ramp).
    #[arg(long, alias = "ramp-per-sec", value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ramp_rate: u32,

    /// Local addresses the connections are bound to, round robin, so that no single source
    /// address runs out of ephemeral ports.
    #[arg(
        long,
        value_name = "IP,IP,...",
        value_delimiter = ',',
        default_value = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9"
    )]
    pub source_addrs: Vec<Ipv4Addr>,

    /// How long one connection may take to connect and receive its `200` head.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,
}

/// One SSE server of the rig: a gateway or the baseline server.
#[derive(Debug)]
struct Server {
    /// `None` once killed on purpose.
    service: Option<Service>,
    pid: u32,
    addr: SocketAddr,
    admin: SocketAddr,
}

/// The system under test: broker, ingest and gateways (or the baseline server), each its own
/// process.
#[derive(Debug)]
pub struct Rig {
    pub kind: ServerKind,
    broker: Option<Service>,
    ingest: Option<Service>,
    servers: Vec<Server>,
    pub kafka_bootstrap: Option<String>,
    /// Where events are POSTed: ingest, or the baseline server itself.
    pub ingest_url: String,
    pub stream: String,
    pub partitions: Option<u32>,
    pub auth: Arc<Auth>,
    http: reqwest::Client,
}

/// Environment for every spawned service: warnings and errors only, so a busy run does not
/// spend its CPU on logging.
const QUIET: [(&str, &str); 1] = [("SLUICE_LOG", "warn")];

impl Rig {
    /// Starts one gateway (and its broker and ingest), or the baseline server, and waits until
    /// all are ready.
    pub async fn start(args: &RigArgs, max_connections: u32) -> anyhow::Result<Self> {
        Self::start_many(args, max_connections, 1).await
    }

    /// Like [`Rig::start`] with `gateways` gateways on one broker.
    pub async fn start_many(args: &RigArgs, max_connections: u32, gateways: usize) -> anyhow::Result<Self> {
        Self::start_inner(args, max_connections, gateways, 0).await
    }

    /// Like [`Rig::start`], with `count` more topics `{stream}-0` … `{stream}-{count-1}` created
    /// on the broker before the gateway starts (the gateway's topic directory then lists them
    /// all at once, instead of answering 404 for a few seconds after each is created).
    pub async fn start_with_numbered_topics(args: &RigArgs, max_connections: u32, count: u32) -> anyhow::Result<Self> {
        Self::start_inner(args, max_connections, 1, count).await
    }

    /// `gateways` gateways on one broker that also holds `numbered_topics` topics
    /// `{stream}-0` … (see [`Rig::start_with_numbered_topics`]).
    pub async fn start_gateways_with_numbered_topics(
        args: &RigArgs,
        max_connections: u32,
        gateways: usize,
        numbered_topics: u32,
    ) -> anyhow::Result<Self> {
        Self::start_inner(args, max_connections, gateways, numbered_topics).await
    }

    async fn start_inner(
        args: &RigArgs,
        max_connections: u32,
        gateways: usize,
        numbered_topics: u32,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.server == ServerKind::Gateway || args.auth == AuthMode::None,
            "--auth applies to the gateway; the baseline server has no access control"
        );
        let mode = args.auth;
        let auth = Arc::new(
            tokio::task::spawn_blocking(move || Auth::prepare(mode))
                .await
                .context("preparing the keys")??,
        );
        let http = reqwest::Client::builder()
            .no_proxy()
            .default_headers(auth.bench_headers()?)
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        if args.server == ServerKind::Baseline {
            anyhow::ensure!(
                gateways == 1,
                "the baseline server runs alone: this scenario needs gateways"
            );
            eprintln!("starting the baseline server…");
            let [addr] = free_loopback_ports()?;
            let exe = std::env::current_exe().context("locating this executable")?;
            let mut service = Service::spawn(
                &exe,
                &["baseline-server".to_owned(), "--listen".to_owned(), addr.to_string()],
                &[],
            )?;
            service.wait_ready(addr, args.ready_timeout).await?;
            return Ok(Self {
                kind: ServerKind::Baseline,
                broker: None,
                ingest: None,
                servers: vec![Server {
                    pid: service.pid(),
                    service: Some(service),
                    addr,
                    admin: addr,
                }],
                kafka_bootstrap: None,
                ingest_url: format!("http://{addr}"),
                stream: args.stream.clone(),
                partitions: None,
                auth,
                http,
            });
        }

        let binary = |given: &Option<PathBuf>, name| match given {
            Some(path) => Ok(path.clone()),
            None => sibling_binary(name),
        };
        eprintln!("starting the broker, ingest and {gateways} gateway(s)…");
        // The mock broker cannot answer CreateTopics and Sluice's clients never create a topic
        // by asking, so the bench runs a broker that creates the stream's topic first.
        let mut broker = Service::spawn(
            &std::env::current_exe().context("locating this executable")?,
            &[
                "broker".to_owned(),
                "--topic".to_owned(),
                args.stream.clone(),
                "--partitions".to_owned(),
                args.partitions.unwrap_or(4).to_string(),
                "--numbered-topics".to_owned(),
                numbered_topics.to_string(),
            ],
            &QUIET,
        )?;
        let kafka_bootstrap = broker.wait_kafka_bootstrap(args.ready_timeout).await?;

        let auth_env = auth.service_env();
        let env: Vec<(&str, &str)> = QUIET
            .iter()
            .copied()
            .chain(auth_env.iter().map(|(name, value)| (*name, value.as_str())))
            .collect();
        let [ingest_addr, ingest_admin] = free_loopback_ports()?;
        let mut ingest = Service::spawn(
            &binary(&args.ingest_binary, "sluice-ingest")?,
            &[
                "--kafka-brokers".to_owned(),
                kafka_bootstrap.clone(),
                "--listen".to_owned(),
                ingest_addr.to_string(),
                "--admin-listen".to_owned(),
                ingest_admin.to_string(),
            ],
            &env,
        )?;
        let mut servers = Vec::new();
        for _ in 0..gateways {
            let [addr, admin] = free_loopback_ports()?;
            let mut gateway_args = vec![
                "--kafka-brokers".to_owned(),
                kafka_bootstrap.clone(),
                "--listen".to_owned(),
                addr.to_string(),
                "--admin-listen".to_owned(),
                admin.to_string(),
                "--max-connections".to_owned(),
                max_connections.to_string(),
                // librdkafka's mock broker answers an empty fetch only after the full wait, even
                // when data arrives meanwhile (a real broker answers at once); a short wait keeps
                // that artefact out of the latency figures.
                "--kafka-config=fetch.wait.max.ms=5".to_owned(),
            ];
            gateway_args.extend(auth.gateway_args());
            gateway_args.extend(args.gateway_args.iter().cloned());
            let service = Service::spawn(&binary(&args.gateway_binary, "sluice-gateway")?, &gateway_args, &env)?;
            servers.push(Server {
                pid: service.pid(),
                service: Some(service),
                addr,
                admin,
            });
        }
        ingest.wait_ready(ingest_admin, args.ready_timeout).await?;
        for server in &mut servers {
            if let Some(service) = &mut server.service {
                service.wait_ready(server.admin, args.ready_timeout).await?;
            }
        }
        Ok(Self {
            kind: ServerKind::Gateway,
            broker: Some(broker),
            ingest: Some(ingest),
            servers,
            kafka_bootstrap: Some(kafka_bootstrap),
            ingest_url: format!("http://{ingest_addr}"),
            stream: args.stream.clone(),
            partitions: args.partitions,
            auth,
            http,
        })
    }

    /// The first server's SSE listener.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.servers[0].addr
    }

    /// Every server's SSE listener, in start order.
    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|server| server.addr).collect()
    }

    /// The URL events are POSTed to (ingest, or the baseline server).
    pub fn events_url(&self) -> String {
        self.events_url_of(&self.stream)
    }

    /// The URL events of `stream` are POSTed to.
    pub fn events_url_of(&self, stream: &str) -> String {
        format!("{}/v1/streams/{stream}/events", self.ingest_url)
    }

    /// Publishes one event that is not a probe, so the topic exists before anyone subscribes
    /// (the gateway answers 404 for a stream whose topic does not exist).
    pub async fn create_stream(&self) -> anyhow::Result<()> {
        let url = self.events_url();
        let response = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"key":"warmup","data":{"warmup":true}}"#)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("warm-up event: POST {url} answered {status}: {body}");
        }
        Ok(())
    }

    /// Opens one subscription on every server and checks it streams, so a broken server fails
    /// here with its own words rather than as thousands of identical failures; it also starts
    /// the stream's feed (Kafka consumer, ring) before the baseline memory is measured.
    pub async fn preflight_subscribe(&self, query: &str) -> anyhow::Result<()> {
        if self.auth.is_on() {
            self.ensure_anonymous_refused(query).await?;
        }
        for index in 0..self.servers.len() {
            self.preflight(index, &self.stream_path(query)).await?;
        }
        Ok(())
    }

    /// Opens `path` on server `index` and checks it answers `200` with an event stream.
    pub async fn preflight(&self, index: usize, path: &str) -> anyhow::Result<()> {
        let server = self.servers.get(index).context("no such server")?;
        let url = format!("http://{}{path}", server.addr);
        let response = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if status != reqwest::StatusCode::OK || !content_type.starts_with("text/event-stream") {
            let body = tokio::time::timeout(Duration::from_secs(2), response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            bail!("preflight GET {url}: {status} ({content_type}) {body}");
        }
        Ok(())
    }

    /// With `--auth` on, a figure means something only if the gateways do check tokens: each
    /// must answer a request without one with `401`.
    async fn ensure_anonymous_refused(&self, query: &str) -> anyhow::Result<()> {
        let anonymous = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building a client")?;
        for server in &self.servers {
            let url = format!("http://{}{}", server.addr, self.stream_path(query));
            let status = anonymous
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?
                .status();
            if status != reqwest::StatusCode::UNAUTHORIZED {
                bail!(
                    "--auth {}: GET {url} without a token answered {status}, not 401: this gateway \
                     does not check tokens, so the run would measure nothing of access control",
                    self.auth.mode().name()
                );
            }
        }
        Ok(())
    }

    /// Subscribes to the first server and returns the `id:` of the first event that arrives
    /// while `publish` runs: a real cursor, for a client that resumes from it later.
    pub async fn first_event_id(
        &self,
        query: &str,
        publish: impl std::future::Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<String> {
        let url = format!("http://{}{}", self.gateway_addr(), self.stream_path(query));
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(self.auth.bench_headers()?)
            .build()
            .context("building a client")?;
        let mut response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        anyhow::ensure!(response.status().is_success(), "GET {url}: {}", response.status());
        publish.await?;
        let mut parser = crate::sse_wire::SseParser::default();
        let read = async {
            while let Some(chunk) = response.chunk().await? {
                let mut found = None;
                parser.feed(&chunk, &mut |frame| {
                    if let crate::sse_wire::Frame::Event { id: Some(id), .. } = frame {
                        found.get_or_insert_with(|| String::from_utf8_lossy(id).into_owned());
                    }
                });
                if let Some(id) = found {
                    return Ok(id);
                }
            }
            bail!("GET {url}: the stream ended before an event arrived")
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .with_context(|| format!("GET {url}: no event within 20s"))?
    }

    /// The request path of a subscription with `query` (without `?`; may be empty).
    pub fn stream_path(&self, query: &str) -> String {
        if query.is_empty() {
            format!("/v1/streams/{}", self.stream)
        } else {
            format!("/v1/streams/{}?{query}", self.stream)
        }
    }

    /// Server `index`'s Prometheus exposition (`/metrics` on its admin listener).
    pub async fn metrics(&self, index: usize) -> Option<String> {
        let url = format!("http://{}/metrics", self.servers.get(index)?.admin);
        self.http.get(url).send().await.ok()?.text().await.ok()
    }

    /// `sluice_gateway_connections_active` of the first server.
    pub async fn connections_active(&self) -> Option<f64> {
        procfs::parse_metric(&self.metrics(0).await?, "sluice_gateway_connections_active")
    }

    /// The first server's process id.
    pub fn gateway_pid(&self) -> u32 {
        self.servers[0].pid
    }

    pub fn gateway_rss(&self) -> Option<u64> {
        self.server_rss(0)
    }

    /// Resident memory of server `index`.
    pub fn server_rss(&self, index: usize) -> Option<u64> {
        procfs::rss_bytes(self.servers.get(index)?.pid)
    }

    /// CPU time used so far by server `index`.
    pub fn server_cpu(&self, index: usize) -> Option<Duration> {
        procfs::cpu_time(self.servers.get(index)?.pid)
    }

    /// CPU time used so far by the first server, ingest and the broker.
    pub fn cpu(&self) -> ServiceCpu {
        ServiceCpu {
            gateway: self.server_cpu(0),
            ingest: self.ingest.as_ref().and_then(|ingest| procfs::cpu_time(ingest.pid())),
            broker: self.broker.as_ref().and_then(|broker| procfs::cpu_time(broker.pid())),
        }
    }

    /// SIGKILLs server `index`, as a crashing pod dies: no drain, sockets reset by the kernel.
    pub async fn kill_server(&mut self, index: usize) -> anyhow::Result<()> {
        let server = self.servers.get_mut(index).context("no such server")?;
        if let Some(service) = server.service.take() {
            service.stop().await?;
        }
        Ok(())
    }

    /// Fails if a service died (other than one killed on purpose).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        for service in [&mut self.broker, &mut self.ingest].into_iter().flatten() {
            service.ensure_running()?;
        }
        for server in &mut self.servers {
            if let Some(service) = &mut server.service {
                service.ensure_running()?;
            }
        }
        Ok(())
    }

    /// Stops every service, after showing what the servers logged (warnings and errors).
    pub async fn stop(self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        for server in self.servers.into_iter().filter_map(|server| server.service) {
            let output = server.tail();
            if !output.ends_with("it printed nothing") {
                eprintln!("server output (warnings and errors){output}");
            }
            outcome = outcome.and(server.stop().await);
        }
        for service in [self.ingest, self.broker].into_iter().flatten() {
            outcome = outcome.and(service.stop().await);
        }
        outcome
    }
}

/// CPU time of each service at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceCpu {
    pub gateway: Option<Duration>,
    pub ingest: Option<Duration>,
    pub broker: Option<Duration>,
}

/// CPU seconds spent between two readings, when both exist.
pub fn cpu_seconds(before: Option<Duration>, after: Option<Duration>) -> Option<f64> {
    Some(after?.saturating_sub(before?).as_secs_f64())
}

/// How the fleet is laid out.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// Servers to connect to: the first, then the next one after every loss.
    pub targets: Vec<SocketAddr>,
    /// Request path; `{i}` becomes the connection's global index.
    pub path: String,
    pub connections: u32,
    pub clients: ClientArgs,
    /// Payload lanes to track; 0 for idle connections.
    pub lanes: u32,
    /// The first lane number this fleet's streams carry (lanes `lane_offset..lane_offset + lanes`).
    pub lane_offset: u32,
    /// Each connection expects only its own lane (key-filtered subscriptions).
    pub lane_per_connection: bool,
    /// Account gaps and duplicates by cursor too (unfiltered streams).
    pub check_cursors: bool,
    /// Reconnect after losses, with pauses jittered over 0..this.
    pub reconnect_jitter: Option<Duration>,
    /// Every connection's first `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// How often holders report their counts.
    pub status_interval: Duration,
    /// When holders give up on their own.
    pub deadline: Duration,
    /// Mints each connection's token when access control is on.
    pub auth: Arc<Auth>,
}

impl FleetPlan {
    /// The common case: `connections` plain subscriptions to the rig's first server at `path`,
    /// with a token each when the rig's access control is on.
    pub fn new(rig: &Rig, path: String, connections: u32, clients: &ClientArgs, deadline: Duration) -> Self {
        Self {
            targets: rig.server_addrs(),
            path,
            connections,
            clients: clients.clone(),
            lanes: 0,
            lane_offset: 0,
            lane_per_connection: false,
            check_cursors: false,
            reconnect_jitter: None,
            last_event_id: None,
            status_interval: Duration::from_millis(500),
            deadline,
            auth: Arc::clone(&rig.auth),
        }
    }
}

/// Splits `total` into `parts` shares differing by at most one.
pub fn split_evenly(total: u32, parts: u32) -> Vec<u32> {
    (0..parts)
        .map(|index| total / parts + u32::from(index < total % parts))
        .collect()
}

/// The holder processes of a run.
#[derive(Debug)]
pub struct Fleet {
    holders: Vec<Holder>,
    total: u32,
}

#[derive(Debug)]
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    state: Arc<Mutex<HolderState>>,
}

#[derive(Debug, Default)]
struct HolderState {
    latest: HolderCounts,
    last: Option<HolderFinal>,
    stderr: Vec<String>,
}

impl Fleet {
    /// Spawns the holders; they start connecting at once.
    pub fn spawn(plan: &FleetPlan) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let processes = plan.clients.client_processes.min(plan.connections.max(1));
        let shares = split_evenly(plan.connections, processes);
        if let Some(&largest) = shares.iter().max() {
            if largest > MAX_CONNECTIONS_PER_PROCESS {
                bail!(
                    "{largest} connections in one helper process exceed the {MAX_CONNECTIONS_PER_PROCESS} \
                     a process can hold: raise --client-processes"
                );
            }
        }
        let source_addrs = plan
            .clients
            .source_addrs
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let targets = plan
            .targets
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let tokens = if plan.auth.is_on() {
            eprintln!("minting {} tokens ({})…", plan.connections, plan.auth.mode().name());
            tokio::task::block_in_place(|| plan.auth.connection_tokens(0, plan.connections))?
        } else {
            Vec::new()
        };
        let mut holders = Vec::new();
        let mut index_offset = 0;
        for (index, &share) in shares.iter().enumerate() {
            // Each holder ramps at its share of the rate, so together they ramp at the total.
            let ramp = f64::from(plan.clients.ramp_rate) * f64::from(share) / f64::from(plan.connections.max(1));
            let mut command = Command::new(&exe);
            command
                .arg("hold")
                .args(["--target", &targets])
                .args(["--path", &plan.path])
                .args(["--index-offset", &index_offset.to_string()])
                .args(["--connections", &share.to_string()])
                .args(["--ramp-rate", &ramp.max(0.1).to_string()])
                // Rotate the source addresses so holders don't all start on the same one.
                .args(["--source-addrs", &rotate_list(&source_addrs, index)])
                .args(["--connect-timeout", &millis(plan.clients.connect_timeout)])
                .args(["--lanes", &plan.lanes.to_string()])
                .args(["--lane-offset", &plan.lane_offset.to_string()])
                .args(["--status-interval", &millis(plan.status_interval)])
                .args(["--deadline", &millis(plan.deadline)]);
            if plan.lane_per_connection {
                command.arg("--lane-per-connection");
            }
            if plan.check_cursors {
                command.arg("--check-cursors");
            }
            if let Some(jitter) = plan.reconnect_jitter {
                command.args(["--reconnect", "--reconnect-jitter", &millis(jitter)]);
            }
            if let Some(id) = &plan.last_event_id {
                command.args(["--last-event-id", id]);
            }
            if let Some(file) = plan.auth.token_file(&format!("tokens-{index}")) {
                let first = index_offset as usize;
                let mine = tokens
                    .get(first..first + share as usize)
                    .context("a token per connection")?;
                std::fs::write(&file, mine.join("\n")).with_context(|| format!("writing {}", file.display()))?;
                command.arg("--tokens-file").arg(&file);
            }
            index_offset += share;
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("spawning {} hold", exe.display()))?;
            let pid = child.id().context("a holder has no process id")?;
            let state = Arc::new(Mutex::new(HolderState::default()));
            let stdout = child.stdout.take().context("holder stdout")?;
            let stderr = child.stderr.take().context("holder stderr")?;
            tokio::spawn(read_messages(stdout, Arc::clone(&state)));
            tokio::spawn(read_stderr(stderr, Arc::clone(&state)));
            holders.push(Holder {
                stdin: child.stdin.take(),
                child,
                pid,
                state,
            });
        }
        Ok(Self {
            holders,
            total: plan.connections,
        })
    }

    /// The latest counts, summed over holders.
    pub fn counts(&self) -> HolderCounts {
        let mut sum = HolderCounts::default();
        for holder in &self.holders {
            sum.add(&lock(&holder.state).latest);
        }
        sum
    }

    /// CPU time used so far by all holders.
    pub fn cpu(&self) -> Option<Duration> {
        self.holders.iter().map(|holder| procfs::cpu_time(holder.pid)).sum()
    }

    /// Fails if a holder exited before being told to stop.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        for holder in &mut self.holders {
            if let Some(status) = holder.child.try_wait().context("checking a holder")? {
                let stderr = lock(&holder.state).stderr.join("\n  | ");
                bail!("a holder process exited early ({status}); its stderr:\n  | {stderr}");
            }
        }
        Ok(())
    }

    /// Waits until every connection is established or has failed, printing progress each
    /// second; returns how long the ramp took.
    pub async fn wait_established(&mut self, rig: &mut Rig, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(200));
        let mut next_print = start + Duration::from_secs(1);
        loop {
            ticks.tick().await;
            self.ensure_running()?;
            rig.ensure_running()?;
            let counts = self.counts();
            let now = Instant::now();
            if counts.established + counts.failed >= u64::from(self.total) {
                eprintln!(
                    "  ramp done in {:.1}s: {} established, {} failed",
                    (now - start).as_secs_f64(),
                    format_count(counts.established),
                    format_count(counts.failed)
                );
                return Ok(now - start);
            }
            if now >= next_print {
                next_print += Duration::from_secs(1);
                eprintln!(
                    "  ramp {:>3}s: {:>7} established, {} failed, gateway RSS {}",
                    (now - start).as_secs(),
                    format_count(counts.established),
                    format_count(counts.failed),
                    rig.gateway_rss().map_or("?".to_owned(), format_bytes),
                );
            }
            if now - start > timeout {
                bail!(
                    "ramp incomplete after {timeout:?}: {} of {} connections resolved",
                    counts.established + counts.failed,
                    self.total
                );
            }
        }
    }

    /// Tells every holder to stop (with the per-lane published counts), collects their final
    /// reports and merges them.
    pub async fn stop(mut self, published: &[u64]) -> anyhow::Result<Tally> {
        let command = format!(
            "stop {}\n",
            serde_json::to_string(published).expect("numbers serialise")
        );
        for holder in &mut self.holders {
            if let Some(mut stdin) = holder.stdin.take() {
                // A holder that already died shows up as a missing final report below.
                let _ = stdin.write_all(command.as_bytes()).await;
                let _ = stdin.flush().await;
            }
        }
        let mut merged = Tally::default();
        for holder in &mut self.holders {
            let waited = tokio::time::timeout(Duration::from_secs(20), holder.child.wait()).await;
            if waited.is_err() {
                let _ = holder.child.start_kill();
                let _ = holder.child.wait().await;
            }
            // The stdout reader may still be taking in the final line just after exit.
            let mut last = None;
            for _ in 0..20 {
                last = lock(&holder.state).last.take();
                if last.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            match last {
                Some(last) => merged.absorb(last),
                None => {
                    let stderr = lock(&holder.state).stderr.join("\n  | ");
                    bail!("a holder process ended without a final report; its stderr:\n  | {stderr}");
                }
            }
        }
        Ok(merged)
    }
}

impl Fleet {
    /// After publishing: waits until `expected` bench events were delivered, deliveries stall
    /// for 2 s, or `limit` passes; returns how long it waited.
    pub async fn drain(&self, expected: u64, limit: Duration) -> Duration {
        drain_fleets(&[self], expected, limit).await
    }
}

/// [`Fleet::drain`] over several fleets: `expected` deliveries in total.
pub async fn drain_fleets(fleets: &[&Fleet], expected: u64, limit: Duration) -> Duration {
    let received = || fleets.iter().map(|fleet| fleet.counts().probes).sum::<u64>();
    let start = Instant::now();
    let mut last = (received(), start);
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    loop {
        ticks.tick().await;
        let received = received();
        let now = Instant::now();
        if received >= expected || now - start >= limit {
            return now - start;
        }
        if received > last.0 {
            last = (received, now);
        } else if now - last.1 >= Duration::from_secs(2) {
            return now - start;
        }
    }
}

/// Runs `publisher` to the end, printing events sent, deliveries and open connections once a
/// second, and failing as soon as a service dies.
pub async fn publish_with_progress(
    rig: &mut Rig,
    fleet: Option<&Fleet>,
    publisher: Publisher,
) -> anyhow::Result<Published> {
    let sent = publisher.progress();
    let mut run = tokio::spawn(publisher.run());
    let start = Instant::now();
    let mut ticks = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let counts = || fleet.map(Fleet::counts).unwrap_or_default();
    let mut printed = (0, counts().probes);
    loop {
        tokio::select! {
            done = &mut run => return done.context("the publisher task failed"),
            _ = ticks.tick() => {
                rig.ensure_running()?;
                let counts = counts();
                let events = sent.load(std::sync::atomic::Ordering::Relaxed);
                eprintln!(
                    "  publish {:>3}s: {:>7} events/s sent, {:>10} deliveries/s, {} open",
                    start.elapsed().as_secs(),
                    format_count(events - printed.0),
                    format_count(counts.probes - printed.1),
                    format_count(counts.open()),
                );
                printed = (events, counts.probes);
            }
        }
    }
}

/// A duration as a `hold` flag value, in whole milliseconds.
fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

fn lock(state: &Mutex<HolderState>) -> std::sync::MutexGuard<'_, HolderState> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `a,b,c` rotated left by `by`: `b,c,a` for 1.
fn rotate_list(list: &str, by: usize) -> String {
    let mut items: Vec<&str> = list.split(',').collect();
    if !items.is_empty() {
        let len = items.len();
        items.rotate_left(by % len);
    }
    items.join(",")
}

async fn read_messages(stdout: tokio::process::ChildStdout, state: Arc<Mutex<HolderState>>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<HolderMessage>(&line) {
            Ok(HolderMessage::Status(counts)) => lock(&state).latest = counts,
            Ok(HolderMessage::Final(last)) => {
                let mut state = lock(&state);
                state.latest = last.counts;
                state.last = Some(*last);
            }
            Err(_) => lock(&state).stderr.push(format!("(stdout) {line}")),
        }
    }
}

async fn read_stderr(stderr: tokio::process::ChildStderr, state: Arc<Mutex<HolderState>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut state = lock(&state);
        if state.stderr.len() < 50 {
            state.stderr.push(line);
        }
    }
}

impl Tally {
    fn absorb(&mut self, last: HolderFinal) {
        self.counts.add(&last.counts);
        self.gaps += last.gaps;
        self.missing_tail += last.missing_tail;
        self.duplicates += last.duplicates;
        self.unknown_lane += last.unknown_lane;
        self.cursor_gaps += last.cursor_gaps;
        self.cursor_duplicates += last.cursor_duplicates;
        self.cursor_unreadable += last.cursor_unreadable;
        add_pairs(&mut self.latency, &last.latency_us);
        add_pairs(&mut self.outage, &last.outage_us);
        for (kind, sample) in last.errors {
            self.errors
                .entry(kind)
                .and_modify(|ours| ours.count += sample.count)
                .or_insert(sample);
        }
    }

    /// One line per error kind: count, kind, first example.
    pub fn error_lines(&self) -> String {
        crate::hold::error_lines(&self.errors)
    }
}

/// The `--json` document's common part: what ran, where, on what, how loaded.
#[derive(Debug, Serialize)]
pub struct JsonHeader<'a> {
    pub tool: &'static str,
    pub version: &'static str,
    pub scenario: &'a str,
    /// The command line of this run, as typed.
    pub command: String,
    pub server: ServerKind,
    /// `--auth`: how the services checked callers.
    pub auth: AuthMode,
    pub machine: &'a Machine,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started and when it ended: on a shared
    /// machine, how much else competed for the CPUs.
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    pub kafka_bootstrap: Option<&'a str>,
    pub servers: Vec<String>,
}

/// What every scenario notes before it starts, for its report.
#[derive(Debug)]
pub struct RunStart {
    pub machine: Machine,
    pub load_average: Option<[f64; 3]>,
}

impl RunStart {
    pub fn now() -> Self {
        Self {
            machine: Machine::detect(),
            load_average: procfs::load_average(),
        }
    }
}

/// Writes a scenario's JSON document: the common header, its settings and its results.
pub fn write_report(
    path: &std::path::Path,
    scenario: &str,
    start: &RunStart,
    rig: &Rig,
    settings: serde_json::Value,
    results: &impl Serialize,
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Report<'a, R> {
        #[serde(flatten)]
        header: JsonHeader<'a>,
        settings: serde_json::Value,
        results: &'a R,
    }
    let report = Report {
        header: JsonHeader {
            tool: "sluice-bench",
            version: env!("CARGO_PKG_VERSION"),
            scenario,
            command: command_line(),
            server: rig.kind,
            auth: rig.auth.mode(),
            machine: &start.machine,
            load_average_start: start.load_average,
            load_average_end: procfs::load_average(),
            kafka_bootstrap: rig.kafka_bootstrap.as_deref(),
            servers: rig.server_addrs().iter().map(|addr| format!("http://{addr}")).collect(),
        },
        settings,
        results,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_json(path, &report)
}

/// This process's command line, program name shortened to `sluice-bench`.
pub fn command_line() -> String {
    std::iter::once("sluice-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report's opening lines.
pub fn header(scenario: &str, start: &RunStart, rig: &Rig, workload: &str) -> String {
    let target =
        match rig.kind {
            ServerKind::Gateway => format!(
            "sluice-gateway at {} (own process{}), sluice-ingest at {}, mock Kafka at {}{}; all spawned by the bench",
            rig.server_addrs().iter().map(|addr| format!("http://{addr}")).collect::<Vec<_>>().join(", "),
            if rig.server_addrs().len() > 1 { "es" } else { "" },
            rig.ingest_url,
            rig.kafka_bootstrap.as_deref().unwrap_or("?"),
            rig.partitions.map_or(String::new(), |p| format!(" (topic created with {p} partitions)")),
        ),
            ServerKind::Baseline => format!(
                "sluice-bench baseline-server at http://{} (bare tokio SSE writer, no Kafka): the machine's floor",
                rig.gateway_addr()
            ),
        };
    let load = start.load_average.map_or("?".to_owned(), |[one, five, fifteen]| {
        format!("{one:.2} {five:.2} {fifteen:.2}")
    });
    let auth = match rig.auth.mode() {
        AuthMode::None => "none: the services run with SLUICE_ALLOW_ANONYMOUS=true".to_owned(),
        mode => format!(
            "{}: a token per connection as Authorization: Bearer, on every (re)connect",
            mode.name()
        ),
    };
    format!(
        "sluice-bench {} — {scenario}\nmachine   {}\nload avg  {load} (1/5/15 min, at start)\n\
         target    {target}\n          load generator and servers share this machine and its {} \
         logical CPUs: the figures measure them together\nauth      {auth}\nworkload  {workload}\n",
        env!("CARGO_PKG_VERSION"),
        start.machine,
        start.machine.logical_cpus,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::ErrorSample;

    #[test]
    fn splits_connections_evenly() {
        assert_eq!(split_evenly(10_000, 2), [5_000, 5_000]);
        assert_eq!(split_evenly(10, 3), [4, 3, 3]);
        assert_eq!(split_evenly(1, 2), [1, 0]);
        assert_eq!(split_evenly(7, 1), [7]);
    }

    #[test]
    fn rotates_source_addresses() {
        assert_eq!(rotate_list("a,b,c", 0), "a,b,c");
        assert_eq!(rotate_list("a,b,c", 1), "b,c,a");
        assert_eq!(rotate_list("a,b,c", 4), "b,c,a");
    }

    #[test]
    fn merges_final_reports() {
        let mut merged = Tally::default();
        for (gaps, example) in [(2, "first"), (3, "second")] {
            let mut errors = std::collections::BTreeMap::new();
            errors.insert(
                "http 503".to_owned(),
                ErrorSample {
                    count: 4,
                    example: example.to_owned(),
                },
            );
            merged.absorb(HolderFinal {
                counts: HolderCounts {
                    established: 10,
                    events: 100,
                    ..HolderCounts::default()
                },
                gaps,
                latency_us: vec![(1_000, 5)],
                errors,
                ..HolderFinal::default()
            });
        }
        assert_eq!(merged.counts.established, 20);
        assert_eq!(merged.counts.events, 200);
        assert_eq!(merged.gaps, 5);
        assert_eq!(merged.latency.len(), 10);
        assert_eq!(merged.errors["http 503"].count, 8);
        assert_eq!(merged.errors["http 503"].example, "first");
    }
}
