//! Access control on ingest: `sluice-ingest` in-process with keys configured, real HTTP
//! requests carrying tokens minted by the test kit, and Kafka read back to prove that a refused
//! request wrote nothing.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_auth::AuthArgs;
use sluice_testkit::auth::{unsigned_token, JwksServer, TestKey, TestToken};

mod support;

use support::{Fixture, READ_TIMEOUT};

/// Auth flags verifying every committed test key type (HMAC and each public key).
fn all_keys() -> AuthArgs {
    AuthArgs {
        jwt_hmac_secret_file: Some(TestKey::Hmac.verify_file()),
        jwt_public_key_file: [TestKey::Rsa, TestKey::EcP256, TestKey::Ed25519]
            .iter()
            .map(|k| k.verify_file())
            .collect(),
        jwt_leeway: Duration::from_secs(0),
        ..AuthArgs::default()
    }
}

impl Fixture {
    async fn with_auth(auth: AuthArgs) -> Self {
        Self::start_with(|config| config.auth = auth).await
    }

    /// Posts `body` to `stream` with `authorization` (the whole header value) when given.
    async fn post(&self, stream: &str, authorization: Option<&str>, body: &Value) -> (u16, Value, Option<String>) {
        let mut request = self
            .http
            .post(self.ingest.url(&format!("/v1/streams/{stream}/events")))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, challenge)
    }

    async fn post_with(&self, stream: &str, token: &str, body: &Value) -> (u16, Value) {
        let (status, body, _) = self.post(stream, Some(&format!("Bearer {token}")), body).await;
        (status, body)
    }

    async fn failures(&self, reason: &str) -> u64 {
        let text = self
            .http
            .get(self.ingest.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!("sluice_ingest_auth_failures_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// The values of the first `n` records of `topic`, in order.
    async fn values(&self, topic: &str, n: usize) -> Vec<String> {
        let records = self.kafka.read_records(topic, n, READ_TIMEOUT).await.unwrap();
        records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_grants_allow_each_algorithm_family() {
    let f = Fixture::with_auth(all_keys()).await;
    let topic = f.topic_with_prefix("auth", 1).await;
    for (i, key) in [TestKey::Hmac, TestKey::Rsa, TestKey::EcP256, TestKey::Ed25519]
        .into_iter()
        .enumerate()
    {
        let token = TestToken::new(key).publish(json!([topic])).mint();
        let (status, body) = f.post_with(&topic, &token, &json!({"data": i})).await;
        assert_eq!(status, 200, "{key:?}: {body}");
    }
    // A glob grant.
    let token = TestToken::new(TestKey::Hmac).publish(json!(["auth*"])).mint();
    assert_eq!(f.post_with(&topic, &token, &json!({"data": 4})).await.0, 200);
    assert_eq!(f.values(&topic, 5).await, ["0", "1", "2", "3", "4"]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_reason_and_challenge() {
    let f = Fixture::with_auth(all_keys()).await;
    let topic = f.topic_with_prefix("auth", 1).await;
    let event = json!({"data": "x"});
    let grant = json!([topic]);
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, "missing"),
        ("basic auth", Some("Basic dXNlcjpwYXNz".into()), 401, "malformed"),
        ("empty bearer", Some("Bearer ".into()), 401, "malformed"),
        ("garbage", Some("Bearer not.a.jwt".into()), 401, "malformed"),
        (
            "another key",
            Some(format!(
                "Bearer {}",
                TestToken::new(TestKey::Rsa2).publish(grant.clone()).mint()
            )),
            401,
            "bad_signature",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                TestToken::new(TestKey::Hmac)
                    .publish(grant.clone())
                    .expires_in(-10)
                    .mint()
            )),
            401,
            "expired",
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                TestToken::new(TestKey::Rsa)
                    .publish(grant.clone())
                    .not_before_in(600)
                    .mint()
            )),
            401,
            "not_yet_valid",
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                unsigned_token(&json!({"sub": "m", "exp": 4_000_000_000u64, "sluice": {"publish": ["*"]}}))
            )),
            401,
            "wrong_algorithm",
        ),
        (
            "ES384 without a P-384 key",
            Some(format!(
                "Bearer {}",
                TestToken::new(TestKey::EcP384).publish(grant.clone()).mint()
            )),
            401,
            "wrong_algorithm",
        ),
        (
            "no publish grant",
            Some(format!(
                "Bearer {}",
                TestToken::new(TestKey::Hmac).subscribe(grant.clone()).mint()
            )),
            403,
            "forbidden",
        ),
        (
            "another stream's grant",
            Some(format!(
                "Bearer {}",
                TestToken::new(TestKey::Ed25519).publish(json!(["other.*"])).mint()
            )),
            403,
            "forbidden",
        ),
    ];
    for (what, authorization, status, reason) in cases {
        let before = f.failures(reason).await;
        let (got, body, challenge) = f.post(&topic, authorization.as_deref(), &event).await;
        assert_eq!(got, status, "{what}: {body}");
        let code = if status == 401 { "unauthenticated" } else { "forbidden" };
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert_eq!(challenge.is_some(), status == 401, "{what}: WWW-Authenticate");
        assert_eq!(f.failures(reason).await, before + 1, "{what}: metric reason {reason}");
    }
    // Nothing reached Kafka: the first record is the one written now.
    let token = TestToken::new(TestKey::Hmac).publish(grant).mint();
    assert_eq!(f.post_with(&topic, &token, &json!({"data": "marker"})).await.0, 200);
    assert_eq!(f.values(&topic, 1).await, ["\"marker\""]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_body_is_read() {
    let f = Fixture::with_auth(all_keys()).await;
    let topic = f.topic_with_prefix("auth", 1).await;
    // A body that is not even JSON: a refusal by auth must come first.
    let response = f
        .http
        .post(f.ingest.url(&format!("/v1/streams/{topic}/events")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let token = TestToken::new(TestKey::Hmac).publish(json!(["elsewhere"])).mint();
    let response = f
        .http
        .post(f.ingest.url(&format!("/v1/streams/{topic}/events")))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_publisher_writing_another_key_writes_nothing() {
    let f = Fixture::with_auth(all_keys()).await;
    let topic = f.topic_with_prefix("auth", 1).await;
    let token = TestToken::new(TestKey::Rsa)
        .publish(json!([{"stream": topic, "keys": ["user-42", "user-43"]}]))
        .mint();
    let before = f.failures("forbidden").await;
    let mixed = json!([
        {"key": "user-42", "data": "ok-1"},
        {"key": "user-7", "data": "not-mine"},
        {"key": "user-43", "data": "ok-2"},
    ]);
    let (status, body) = f.post_with(&topic, &token, &mixed).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let unkeyed = json!([{"key": "user-42", "data": "ok"}, {"data": "no key"}]);
    assert_eq!(f.post_with(&topic, &token, &unkeyed).await.0, 403);
    assert_eq!(f.failures("forbidden").await, before + 2);

    let own = json!([{"key": "user-43", "data": "mine-1"}, {"key": "user-42", "data": "mine-2"}]);
    let (status, body) = f.post_with(&topic, &token, &own).await;
    assert_eq!(status, 200, "{body}");
    // One partition: had any refused event been written, it would come first.
    assert_eq!(f.values(&topic, 2).await, ["\"mine-1\"", "\"mine-2\""]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_ingest_still_verifies_tokens_it_is_given() {
    let mut auth = AuthArgs::anonymous();
    auth.jwt_hmac_secret_file = Some(TestKey::Hmac.verify_file());
    let f = Fixture::with_auth(auth).await;
    let topic = f.topic_with_prefix("auth", 1).await;
    assert_eq!(f.post(&topic, None, &json!({"data": 1})).await.0, 200);
    let expired = TestToken::new(TestKey::Hmac)
        .publish(json!(["*"]))
        .expires_in(-120)
        .mint();
    assert_eq!(f.post_with(&topic, &expired, &json!({"data": 2})).await.0, 401);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_is_followed_without_a_restart() {
    let idp = JwksServer::start(&[(TestKey::Rsa, "2026-a")]).await.unwrap();
    let f = Fixture::with_auth(AuthArgs {
        jwks_url: Some(idp.url().into()),
        ..AuthArgs::default()
    })
    .await;
    let topic = f.topic_with_prefix("auth", 1).await;
    let old = TestToken::new(TestKey::Rsa)
        .kid("2026-a")
        .publish(json!([topic]))
        .mint();
    assert_eq!(f.post_with(&topic, &old, &json!({"data": 1})).await.0, 200);

    idp.set_keys(&[(TestKey::Rsa2, "2026-b"), (TestKey::EcP256, "2026-c")]);
    let new = TestToken::new(TestKey::Rsa2)
        .kid("2026-b")
        .publish(json!([topic]))
        .mint();
    let (status, body) = f.post_with(&topic, &new, &json!({"data": 2})).await;
    assert_eq!(status, 200, "{body}");
    let ec = TestToken::new(TestKey::EcP256)
        .kid("2026-c")
        .publish(json!([topic]))
        .mint();
    assert_eq!(f.post_with(&topic, &ec, &json!({"data": 3})).await.0, 200);
    // The retired key's tokens no longer verify; a bogus kid does not refetch again so soon.
    let fetches = idp.requests();
    let (status, body) = f.post_with(&topic, &old, &json!({"data": 4})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")));
    assert_eq!(f.failures("unknown_key").await, 1);
    assert_eq!(idp.requests(), fetches);
    assert_eq!(f.values(&topic, 3).await, ["1", "2", "3"]);
    f.stop().await;
}
