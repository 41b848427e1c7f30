//! What one token verification costs, by algorithm: HS256, RS256, ES256 and EdDSA tokens
//! minted with `jsonwebtoken::encode`, each verified over and over through
//! `Authenticator::verify` (signature, claims and the `sluice` grants, as a request pays it).
//! Keys are made fresh by the `openssl` CLI in a temporary directory. Prints µs per
//! verification, the median of several rounds, and the machine. Not a rigorous benchmark: it
//! puts the per-request cost of access control next to the gateway's other per-connection
//! costs. Run with `make bench-auth-verify` or
//! `cargo run --release -p sluice-auth --example verify_bench`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sluice_auth::{AuthArgs, Authenticator};

/// Rounds per algorithm; the median is printed, so one disturbed round does not move it.
const ROUNDS: usize = 7;
/// Roughly how long each round runs.
const ROUND_TIME: Duration = Duration::from_millis(300);

struct Case {
    name: &'static str,
    algorithm: Algorithm,
    /// `openssl genpkey` arguments; `None` for the HMAC secret.
    genpkey: Option<&'static [&'static str]>,
}

const CASES: [Case; 4] = [
    Case {
        name: "HS256",
        algorithm: Algorithm::HS256,
        genpkey: None,
    },
    Case {
        name: "RS256",
        algorithm: Algorithm::RS256,
        genpkey: Some(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
    },
    Case {
        name: "ES256",
        algorithm: Algorithm::ES256,
        genpkey: Some(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    },
    Case {
        name: "EdDSA",
        algorithm: Algorithm::EdDSA,
        genpkey: Some(&["-algorithm", "ed25519"]),
    },
];

fn main() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("sluice-verify-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let outcome = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn run(dir: &Path) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!("machine: {}", machine());
    println!("token verification through sluice_auth::Authenticator::verify (median of {ROUNDS} rounds):");
    for case in &CASES {
        let (args, key) = keys(case, dir)?;
        let authenticator = Authenticator::new(&args)?;
        let token = mint(case.algorithm, &key)?;
        runtime
            .block_on(authenticator.verify(&token))
            .map_err(|e| format!("{}: the token does not verify: {e}", case.name))?;
        let micros = runtime.block_on(time_verifications(&authenticator, &token));
        println!(
            "  {:<6} {:>8.2} µs per verification  (rounds {:.2}..{:.2} µs, token {} bytes)",
            case.name,
            micros[ROUNDS / 2],
            micros[0],
            micros[ROUNDS - 1],
            token.len()
        );
    }
    Ok(())
}

/// µs per verification of each round, sorted; each round sized to run about [`ROUND_TIME`].
async fn time_verifications(authenticator: &Authenticator, token: &str) -> Vec<f64> {
    let probe = Instant::now();
    for _ in 0..20 {
        std::hint::black_box(authenticator.verify(token).await.is_ok());
    }
    let per = probe.elapsed() / 20;
    let iterations = (ROUND_TIME.as_nanos() / per.as_nanos().max(1)).clamp(50, 1_000_000) as u32;
    let mut micros = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(authenticator.verify(std::hint::black_box(token)).await.is_ok());
        }
        micros.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations));
    }
    micros.sort_by(f64::total_cmp);
    micros
}

/// The flags a service would get for this algorithm, and the key that signs its tokens.
fn keys(case: &Case, dir: &Path) -> Result<(AuthArgs, EncodingKey), String> {
    let mut args = AuthArgs {
        jwt_leeway: Duration::from_secs(30),
        ..AuthArgs::default()
    };
    let Some(genpkey) = case.genpkey else {
        let secret = "a-secret-for-the-verification-bench-of-more-than-32-bytes";
        let path = dir.join("hmac-secret");
        std::fs::write(&path, secret).map_err(|e| format!("writing {}: {e}", path.display()))?;
        args.jwt_hmac_secret_file = Some(path);
        let key = EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
        return Ok((args, key));
    };
    let private = dir.join(format!("{}-private.pem", case.name));
    let public = dir.join(format!("{}-public.pem", case.name));
    let mut generate: Vec<&str> = vec!["genpkey"];
    generate.extend_from_slice(genpkey);
    generate.extend_from_slice(&["-out", utf8(&private)?]);
    openssl(&generate)?;
    openssl(&["pkey", "-in", utf8(&private)?, "-pubout", "-out", utf8(&public)?])?;
    let pem = std::fs::read(&private).map_err(|e| format!("reading {}: {e}", private.display()))?;
    let key = match case.algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .map_err(|e| format!("{}: loading the private key: {e}", case.name))?;
    args.jwt_public_key_file = vec![public];
    Ok((args, key))
}

/// A token of the contract's shape: every stream may be read, valid for an hour.
fn mint(algorithm: Algorithm, key: &EncodingKey) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = serde_json::json!({
        "sub": "verify-bench",
        "iat": now,
        "exp": now + 3600,
        "sluice": {"subscribe": ["*"]},
    });
    jsonwebtoken::encode(&Header::new(algorithm), &claims, key).map_err(|e| e.to_string())
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| format!("running the openssl CLI: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn utf8(path: &Path) -> Result<&str, String> {
    path.to_str().ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

/// CPU model, logical CPUs and load: a µs figure means little without them.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{model}, {cpus} logical CPUs, load average {}", load.join(" "))
}
