//! The dashboards and Prometheus rules that ship (deploy/observability) against the services
//! that export the metrics: every PromQL expression parses (promql-parser, not a regex), every
//! metric it names is in a running `sluice-gateway`'s or `sluice-ingest`'s `/metrics` (or is a
//! recording rule of the same file, or one of the series Prometheus makes itself), dashboards are
//! valid JSON with unique panel ids and a datasource variable, and every alert's runbook link
//! lands on a section of docs/operations.md.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::{json, Value};
use sluice_testkit::process::ServiceProcess;
use sluice_testkit::{SseStream, TestKafka};

const WAIT: Duration = Duration::from_secs(60);

/// Series Prometheus makes itself: no service exports them.
const PROMETHEUS_SERIES: &[&str] = &["up", "ALERTS"];

fn observability_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability")
}

fn dashboard_paths() -> Vec<PathBuf> {
    let dir = observability_dir().join("grafana/dashboards");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
}

fn rules() -> Value {
    let path = observability_dir().join("prometheus/sluice-rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rule_list(rules: &Value) -> impl Iterator<Item = &Value> {
    rules["groups"]
        .as_array()
        .expect("rules: groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("group: rules"))
}

/// Every PromQL expression that ships, with where it comes from.
#[derive(Debug, Default)]
struct Shipped {
    /// (where, PromQL)
    queries: Vec<(String, String)>,
    /// Names the rules record: they exist once Prometheus evaluates the rules.
    recorded: HashSet<String>,
}

fn shipped() -> Shipped {
    let mut shipped = Shipped::default();
    for rule in rule_list(&rules()) {
        let name = rule["record"]
            .as_str()
            .or(rule["alert"].as_str())
            .expect("rule: record or alert");
        if rule["record"].is_string() {
            shipped.recorded.insert(name.to_owned());
        }
        let expr = rule["expr"].as_str().unwrap_or_else(|| panic!("rule {name}: expr"));
        shipped.queries.push((format!("rule {name}"), expr.to_owned()));
    }
    for path in dashboard_paths() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
        for (title, expr) in dashboard_queries(&dashboard) {
            shipped.queries.push((format!("{file}: {title}"), expr));
        }
    }
    shipped
}

/// The PromQL of a dashboard: panel targets and the selectors of `label_values(…)` variables.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push((format!("panel {title:?}"), expr.to_owned()));
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or("");
        if let Some(args) = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
            // label_values(selector, label): the selector is PromQL, the label is not.
            let selector = args.rsplit_once(',').map_or(args, |(selector, _)| selector);
            queries.push((format!("variable {}", variable["name"]), selector.to_owned()));
        }
    }
    queries
}

/// Grafana's variables are not PromQL: stand-ins that parse the same way (`$__rate_interval`
/// is a duration, every other variable sits in a label matcher's string).
fn without_grafana_variables(expr: &str) -> String {
    let mut text = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    while let Some(start) = text.find('$') {
        let rest = &text[start + 1..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '{' || c == '}'))
            .unwrap_or(rest.len());
        text.replace_range(start..start + 1 + len, "x");
    }
    text
}

/// The names of the Grafana variables an expression uses (`$name` or `${name}`).
fn grafana_variables(expr: &str) -> Vec<String> {
    expr.split('$')
        .skip(1)
        .map(|rest| {
            let rest = rest.strip_prefix('{').unwrap_or(rest);
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[derive(Debug, Default)]
struct MetricNames(BTreeSet<String>);

impl ExprVisitor for MetricNames {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        let selector = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(name) = selector.and_then(|vs| vs.name.as_ref()) {
            self.0.insert(name.clone());
        }
        Ok(true)
    }
}

/// Parses every query; returns the metric names they select, or what failed to parse.
fn metric_names(queries: &[(String, String)]) -> Result<BTreeSet<String>, Vec<String>> {
    let mut names = MetricNames::default();
    let mut errors = Vec::new();
    for (place, expr) in queries {
        match parser::parse(&without_grafana_variables(expr)) {
            Ok(ast) => {
                walk_expr(&mut names, &ast).unwrap();
            }
            Err(e) => errors.push(format!("{place}: {e}\n    {expr}")),
        }
    }
    if errors.is_empty() {
        Ok(names.0)
    } else {
        Err(errors)
    }
}

/// The sample names and declared families of a Prometheus/OpenMetrics text exposition.
#[derive(Debug, Default)]
struct Exposition {
    samples: HashSet<String>,
    families: HashSet<String>,
}

impl Exposition {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(family) = rest.split_whitespace().next() {
                    self.families.insert(family.to_owned());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                self.samples.insert(line[..end].to_owned());
            }
        }
    }

    /// A name a query selects is exported when a sample carries it, or its family is declared
    /// (a labelled family with no sample yet on this pod still exists).
    fn exports(&self, name: &str) -> bool {
        self.samples.contains(name)
            || self.families.contains(name)
            || ["_total", "_bucket", "_count", "_sum"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|family| self.families.contains(family))
            })
    }
}

/// The names the shipped queries select that neither a service nor the rules provide.
fn unknown_metrics(names: &BTreeSet<String>, recorded: &HashSet<String>, exposition: &Exposition) -> Vec<String> {
    names
        .iter()
        .filter(|name| !recorded.contains(*name) && !PROMETHEUS_SERIES.contains(&name.as_str()))
        .filter(|name| !exposition.exports(name))
        .cloned()
        .collect()
}

#[test]
fn every_shipped_promql_expression_parses() {
    let shipped = shipped();
    assert!(shipped.queries.len() > 40, "few queries found: {:?}", shipped.queries);
    if let Err(errors) = metric_names(&shipped.queries) {
        panic!("{} expression(s) do not parse:\n{}", errors.len(), errors.join("\n"));
    }
    // The parser is a real one: a broken expression is refused.
    let broken = [("broken".to_owned(), "sum by (job (rate(x[5m]))".to_owned())];
    assert!(metric_names(&broken).is_err());
}

#[test]
fn dashboards_are_json_with_unique_panel_ids_and_a_datasource_variable() {
    let paths = dashboard_paths();
    let files: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    for wanted in ["sluice-overview.json", "sluice-oncall.json", "sluice-debug.json"] {
        assert!(files.iter().any(|f| f == wanted), "{wanted} missing: {files:?}");
    }
    let mut uids = HashSet::new();
    for path in &paths {
        let file = path.display();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
        assert!(uids.insert(
            dashboard["uid"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no uid"))
                .to_owned()
        ));
        let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
        assert!(
            variables
                .iter()
                .any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"),
            "{file}: no Prometheus datasource variable named `datasource`"
        );
        let defined: HashSet<&str> = variables.iter().filter_map(|v| v["name"].as_str()).collect();
        for (place, expr) in dashboard_queries(&dashboard) {
            for used in grafana_variables(&expr) {
                assert!(
                    used.starts_with("__") || defined.contains(used.as_str()),
                    "{file}: {place} uses ${used}, which no variable defines"
                );
            }
        }
        let panels = dashboard["panels"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: no panels"));
        let mut ids = HashSet::new();
        for panel in panels {
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: a panel without an id: {panel}"));
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            if panel["type"] != "row" {
                assert_eq!(
                    panel["datasource"]["uid"], "${datasource}",
                    "{file}: panel {} does not use the datasource variable",
                    panel["title"]
                );
                assert!(
                    panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "{file}: {panel}"
                );
            }
        }
    }
}

#[test]
fn every_alert_has_a_runbook_section_in_operations_md() {
    let operations = std::fs::read_to_string(observability_dir().join("../../docs/operations.md")).unwrap();
    // GitHub's anchors of the headings: lower case, spaces as `-`, punctuation dropped.
    let anchors: HashSet<String> = operations
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let rules = rules();
    let alerts: Vec<&Value> = rule_list(&rules).filter(|r| r["alert"].is_string()).collect();
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for alert in alerts {
        let name = alert["alert"].as_str().unwrap();
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let (page, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: {url} has no anchor"));
        assert!(page.ends_with("/docs/operations.md"), "{name}: {url}");
        assert!(
            anchors.contains(anchor),
            "{name}: no heading of docs/operations.md has the anchor #{anchor}"
        );
        assert!(alert["labels"]["severity"].is_string(), "{name}: no severity");
    }
}

#[test]
fn a_metric_no_service_exports_is_reported() {
    let mut exposition = Exposition::default();
    exposition.add("# TYPE sluice_gateway_resumes counter\nsluice_gateway_connections_active 3\n");
    let queries = [(
        "panel".to_owned(),
        "sum(rate(sluice_gateway_resumes_total[$__rate_interval])) / sluice_gateway_connections_active \
         + sluice_gateway_made_up{job=~\"$gateway_job\"} + job:recorded:ratio + up"
            .to_owned(),
    )];
    let names = metric_names(&queries).unwrap();
    let recorded = HashSet::from(["job:recorded:ratio".to_owned()]);
    assert_eq!(
        unknown_metrics(&names, &recorded, &exposition),
        ["sluice_gateway_made_up"]
    );
}

/// Traffic that makes the labelled families appear: a live delivery, a resume, a refused
/// stream, a disconnect, tokens that do not verify, an ingest 2xx and 4xx.
async fn exercise(kafka: &TestKafka, ingest: &ServiceProcess, gateway: &ServiceProcess) -> String {
    let topic = kafka.unique_topic("observability");
    kafka.create_topic(&topic, 1).await.unwrap();
    let http = reqwest::Client::new();
    let stream_url = format!("http://{}/v1/streams/{topic}", gateway.listen);
    let events_url = format!("http://{}/v1/streams/{topic}/events", ingest.listen);
    let mut live = SseStream::connect(&http, &stream_url, None).await.unwrap();
    let publish = |body: Value| {
        http.post(&events_url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(publish(json!([{"data": {"n": 1}}])).await.unwrap().status(), 200);
    let first = live.next_event(WAIT).await.unwrap();
    drop(live);
    let mut resumed = SseStream::connect(&http, &stream_url, first.id.as_deref())
        .await
        .unwrap();
    assert_eq!(publish(json!([{"data": {"n": 2}}])).await.unwrap().status(), 200);
    resumed.next_event(WAIT).await.unwrap();
    drop(resumed);
    let polled = http.get(format!("{stream_url}/poll")).send().await.unwrap();
    assert_eq!(polled.status(), 200);
    assert_eq!(publish(json!("not an array of events")).await.unwrap().status(), 400);
    let refused = http
        .get(format!("{stream_url}?lastEventId=not-a-cursor"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // Anonymous access is allowed, but a token that is sent must verify.
    for request in [http.get(&stream_url), http.post(&events_url)] {
        let response = request.bearer_auth("not-a-jwt").send().await.unwrap();
        assert_eq!(response.status(), 401, "{}", response.url());
    }
    topic
}

/// With the brokers down, a publish times out: a 503 and an event Kafka did not acknowledge.
async fn publish_while_kafka_is_down(kafka: &TestKafka, ingest: &ServiceProcess, topic: &str) {
    kafka.set_brokers_up(false).unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/streams/{topic}/events", ingest.listen))
        .header("content-type", "application/json")
        .body(json!([{"data": {"n": 3}}]).to_string())
        .send()
        .await
        .unwrap();
    kafka.set_brokers_up(true).unwrap();
    assert_eq!(response.status(), 503);
}

/// The sum of every sample named `name` (all label sets) in an exposition text.
fn sample_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(admin: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_metric_the_dashboards_and_rules_name_is_in_a_running_services_metrics() {
    let shipped = shipped();
    let names = metric_names(&shipped.queries).expect("every expression parses");
    let kafka = TestKafka::start().await.unwrap();
    let brokers = kafka.bootstrap_servers();
    let ingest = ServiceProcess::start("sluice-ingest", brokers, &["--produce-timeout=1s"], WAIT)
        .await
        .unwrap();
    let gateway = ServiceProcess::start("sluice-gateway", brokers, &["--consumer-lag-interval=1s"], WAIT)
        .await
        .unwrap();
    let topic = exercise(&kafka, &ingest, &gateway).await;
    let mut expected_missing = Vec::new();
    if kafka.supports_fault_injection() {
        publish_while_kafka_is_down(&kafka, &ingest, &topic).await;
    } else {
        // Only the embedded broker can be taken down: no failed event to count on another one.
        expected_missing.push("sluice_ingest_events_failed_total".to_owned());
    }

    // Disconnects are counted when the gateway notices the dropped streams; lag at its interval.
    let gateway_text = sluice_testkit::eventually("the gateway's disconnects and lag", WAIT, || async {
        let text = scrape(gateway.admin).await;
        (text.contains("sluice_gateway_disconnects_total{") && text.contains("sluice_gateway_consumer_lag{"))
            .then_some(text)
    })
    .await
    .unwrap();
    let mut exposition = Exposition::default();
    exposition.add(&gateway_text);
    exposition.add(&scrape(ingest.admin).await);

    // The SLIs' series carry samples, not only declarations.
    for sample in [
        "sluice_gateway_connection_attempts_total",
        "sluice_gateway_connections_rejected_total",
        "sluice_gateway_resumes_total",
        "sluice_gateway_delivery_latency_seconds_bucket",
        "sluice_gateway_connections_limit",
        "sluice_ingest_requests_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            exposition.samples.contains(sample),
            "no {sample} sample in\n{gateway_text}"
        );
    }
    // Two streams opened, two refused (a bad cursor, a bad token): every one was an attempt.
    let total = |name: &str| sample_sum(&gateway_text, name);
    assert_eq!(total("sluice_gateway_connections_opened_total"), 2.0);
    assert_eq!(total("sluice_gateway_connections_rejected_total"), 2.0);
    assert_eq!(total("sluice_gateway_connection_attempts_total"), 4.0);
    let unknown = unknown_metrics(&names, &shipped.recorded, &exposition);
    assert_eq!(
        unknown, expected_missing,
        "dashboards or rules name metrics no running service exports"
    );
    assert!(names.len() > 15, "{names:?}");
}
