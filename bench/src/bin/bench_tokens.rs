//! The bearer tokens of bench/run's token-carrying configurations: COUNT distinct RS256 JWTs,
//! one per line, each for its own subject, signed with the PEM private key given.
//!
//! ```text
//! bench_tokens PRIVATE_KEY_PEM COUNT ISSUER AUDIENCE
//! ```
//!
//! Each token names key `bench` (`kid`), its issuer and audience, the roles `bench`, and
//! expires three hours from now: longer than any run.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

const LIFETIME: Duration = Duration::from_secs(3 * 3600);

#[derive(Serialize)]
struct Claims<'a> {
    sub: String,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    roles: [&'a str; 1],
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key_path, count, issuer, audience] = args.as_slice() else {
        eprintln!("usage: bench_tokens PRIVATE_KEY_PEM COUNT ISSUER AUDIENCE");
        return ExitCode::FAILURE;
    };
    match tokens(key_path, count, issuer, audience) {
        Ok(tokens) => {
            println!("{}", tokens.join("\n"));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench_tokens: {error}");
            ExitCode::FAILURE
        }
    }
}

fn tokens(
    key_path: &str,
    count: &str,
    issuer: &str,
    audience: &str,
) -> Result<Vec<String>, String> {
    let pem =
        std::fs::read(key_path).map_err(|error| format!("cannot read {key_path}: {error}"))?;
    let key = EncodingKey::from_rsa_pem(&pem).map_err(|error| format!("{key_path}: {error}"))?;
    let count: usize = count
        .parse()
        .map_err(|_| format!("COUNT must be a number, not `{count}`"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| error.to_string())?
        .as_secs();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("bench".to_owned());
    (1..=count)
        .map(|index| {
            let claims = Claims {
                sub: format!("user-{index}"),
                iss: issuer,
                aud: audience,
                iat: now,
                exp: now + LIFETIME.as_secs(),
                roles: ["bench"],
            };
            jsonwebtoken::encode(&header, &claims, &key).map_err(|error| error.to_string())
        })
        .collect()
}
