//! Access control of `GET /v1/streams/{stream}`: `sluice-gateway` in-process on port 0 with
//! the test kit's keys and Kafka, tokens minted by `sluice_testkit::auth`, streams read with
//! the reference SSE parser. One test runs the real binary and scans everything it logged for
//! the tokens it was sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sluice_auth::AuthArgs;
use sluice_gateway::GatewayConfig;
use sluice_testkit::auth::{TestKey, TestToken};
use sluice_testkit::sse::Next;
use sluice_testkit::{RunningService, SseStream};

mod support;

use support::{client, data, open_with_headers as open, read_n, Fixture, WAIT};

const ALLOWED_ORIGIN: &str = "http://app.example";

impl Fixture {
    /// A gateway verifying HS256 (the test secret), RS256, ES256 and EdDSA (the test public
    /// keys), without anonymous access.
    async fn auth_gateway(&self, tweak: impl FnOnce(&mut GatewayConfig)) -> RunningService {
        self.gateway(|config| {
            config.auth = auth_args();
            config.cors.allow_origins = vec![ALLOWED_ORIGIN.into()];
            tweak(config);
        })
        .await
    }
}

fn auth_args() -> AuthArgs {
    AuthArgs {
        jwt_hmac_secret_file: Some(TestKey::Hmac.verify_file()),
        jwt_public_key_file: [TestKey::Rsa, TestKey::EcP256, TestKey::Ed25519]
            .iter()
            .map(|k| k.verify_file())
            .collect(),
        allow_anonymous: false,
        ..AuthArgs::anonymous()
    }
}

/// A token of `sub` allowed to subscribe to `entries`.
fn token(key: TestKey, sub: &str, entries: Value) -> String {
    TestToken::new(key).subject(sub).subscribe(entries).mint()
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

fn cookie(token: &str) -> Vec<(&'static str, String)> {
    vec![("cookie", format!("theme=dark; sluice_token={token}"))]
}

/// A request that must be refused: its status, `WWW-Authenticate`, `Retry-After` and
/// error code.
struct Refusal {
    status: u16,
    www_authenticate: Option<String>,
    retry_after: Option<String>,
    code: String,
}

async fn refused(gateway: &RunningService, path: &str, headers: &[(&'static str, String)]) -> Refusal {
    let response = client(headers).get(gateway.url(path)).send().await.unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (www_authenticate, retry_after) = (header("www-authenticate"), header("retry-after"));
    let status = response.status().as_u16();
    assert_ne!(status, 200, "GET {path} was let in");
    let body: Value = response.json().await.unwrap();
    Refusal {
        status,
        www_authenticate,
        retry_after,
        code: body["error"]["code"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_forged_and_expired_tokens_are_401_and_counted_by_reason() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("auth", 1).await;
    let gateway = f.auth_gateway(|_| {}).await;
    let path = format!("/v1/streams/{topic}");
    let grant = json!([topic]);
    let forged = token(TestKey::Rsa2, "mallory", grant.clone());
    let expired = TestToken::new(TestKey::Hmac)
        .subscribe(grant.clone())
        .expires_in(-3600)
        .mint();
    for (what, headers) in [
        ("missing", vec![]),
        ("malformed", bearer("not-a-jwt")),
        ("bad_signature", bearer(&forged)),
        ("expired", bearer(&expired)),
    ] {
        let refusal = refused(&gateway, &path, &headers).await;
        assert_eq!(refusal.status, 401, "{what}");
        assert_eq!(refusal.code, "unauthenticated", "{what}");
        assert_eq!(refusal.www_authenticate.as_deref(), Some("Bearer"), "{what}");
        gateway
            .wait_for_metric(
                &format!("sluice_gateway_auth_failures_total{{reason=\"{what}\"}} 1"),
                WAIT,
            )
            .await
            .unwrap();
    }
    // No token, no stream: not even whether a stream exists.
    let unknown = refused(&gateway, "/v1/streams/no-such-stream", &[]).await;
    assert_eq!((unknown.status, unknown.code.as_str()), (401, "unauthenticated"));
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_keys_not_granted_are_403() {
    let f = Fixture::start().await;
    let (granted, other) = (
        f.topic_with_prefix("auth", 1).await,
        f.topic_with_prefix("auth", 1).await,
    );
    let gateway = f.auth_gateway(|_| {}).await;
    let whole = token(TestKey::Hmac, "alice", json!([granted]));
    let refusal = refused(&gateway, &format!("/v1/streams/{other}"), &bearer(&whole)).await;
    assert_eq!((refusal.status, refusal.code.as_str()), (403, "forbidden"));
    assert_eq!(refusal.www_authenticate, None);

    let keyed = token(TestKey::Hmac, "bob", json!([{"stream": granted, "keys": ["k1"]}]));
    let refusal = refused(
        &gateway,
        &format!("/v1/streams/{granted}?key=k1&key=k2"),
        &bearer(&keyed),
    )
    .await;
    assert_eq!((refusal.status, refusal.code.as_str()), (403, "forbidden"));
    gateway
        .wait_for_metric("sluice_gateway_auth_failures_total{reason=\"forbidden\"} 2", WAIT)
        .await
        .unwrap();
    // The granted key itself is fine.
    open(&gateway, &format!("/v1/streams/{granted}?key=k1"), &bearer(&keyed)).await;
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_token_sees_only_its_keys_without_asking() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("auth", 4).await;
    f.publish_untyped(&topic, "old", 40, 4).await;
    let gateway = f.auth_gateway(|_| {}).await;
    let keyed = token(TestKey::Hmac, "carol", json!([{"stream": topic, "keys": ["k1", "k3"]}]));
    let mut stream = open(&gateway, &format!("/v1/streams/{topic}?from=earliest"), &bearer(&keyed)).await;
    let mut old = data(&read_n(&mut stream, 20).await);
    old.sort();
    let mut want: Vec<String> = (0..40).filter(|i| i % 2 == 1).map(|i| format!("old-{i}")).collect();
    want.sort();
    assert_eq!(old, want, "history: keys k1 and k3 only");

    f.publish_untyped(&topic, "new", 8, 4).await;
    let mut live = data(&read_n(&mut stream, 4).await);
    live.sort();
    assert_eq!(live, ["new-1", "new-3", "new-5", "new-7"], "live: keys k1 and k3 only");
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_the_header_the_cookie_or_access_token_in_every_algorithm() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("auth", 1).await;
    f.publish_untyped(&topic, "e", 1, 1).await;
    let gateway = f.auth_gateway(|_| {}).await;
    let path = format!("/v1/streams/{topic}?from=earliest");
    for key in [TestKey::Hmac, TestKey::Rsa, TestKey::EcP256, TestKey::Ed25519] {
        let t = token(key, "dave", json!([topic]));
        for (source, path, headers) in [
            ("header", path.clone(), bearer(&t)),
            ("cookie", path.clone(), cookie(&t)),
            ("access_token", format!("{path}&access_token={t}"), vec![]),
        ] {
            let mut stream = SseStream::connect(&client(&headers), &gateway.url(&path), None)
                .await
                .unwrap_or_else(|e| panic!("{key:?} token in the {source}: {e}"));
            assert_eq!(data(&read_n(&mut stream, 1).await), ["e-0"], "{key:?} {source}");
        }
    }
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_streams_need_no_token_but_a_bad_token_is_still_refused() {
    let f = Fixture::start().await;
    let (public, private) = (
        f.topic_with_prefix("auth", 1).await,
        f.topic_with_prefix("auth", 1).await,
    );
    f.publish_untyped(&public, "p", 1, 1).await;
    let gateway = f.auth_gateway(|c| c.public_streams = vec![public.clone()]).await;
    let mut stream = open(&gateway, &format!("/v1/streams/{public}?from=earliest"), &[]).await;
    assert_eq!(data(&read_n(&mut stream, 1).await), ["p-0"]);

    let forged = token(TestKey::Rsa2, "mallory", json!(["*"]));
    let bad = refused(&gateway, &format!("/v1/streams/{public}"), &bearer(&forged)).await;
    assert_eq!(bad.status, 401, "a token that is there must be valid, public or not");
    let private_refusal = refused(&gateway, &format!("/v1/streams/{private}"), &[]).await;
    assert_eq!(private_refusal.status, 401);
    // A valid token granted something else still reads what anyone may read.
    let elsewhere = token(TestKey::Hmac, "erin", json!([private]));
    open(&gateway, &format!("/v1/streams/{public}"), &bearer(&elsewhere)).await;
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_token_from_an_origin_not_allowed_is_refused() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("auth", 1).await;
    let gateway = f.auth_gateway(|_| {}).await;
    let t = token(TestKey::Hmac, "frank", json!([topic]));
    let path = format!("/v1/streams/{topic}");
    let with_origin = |mut headers: Vec<(&'static str, String)>, origin: &str| {
        headers.push(("origin", origin.to_owned()));
        headers
    };
    let csrf = refused(&gateway, &path, &with_origin(cookie(&t), "http://evil.example")).await;
    assert_eq!((csrf.status, csrf.code.as_str()), (403, "forbidden"));
    open(&gateway, &path, &with_origin(cookie(&t), ALLOWED_ORIGIN)).await;
    open(&gateway, &path, &cookie(&t)).await; // same origin: browsers send no Origin
                                              // A header is set by the page's own code, not sent by the browser on its own: no CSRF.
    open(&gateway, &path, &with_origin(bearer(&t), "http://evil.example")).await;
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_over_its_connection_limit_gets_429_with_retry_after() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("auth", 1).await;
    let gateway = f.auth_gateway(|c| c.max_connections_per_subject = 2).await;
    let path = format!("/v1/streams/{topic}");
    let alice = bearer(&token(TestKey::Hmac, "alice", json!([topic])));
    let first = open(&gateway, &path, &alice).await;
    let _second = open(&gateway, &path, &alice).await;
    let over = refused(&gateway, &path, &alice).await;
    assert_eq!((over.status, over.code.as_str()), (429, "too_many_connections"));
    let retry: u64 = over.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=10).contains(&retry));
    gateway
        .wait_for_metric(
            "sluice_gateway_connections_rejected_total{reason=\"subject_limit\"} 1",
            WAIT,
        )
        .await
        .unwrap();
    open(&gateway, &path, &bearer(&token(TestKey::Hmac, "bob", json!([topic])))).await;

    drop(first);
    let http = client(&alice);
    sluice_testkit::eventually("alice's closed stream to free its slot", WAIT, || async {
        let response = http.get(gateway.url(&path)).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await
    .unwrap();
    gateway.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_reauth_before_exp_and_resumes_exactly_with_a_fresh_token() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("auth", 2).await;
    let gateway = f.auth_gateway(|_| {}).await;
    let lifetime = 6;
    let short = TestToken::new(TestKey::Rsa)
        .subject("grace")
        .subscribe(json!([topic]))
        .expires_in(lifetime)
        .mint();
    let exp = SystemTime::now() + Duration::from_secs(lifetime as u64);
    let mut stream = open(&gateway, &format!("/v1/streams/{topic}"), &bearer(&short)).await;
    f.publish_untyped(&topic, "a", 10, 2).await;
    let mut before = data(&read_n(&mut stream, 10).await);

    let reauth = match stream.next(WAIT).await.unwrap() {
        Next::Event(event) => event,
        Next::Ended => panic!("the stream ended without sluice.reauth"),
    };
    let now = SystemTime::now();
    assert!(now < exp, "reauth {:?} before exp", exp.duration_since(now));
    assert_eq!(reauth.event_type, "sluice.reauth");
    assert_eq!(
        serde_json::from_str::<Value>(&reauth.data).unwrap(),
        json!({"reason": "token_expiring"})
    );
    assert!(
        matches!(stream.next(WAIT).await.unwrap(), Next::Ended),
        "then the stream ends"
    );
    let cursor = reauth.id.expect("the reauth frame carries the cursor");

    f.publish_untyped(&topic, "gap", 10, 2).await;
    let fresh = token(TestKey::Rsa, "grace", json!([topic]));
    let mut resumed = SseStream::connect(
        &client(&bearer(&fresh)),
        &gateway.url(&format!("/v1/streams/{topic}")),
        Some(&cursor),
    )
    .await
    .unwrap();
    let mut after = data(&read_n(&mut resumed, 10).await);
    f.publish_untyped(&topic, "z", 1, 1).await;
    assert_eq!(
        data(&read_n(&mut resumed, 1).await),
        ["z-0"],
        "nothing repeated before it"
    );
    before.sort();
    after.sort();
    let sorted = |prefix: &str| {
        let mut v: Vec<String> = (0..10).map(|i| format!("{prefix}-{i}")).collect();
        v.sort();
        v
    };
    assert_eq!(before, sorted("a"));
    assert_eq!(after, sorted("gap"), "the gap, exactly");
    gateway.stop(WAIT).await.unwrap();
}

/// Seconds since the epoch, for log lines.
fn epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_reaches_the_logs_even_at_trace_level() {
    let f = Fixture::start().await;
    let topic = f.topic_with_prefix("auth", 1).await;
    f.publish_untyped(&topic, "e", 1, 1).await;
    let log_path = std::env::temp_dir().join(format!("sluice-gateway-auth-{}-{}.log", std::process::id(), epoch()));
    let log = std::fs::File::create(&log_path).unwrap();
    let (listen, admin) = (
        sluice_testkit::process::free_local_addr(),
        sluice_testkit::process::free_local_addr(),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .arg(format!("--listen={listen}"))
        .arg(format!("--admin-listen={admin}"))
        .arg(format!("--kafka-brokers={}", f.kafka.bootstrap_servers()))
        .arg(format!(
            "--jwt-hmac-secret-file={}",
            TestKey::Hmac.verify_file().display()
        ))
        .arg(format!("--allow-origins={ALLOWED_ORIGIN}"))
        .env("SLUICE_LOG", "trace")
        .env_remove("SLUICE_ALLOW_ANONYMOUS")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    sluice_testkit::process::wait_ready(admin, WAIT).await.unwrap();
    let url = |query: &str| format!("http://{listen}/v1/streams/{topic}?from=earliest{query}");

    let good = token(TestKey::Hmac, "logged", json!([topic]));
    let forged = token(TestKey::Rsa2, "logged", json!([topic]));
    let expired = TestToken::new(TestKey::Hmac).expires_in(-3600).mint();
    let ungranted = token(TestKey::Hmac, "logged", json!(["elsewhere"]));
    let tokens = [&good, &forged, &expired, &ungranted];
    for t in tokens {
        for headers in [bearer(t), cookie(t), {
            let mut h = cookie(t);
            h.push(("origin", "http://evil.example".into()));
            h
        }] {
            let _ = client(&headers).get(url("")).send().await.unwrap();
        }
        let _ = reqwest::get(url(&format!("&access_token={t}"))).await.unwrap();
        let _ = reqwest::get(url(&format!("&access_token={t}&key=%ZZ"))).await.unwrap();
    }
    let mut stream = SseStream::connect(&reqwest::Client::new(), &url(&format!("&access_token={good}")), None)
        .await
        .unwrap();
    assert_eq!(data(&read_n(&mut stream, 1).await), ["e-0"]);
    drop(stream);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();

    let logged = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(logged.contains("sluice-gateway serving"), "the log was captured");
    assert!(logged.lines().count() > 20, "trace level logs plenty: {logged}");
    for (i, t) in tokens.iter().enumerate() {
        // The claims and the signature: either is enough to misuse or forge-check a token.
        for part in t.split('.').skip(1) {
            assert!(!logged.contains(part), "token {i} (part {part}) is in the log");
        }
    }
    assert!(
        !logged.contains("access_token"),
        "a query string that may hold a token was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_streams_need_every_stream_granted_and_key_grants_apply_per_stream() {
    let f = Fixture::start().await;
    let (whole, keyed, other) = (
        f.topic_with_prefix("auth", 1).await,
        f.topic_with_prefix("auth", 4).await,
        f.topic_with_prefix("auth", 1).await,
    );
    f.publish_untyped(&whole, "w", 4, 4).await;
    f.publish_untyped(&keyed, "k", 8, 4).await;
    let gateway = f.auth_gateway(|_| {}).await;
    let grant = token(TestKey::Hmac, "dave", json!([whole, {"stream": keyed, "keys": ["k1"]}]));
    for path in [
        format!("/v1/streams/{whole},{other}"),
        format!("/v1/streams/{other},{whole}/poll"),
    ] {
        let refusal = refused(&gateway, &path, &bearer(&grant)).await;
        assert_eq!((refusal.status, refusal.code.as_str()), (403, "forbidden"), "{path}");
    }
    for path in [
        format!("/v1/streams/{whole},{keyed}"),
        format!("/v1/streams/{whole},{keyed}/poll"),
    ] {
        let refusal = refused(&gateway, &path, &[]).await;
        assert_eq!(
            (refusal.status, refusal.code.as_str()),
            (401, "unauthenticated"),
            "{path}"
        );
    }

    // The whole stream in full, the keyed one only for its key, in one connection and one poll.
    let path = format!("/v1/streams/{whole},{keyed}?from=earliest");
    let mut stream = open(&gateway, &path, &bearer(&grant)).await;
    let mut got: Vec<(String, String)> = read_n(&mut stream, 6)
        .await
        .iter()
        .map(|e| (e.event_type.clone(), serde_json::from_str(&e.data).unwrap()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = (0..4)
        .map(|i| (format!("{whole}:message"), format!("w-{i}")))
        .chain([1, 5].map(|i| (format!("{keyed}:message"), format!("k-{i}"))))
        .collect();
    want.sort();
    assert_eq!(got, want);
    let page: Value = client(&bearer(&grant))
        .get(gateway.url(&format!("/v1/streams/{whole},{keyed}/poll?from=earliest")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stream"] == keyed.as_str())
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["k1", "k1"], "{page}");
    gateway.stop(WAIT).await.unwrap();
}
