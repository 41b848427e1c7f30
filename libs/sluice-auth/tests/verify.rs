//! `Authenticator` against real tokens: every algorithm family, every refusal, key loading,
//! and the JWKS cache against a local key set that rotates.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use actix_web::ResponseError as _;
use jsonwebtoken::Algorithm;
use serde_json::json;
use sluice_auth::{Access, AuthArgs, AuthError, Authenticator};
use sluice_testkit::auth::{mint, unsigned_token, JwksServer, TestKey, TestToken};

fn args() -> AuthArgs {
    AuthArgs {
        jwt_leeway: Duration::from_secs(0),
        ..AuthArgs::default()
    }
}

fn with_keys(keys: &[TestKey]) -> Authenticator {
    let mut a = args();
    for key in keys {
        match key {
            TestKey::Hmac => a.jwt_hmac_secret_file = Some(key.verify_file()),
            _ => a.jwt_public_key_file.push(key.verify_file()),
        }
    }
    Authenticator::new(&a).expect("valid auth config")
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-auth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

async fn refusal(auth: &Authenticator, token: &str) -> AuthError {
    auth.verify(token).await.expect_err("the token must be refused")
}

#[tokio::test]
async fn every_algorithm_family_verifies_with_its_key() {
    let auth = with_keys(&[
        TestKey::Hmac,
        TestKey::Rsa,
        TestKey::EcP256,
        TestKey::EcP384,
        TestKey::Ed25519,
    ]);
    for key in [
        TestKey::Hmac,
        TestKey::Rsa,
        TestKey::EcP256,
        TestKey::EcP384,
        TestKey::Ed25519,
    ] {
        let token = TestToken::new(key)
            .subject(&format!("{key:?}"))
            .publish(json!(["orders"]))
            .mint();
        let principal = auth.verify(&token).await.unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert_eq!(principal.subject, format!("{key:?}"));
        assert_eq!(principal.publish.access("orders"), Some(Access::All));
        assert_eq!(principal.subscribe.access("orders"), None);
        assert!(principal.expires_at.unwrap() > SystemTime::now());
    }
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = TestToken::new(TestKey::Hmac).algorithm(alg).mint();
        auth.verify(&token).await.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
    }
    for alg in [Algorithm::RS384, Algorithm::PS256, Algorithm::PS512] {
        let token = TestToken::new(TestKey::Rsa).algorithm(alg).mint();
        auth.verify(&token).await.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
    }
}

#[tokio::test]
async fn a_token_from_another_key_is_a_bad_signature() {
    let auth = with_keys(&[TestKey::Rsa]);
    let err = refusal(&auth, &TestToken::new(TestKey::Rsa2).mint()).await;
    assert_eq!(err, AuthError::BadSignature);

    // Several keys of one type: the one that signed is found.
    let auth = with_keys(&[TestKey::Rsa, TestKey::Rsa2]);
    auth.verify(&TestToken::new(TestKey::Rsa2).mint()).await.unwrap();

    let auth = with_keys(&[TestKey::Hmac]);
    let token = TestToken::new(TestKey::Hmac).mint();
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(43));
    assert_eq!(refusal(&auth, &forged).await, AuthError::BadSignature);
    let tampered_claims = TestToken::new(TestKey::Hmac).subject("mallory").mint();
    let spliced = format!(
        "{}.{}.{}",
        tampered_claims.split('.').next().unwrap(),
        tampered_claims.split('.').nth(1).unwrap(),
        token.split('.').nth(2).unwrap()
    );
    assert_eq!(refusal(&auth, &spliced).await, AuthError::BadSignature);
}

#[tokio::test]
async fn the_algorithm_must_match_the_key_type() {
    // The classic confusion: an HS256 token whose "secret" is the RSA public key's PEM.
    let auth = with_keys(&[TestKey::Rsa]);
    let pem = std::fs::read(TestKey::Rsa.verify_file()).unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &json!({"sub": "mallory", "exp": sluice_testkit::auth::now_secs() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(&pem).unwrap(),
    )
    .unwrap();
    assert_eq!(refusal(&auth, &forged).await, AuthError::WrongAlgorithm);

    let auth = with_keys(&[TestKey::Hmac]);
    assert_eq!(
        refusal(&auth, &TestToken::new(TestKey::Rsa).mint()).await,
        AuthError::WrongAlgorithm
    );
    // P-256 verifies ES256 only; a P-384 token is not for it.
    let auth = with_keys(&[TestKey::EcP256]);
    assert_eq!(
        refusal(&auth, &TestToken::new(TestKey::EcP384).mint()).await,
        AuthError::WrongAlgorithm
    );
    let auth = with_keys(&[TestKey::Ed25519]);
    assert_eq!(
        refusal(&auth, &TestToken::new(TestKey::EcP256).mint()).await,
        AuthError::WrongAlgorithm
    );
}

#[tokio::test]
async fn alg_none_is_never_accepted() {
    let claims = json!({"sub": "mallory", "exp": sluice_testkit::auth::now_secs() + 60, "sluice": {"publish": ["*"]}});
    for keys in [&[TestKey::Hmac][..], &[TestKey::Rsa], &[TestKey::Ed25519]] {
        let auth = with_keys(keys);
        assert_eq!(
            refusal(&auth, &unsigned_token(&claims)).await,
            AuthError::WrongAlgorithm
        );
    }
    let mut a = AuthArgs::anonymous();
    a.jwt_hmac_secret_file = Some(TestKey::Hmac.verify_file());
    let auth = Authenticator::new(&a).unwrap();
    assert_eq!(
        refusal(&auth, &unsigned_token(&claims)).await,
        AuthError::WrongAlgorithm
    );
}

#[tokio::test]
async fn time_claims_are_checked() {
    let auth = with_keys(&[TestKey::Hmac]);
    let expired = TestToken::new(TestKey::Hmac).expires_in(-5).mint();
    assert_eq!(refusal(&auth, &expired).await, AuthError::Expired);
    let early = TestToken::new(TestKey::Hmac).not_before_in(300).mint();
    assert_eq!(refusal(&auth, &early).await, AuthError::NotYetValid);
    let no_exp = TestToken::new(TestKey::Hmac).without("exp").mint();
    assert!(matches!(refusal(&auth, &no_exp).await, AuthError::Malformed(m) if m.contains("exp")));

    // Leeway forgives clock skew, both ways.
    let mut a = args();
    a.jwt_hmac_secret_file = Some(TestKey::Hmac.verify_file());
    a.jwt_leeway = Duration::from_secs(60);
    let lenient = Authenticator::new(&a).unwrap();
    lenient.verify(&expired).await.unwrap();
    lenient
        .verify(&TestToken::new(TestKey::Hmac).not_before_in(30).mint())
        .await
        .unwrap();
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let mut a = args();
    a.jwt_hmac_secret_file = Some(TestKey::Hmac.verify_file());
    a.jwt_issuer = Some("https://idp.example".into());
    a.jwt_audience = Some("sluice".into());
    let auth = Authenticator::new(&a).unwrap();
    let good = TestToken::new(TestKey::Hmac)
        .issuer("https://idp.example")
        .audience("sluice");
    auth.verify(&good.mint()).await.unwrap();
    let multi = good.clone().claim("aud", json!(["other", "sluice"]));
    auth.verify(&multi.mint()).await.unwrap();

    let wrong_iss = good.clone().issuer("https://evil.example").mint();
    assert_eq!(refusal(&auth, &wrong_iss).await, AuthError::WrongIssuer);
    let wrong_aud = good.clone().audience("billing").mint();
    assert_eq!(refusal(&auth, &wrong_aud).await, AuthError::WrongAudience);
    assert_eq!(
        refusal(&auth, &good.clone().without("iss").mint()).await.reason(),
        "malformed"
    );
    assert_eq!(refusal(&auth, &good.without("aud").mint()).await.reason(), "malformed");

    // Not configured: whatever the token says is not Sluice's business.
    let open = with_keys(&[TestKey::Hmac]);
    open.verify(&TestToken::new(TestKey::Hmac).issuer("x").audience("y").mint())
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_tokens_are_refused_without_panicking() {
    let auth = with_keys(&[TestKey::Hmac, TestKey::Rsa]);
    let huge = format!("{}.e30.sig", "a".repeat(sluice_auth::MAX_TOKEN_BYTES));
    let cases = [
        "".to_string(),
        "not-a-jwt".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.???.***".into(),
        "e30.e30.".into(),
        huge,
        TestToken::new(TestKey::Hmac).without("sub").mint(),
        TestToken::new(TestKey::Hmac).claim("sub", json!(42)).mint(),
        TestToken::new(TestKey::Hmac).claim("sub", json!("")).mint(),
        TestToken::new(TestKey::Hmac).claim("exp", json!("tomorrow")).mint(),
        TestToken::new(TestKey::Hmac)
            .claim("sluice", json!({"publish": "orders"}))
            .mint(),
        TestToken::new(TestKey::Hmac)
            .claim("sluice", json!({"subscribe": [{"stream": "a b"}]}))
            .mint(),
        TestToken::new(TestKey::Hmac).claim("sluice", json!(["orders"])).mint(),
    ];
    for token in cases {
        let err = refusal(&auth, &token).await;
        assert_eq!(err.reason(), "malformed", "{token:.60}: {err:?}");
        assert_eq!(err.status_code().as_u16(), 401);
    }
}

#[tokio::test]
async fn grants_come_from_the_sluice_claim() {
    let auth = with_keys(&[TestKey::Hmac]);
    let token = TestToken::new(TestKey::Hmac)
        .subscribe(json!(["orders.*", {"stream": "notifications", "keys": ["user-42"]}]))
        .publish(json!([{"stream": "ticker", "keys": ["AAPL", "MSFT"]}]))
        .mint();
    let p = auth.verify(&token).await.unwrap();
    assert_eq!(p.subscribe.access("orders.eu"), Some(Access::All));
    assert_eq!(
        p.subscribe.access("notifications"),
        Some(Access::Keys(["user-42".to_string()].into()))
    );
    assert_eq!(p.subscribe.access("ticker"), None);
    assert_eq!(
        p.publish.access("ticker"),
        Some(Access::Keys(["AAPL".into(), "MSFT".into()].into()))
    );
    assert_eq!(p.publish.access("orders.eu"), None);

    let bare = auth.verify(&TestToken::new(TestKey::Hmac).mint()).await.unwrap();
    assert_eq!((bare.subscribe.access("x"), bare.publish.access("x")), (None, None));
}

#[tokio::test]
async fn anonymous_access_applies_only_to_requests_without_a_token() {
    let strict = with_keys(&[TestKey::Hmac]);
    assert_eq!(strict.authenticate(None).await.unwrap_err(), AuthError::Missing);
    let mut a = AuthArgs::anonymous();
    a.jwt_hmac_secret_file = Some(TestKey::Hmac.verify_file());
    let open = Authenticator::new(&a).unwrap();
    assert!(open.allows_anonymous());
    assert_eq!(open.authenticate(None).await.unwrap().subject, "anonymous");
    let expired = TestToken::new(TestKey::Hmac).expires_in(-120).mint();
    assert_eq!(open.authenticate(Some(&expired)).await.unwrap_err(), AuthError::Expired);
}

#[test]
fn every_error_maps_to_its_status_code_and_reason() {
    let cases = [
        (AuthError::Missing, 401, "missing"),
        (AuthError::Malformed("x".into()), 401, "malformed"),
        (AuthError::BadSignature, 401, "bad_signature"),
        (AuthError::Expired, 401, "expired"),
        (AuthError::NotYetValid, 401, "not_yet_valid"),
        (AuthError::WrongIssuer, 401, "wrong_issuer"),
        (AuthError::WrongAudience, 401, "wrong_audience"),
        (AuthError::UnknownKey, 401, "unknown_key"),
        (AuthError::WrongAlgorithm, 401, "wrong_algorithm"),
        (AuthError::Forbidden("no".into()), 403, "forbidden"),
    ];
    for (err, status, reason) in cases {
        let response = err.error_response();
        assert_eq!(response.status().as_u16(), status, "{err:?}");
        assert_eq!(err.reason(), reason);
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        if status == 401 {
            assert_eq!(err.code(), "unauthenticated");
            assert_eq!(challenge.as_deref(), Some("Bearer"), "{err:?}");
        } else {
            assert_eq!(err.code(), "forbidden");
            assert_eq!(challenge, None);
        }
    }
}

#[test]
fn key_files_are_checked_at_start_and_named_in_errors() {
    let new = |f: &dyn Fn(&mut AuthArgs)| {
        let mut a = args();
        f(&mut a);
        Authenticator::new(&a)
    };
    let err = new(&|_| {}).unwrap_err();
    for flag in [
        "--jwt-hmac-secret-file",
        "--jwt-public-key-file",
        "--jwks-url",
        "--allow-anonymous",
    ] {
        assert!(err.contains(flag), "{err}");
    }
    assert!(!err.contains('\n'));

    let short = temp_file("short", &[b'x'; 31]);
    let err = new(&|a| a.jwt_hmac_secret_file = Some(short.clone())).unwrap_err();
    assert!(err.contains("--jwt-hmac-secret-file") && err.contains("short"), "{err}");
    // ONE trailing newline is stripped: 31 bytes + "\n" is still too short; 32 + "\n" is fine.
    let short_nl = temp_file("short-nl", b"0123456789012345678901234567890\n");
    assert!(new(&|a| a.jwt_hmac_secret_file = Some(short_nl.clone())).is_err());
    let ok_nl = temp_file("ok-nl", b"01234567890123456789012345678901\n");
    new(&|a| a.jwt_hmac_secret_file = Some(ok_nl.clone())).unwrap();
    let empty = temp_file("empty", b"");
    assert!(new(&|a| a.jwt_hmac_secret_file = Some(empty.clone())).is_err());
    let missing = PathBuf::from("/nonexistent/sluice-secret");
    let err = new(&|a| a.jwt_hmac_secret_file = Some(missing.clone())).unwrap_err();
    assert!(err.contains("/nonexistent/sluice-secret"), "{err}");

    let secret_material = "-----BEGIN PUBLIC KEY-----\nTOPSECRETBYTES\n-----END PUBLIC KEY-----\n";
    let bad_pem = temp_file("bad.pem", secret_material.as_bytes());
    let err = new(&|a| a.jwt_public_key_file = vec![bad_pem.clone()]).unwrap_err();
    assert!(
        err.contains("--jwt-public-key-file") && err.contains("bad.pem"),
        "{err}"
    );
    assert!(!err.contains("TOPSECRET"), "{err}");
    // A private key is not a public key file.
    let private = sluice_testkit::auth::keys_dir().join("rsa-private.pem");
    assert!(new(&|a| a.jwt_public_key_file = vec![private.clone()]).is_err());

    for url in ["ftp://idp/jwks", "not a url", "file:///etc/passwd", "http://"] {
        let err = new(&|a| a.jwks_url = Some(url.into())).unwrap_err();
        assert!(err.contains("--jwks-url"), "{err}");
    }
    new(&|a| a.jwks_url = Some("https://idp.example/.well-known/jwks.json".into())).unwrap();
}

#[test]
fn the_token_claims_shape_matches_what_the_test_kit_mints() {
    // A guard for the kit itself: `mint` with exact claims, decoded without verification.
    let token = mint(TestKey::Hmac, &json!({"sub": "s", "exp": 1}));
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(&token).unwrap().claims;
    assert_eq!(claims, json!({"sub": "s", "exp": 1}));
}

fn jwks_args(url: &str) -> AuthArgs {
    AuthArgs {
        jwks_url: Some(url.into()),
        ..args()
    }
}

#[tokio::test]
async fn jwks_keys_are_picked_by_kid_and_a_rotation_is_refetched() {
    let idp = JwksServer::start(&[(TestKey::Rsa, "k1"), (TestKey::EcP256, "ec1")])
        .await
        .unwrap();
    let auth = Authenticator::new(&jwks_args(idp.url())).unwrap();
    auth.prime().await;
    assert_eq!(idp.requests(), 1);
    auth.verify(&TestToken::new(TestKey::Rsa).kid("k1").mint())
        .await
        .unwrap();
    auth.verify(&TestToken::new(TestKey::EcP256).kid("ec1").mint())
        .await
        .unwrap();
    // A kid's key verifies only its own algorithm family.
    let err = refusal(&auth, &TestToken::new(TestKey::Ed25519).kid("k1").mint()).await;
    assert_eq!(err, AuthError::WrongAlgorithm);
    // The right kid, the wrong key: a bad signature.
    assert_eq!(
        refusal(&auth, &TestToken::new(TestKey::Rsa2).kid("k1").mint()).await,
        AuthError::BadSignature
    );
    assert_eq!(idp.requests(), 1, "known kids need no fetch");

    idp.set_keys(&[(TestKey::Rsa2, "k2")]);
    auth.verify(&TestToken::new(TestKey::Rsa2).kid("k2").mint())
        .await
        .unwrap();
    assert_eq!(idp.requests(), 2, "an unknown kid refetched the set once");
    // The retired key is gone with its set.
    let err = refusal(&auth, &TestToken::new(TestKey::Rsa).kid("k1").mint()).await;
    assert_eq!(err, AuthError::UnknownKey);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_does_not_hammer_the_idp() {
    let idp = JwksServer::start(&[(TestKey::Rsa, "k1")]).await.unwrap();
    let auth = std::sync::Arc::new(Authenticator::new(&jwks_args(idp.url())).unwrap());
    auth.prime().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let auth = auth.clone();
        let token = TestToken::new(TestKey::Rsa).kid(&format!("bogus-{i}")).mint();
        tasks.push(tokio::spawn(async move { auth.verify(&token).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err(), AuthError::UnknownKey);
    }
    assert_eq!(idp.requests(), 2, "200 unknown kids caused one refetch, not more");
    // Known kids still verify during the quiet period.
    auth.verify(&TestToken::new(TestKey::Rsa).kid("k1").mint())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_idp_that_is_down_fails_tokens_as_unknown_key() {
    let idp = JwksServer::start(&[(TestKey::Rsa, "k1")]).await.unwrap();
    let url = idp.url().to_owned();
    idp.stop().await;
    let auth = Authenticator::new(&jwks_args(&url)).unwrap();
    auth.prime().await;
    let err = refusal(&auth, &TestToken::new(TestKey::Rsa).kid("k1").mint()).await;
    assert_eq!(err, AuthError::UnknownKey);
    assert!(auth.refresh_keys().await.is_err());
    // No kid and no file key: nothing could verify it.
    assert_eq!(
        refusal(&auth, &TestToken::new(TestKey::Rsa).mint()).await,
        AuthError::UnknownKey
    );
}

#[tokio::test]
async fn a_background_refresh_loads_keys_and_stops_with_the_token() {
    let idp = JwksServer::start(&[(TestKey::Ed25519, "ed")]).await.unwrap();
    let auth = std::sync::Arc::new(Authenticator::new(&jwks_args(idp.url())).unwrap());
    let stop = sluice_runtime::CancellationToken::new();
    auth.start(stop.clone());
    sluice_testkit::eventually(
        "the background refresh to fetch the set",
        Duration::from_secs(10),
        || async { (idp.requests() >= 1).then_some(()) },
    )
    .await
    .unwrap();
    let token = TestToken::new(TestKey::Ed25519).kid("ed").mint();
    sluice_testkit::eventually("the key to be usable", Duration::from_secs(10), || async {
        auth.verify(&token).await.ok()
    })
    .await
    .unwrap();
    stop.cancel();
}
