//! Token login, refresh and logout, answered by the filter itself.
//!
//! - **Login** checks a username and password against the configured users (Argon2id or
//!   bcrypt hashes only) and answers an access token and a refresh token. An unknown user is
//!   checked against another user's hash, so the answer and its time are the same whether the
//!   user exists or not.
//! - **Refresh tokens** are opaque: `rt1.<family>.<secret>`, random. The key-value store keeps
//!   one entry per family, `family:<family>`, holding the user and the SHA-256 of the one
//!   secret that may be used next; it expires with the refresh token. A refresh swaps in the
//!   next secret with compare-and-swap, so of two refreshes with the same token only one wins.
//!   A token that is not the current one (used already, or beaten by a concurrent refresh) is
//!   reuse: the family is deleted, so the token and every token after it are refused.
//! - **Logout** deletes the family of the refresh token it is given and, if it is given an
//!   access token with a `jti`, lists that `jti` as revoked (`revoked:<jti>`) until the token
//!   expires, for providers with `check_revocation`.
//!
//! Without the key-value store none of the three can be answered safely: they get 503
//! `AUTH_UNAVAILABLE`.

use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use gateway_sdk::{Headers, Reply, Request, clock, kv};

use crate::config::{EndpointsConfig, SigningKeyConfig};
use crate::error::Error;
use crate::keys;

pub(crate) struct Endpoints {
    pub(crate) login: String,
    pub(crate) refresh: String,
    pub(crate) logout: String,
    pub(crate) max_body: u32,
    users: Vec<User>,
    signing: EncodingKey,
    header: Header,
    issuer: Option<String>,
    audience: Option<String>,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

struct User {
    username: String,
    hash: PasswordKind,
    roles: Vec<String>,
}

enum PasswordKind {
    Argon2(String),
    Bcrypt(String),
}

/// Why a token endpoint refuses, before the answer is made.
pub(crate) enum Failure {
    /// 400 `BAD_REQUEST`, with what is wrong with the request (no secret in it).
    BadRequest(&'static str),
    /// 401 `INVALID_CREDENTIALS`; the reason is for the log only.
    Credentials(String),
    /// 503 `AUTH_UNAVAILABLE`: the key-value store could not answer.
    Unavailable(String),
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Serialize)]
struct TokenAnswer<'a> {
    access_token: String,
    token_type: &'a str,
    expires_in: u64,
    refresh_token: String,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    sub: &'a str,
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    iat: u64,
    exp: u64,
    jti: String,
}

/// A family's entry in the store.
#[derive(Serialize, Deserialize)]
struct Family {
    /// The user.
    u: String,
    /// Hex SHA-256 of the one secret that may be used next.
    h: String,
}

impl Endpoints {
    pub(crate) fn new(config: EndpointsConfig) -> Result<Self, Error> {
        for path in [&config.login, &config.refresh, &config.logout] {
            if !path.starts_with('/') {
                return Err(Error::Endpoints(format!("`{path}` must start with `/`")));
            }
        }
        let mut users = Vec::with_capacity(config.users.len());
        for user in config.users {
            let hash = password_kind(&user.password_hash).map_err(|reason| Error::User {
                user: user.username.clone(),
                reason,
            })?;
            users.push(User {
                username: user.username,
                hash,
                roles: user.roles,
            });
        }
        let (signing, algorithm) = signing_key(&config.signing)?;
        let mut header = Header::new(algorithm);
        header.kid = config.signing.kid.clone();
        Ok(Endpoints {
            login: config.login,
            refresh: config.refresh,
            logout: config.logout,
            max_body: config.max_body,
            users,
            signing,
            header,
            issuer: config.issuer,
            audience: config.audience,
            access_ttl: config.access_ttl,
            refresh_ttl: config.refresh_ttl,
        })
    }

    pub(crate) fn serves(&self, path: &str) -> bool {
        path == self.login || path == self.refresh || path == self.logout
    }

    /// Answers a request to one of the endpoints.
    pub(crate) fn answer(&self, request: &Request) -> Result<Reply, Failure> {
        let path = request.path();
        let body = json_body(request)?;
        if path == self.login {
            let login: LoginBody = parse(&body)?;
            let user = self.check_password(&login.username, &login.password)?;
            self.issue(user, None)
        } else if path == self.refresh {
            let refresh: RefreshBody = parse(&body)?;
            let (family_id, user) = self.rotate(&refresh.refresh_token)?;
            self.issue(user, Some(family_id))
        } else {
            let logout: RefreshBody = parse(&body)?;
            self.revoke(&logout.refresh_token, request)?;
            Ok(Reply::new(204))
        }
    }

    fn check_password(&self, username: &str, password: &str) -> Result<&User, Failure> {
        let user = self.users.iter().find(|user| user.username == username);
        // An unknown user is checked against a real hash all the same, so it takes as long.
        let Some(checked) = user.or(self.users.first()) else {
            return Err(Failure::Credentials("no users are configured".to_owned()));
        };
        let matches = verify_password(&checked.hash, password);
        match user {
            Some(user) if matches => Ok(user),
            Some(_) => Err(Failure::Credentials(format!(
                "wrong password for `{}`",
                crate::jwt::printable(username)
            ))),
            None => Err(Failure::Credentials(format!(
                "unknown user `{}`",
                crate::jwt::printable(username)
            ))),
        }
    }

    /// A new access token and refresh token; the refresh token continues `family` or starts
    /// a new one.
    fn issue(&self, user: &User, family: Option<String>) -> Result<Reply, Failure> {
        let now_s = clock::now_ms() / 1000;
        let access_ttl = self.access_ttl.as_secs();
        let claims = AccessClaims {
            sub: &user.username,
            roles: &user.roles,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            iat: now_s,
            exp: now_s + access_ttl,
            jti: random_id().map_err(Failure::Unavailable)?,
        };
        let access_token =
            jsonwebtoken::encode(&self.header, &claims, &self.signing).map_err(|error| {
                Failure::Unavailable(format!("cannot sign the access token: {error}"))
            })?;
        let refresh_token = match family {
            Some(family) => family,
            None => {
                let family = random_id().map_err(Failure::Unavailable)?;
                let secret = random_id().map_err(Failure::Unavailable)?;
                self.store_family(&family, &user.username, &secret, None)?;
                format!("rt1.{family}.{secret}")
            }
        };
        let answer = TokenAnswer {
            access_token,
            token_type: "bearer",
            expires_in: access_ttl,
            refresh_token,
        };
        let body =
            serde_json::to_vec(&answer).map_err(|error| Failure::Unavailable(error.to_string()))?;
        Ok(Reply::new(200)
            .with_header("content-type", "application/json")
            .with_header("cache-control", "no-store")
            .with_body(body))
    }

    /// Writes a family's next secret: fresh at login, by compare-and-swap over `previous` on
    /// refresh. `false`: another refresh got there first.
    fn store_family(
        &self,
        family: &str,
        user: &str,
        secret: &str,
        previous: Option<&[u8]>,
    ) -> Result<bool, Failure> {
        let entry = Family {
            u: user.to_owned(),
            h: hex::encode(Sha256::digest(secret.as_bytes())),
        };
        let value =
            serde_json::to_vec(&entry).map_err(|error| Failure::Unavailable(error.to_string()))?;
        kv::compare_and_swap(&family_key(family), previous, value, Some(self.refresh_ttl)).map_err(
            |error| Failure::Unavailable(format!("cannot store the refresh token: {error}")),
        )
    }

    /// Checks a refresh token and swaps its family to a new one; the new token and its user.
    fn rotate(&self, token: &str) -> Result<(String, &User), Failure> {
        let (family, secret) = split_refresh(token)?;
        let key = family_key(family);
        let stored = kv::get(&key)
            .map_err(|error| {
                Failure::Unavailable(format!("cannot read the refresh token: {error}"))
            })?
            .ok_or_else(|| {
                Failure::Credentials(
                    "the refresh token's family is unknown, expired or revoked".to_owned(),
                )
            })?;
        let entry: Family = serde_json::from_slice(&stored)
            .map_err(|_| Failure::Credentials(format!("the stored family `{key}` is not valid")))?;
        let presented = hex::encode(Sha256::digest(secret.as_bytes()));
        if !bool::from(presented.as_bytes().ct_eq(entry.h.as_bytes())) {
            self.revoke_family(family);
            return Err(Failure::Credentials(format!(
                "refresh token reused: family `{family}` of `{}` revoked",
                entry.u
            )));
        }
        let user = self
            .users
            .iter()
            .find(|user| user.username == entry.u)
            .ok_or_else(|| Failure::Credentials(format!("user `{}` no longer exists", entry.u)))?;
        let next = random_id().map_err(Failure::Unavailable)?;
        if !self.store_family(family, &user.username, &next, Some(&stored))? {
            // A concurrent refresh with the same token won: this one is the reuse.
            self.revoke_family(family);
            return Err(Failure::Credentials(format!(
                "refresh token used twice at once: family `{family}` revoked"
            )));
        }
        Ok((format!("rt1.{family}.{next}"), user))
    }

    /// Deletes a family. A failure leaves it to expire, and is in the log with the refusal.
    fn revoke_family(&self, family: &str) {
        if let Err(error) = kv::delete(&family_key(family)) {
            gateway_sdk::log::warn(&format!("cannot revoke family `{family}`: {error}"));
        }
    }

    fn revoke(&self, token: &str, request: &Request) -> Result<(), Failure> {
        let (family, _) = split_refresh(token)?;
        kv::delete(&family_key(family)).map_err(|error| {
            Failure::Unavailable(format!("cannot revoke the refresh token: {error}"))
        })?;
        // The access token, if given, is listed until it would expire anyway.
        if let Some(access) = request.bearer_token()
            && let Some((jti, exp)) = self.own_token_id(&access)
        {
            let left = exp.saturating_sub(clock::now_ms() / 1000);
            if left > 0 {
                kv::set(
                    &format!("revoked:{jti}"),
                    b"1",
                    Some(Duration::from_secs(left)),
                )
                .map_err(|error| {
                    Failure::Unavailable(format!("cannot revoke the access token: {error}"))
                })?;
            }
        }
        Ok(())
    }

    /// The `jti` and `exp` of an access token this filter signed (checked with its own key).
    fn own_token_id(&self, token: &str) -> Option<(String, u64)> {
        let key = self.decoding_key()?;
        let mut validation = jsonwebtoken::Validation::new(self.header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .ok()?;
        let jti = data.claims.get("jti")?.as_str()?.to_owned();
        let exp = data.claims.get("exp")?.as_u64()?;
        Some((jti, exp))
    }

    fn decoding_key(&self) -> Option<jsonwebtoken::DecodingKey> {
        // Only HMAC keys verify with the signing key itself; for the others the logout still
        // revokes the refresh family, and access tokens lapse with their short lifetime.
        (self.header.alg.family() == AlgorithmFamily::Hmac)
            .then(|| jsonwebtoken::DecodingKey::from_secret(self.signing.as_bytes()).ok())
            .flatten()
    }
}

fn family_key(family: &str) -> String {
    format!("family:{family}")
}

fn split_refresh(token: &str) -> Result<(&str, &str), Failure> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("rt1"), Some(family), Some(secret), None) if is_id(family) && is_id(secret) => {
            Ok((family, secret))
        }
        _ => Err(Failure::Credentials(
            "not a refresh token of this gateway".to_owned(),
        )),
    }
}

fn is_id(part: &str) -> bool {
    part.len() == 22
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 128 random bits, base64url (22 characters).
fn random_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| format!("no randomness: {error}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The body, if the request is a JSON POST whose body was read.
fn json_body(request: &Request) -> Result<Vec<u8>, Failure> {
    if request.content_type().as_deref() != Some("application/json") {
        return Err(Failure::BadRequest("the body must be application/json"));
    }
    match request.body() {
        Some(gateway_sdk::Body::Complete(body)) => Ok(body),
        Some(gateway_sdk::Body::TooLarge) => Err(Failure::BadRequest("the body is too large")),
        _ => Err(Failure::BadRequest("the body is missing")),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    serde_json::from_slice(body)
        .map_err(|_| Failure::BadRequest("the body is not the expected JSON object"))
}

fn password_kind(hash: &str) -> Result<PasswordKind, String> {
    if hash.starts_with("$argon2") {
        PasswordHash::new(hash).map_err(|error| format!("not an Argon2 hash: {error}"))?;
        Ok(PasswordKind::Argon2(hash.to_owned()))
    } else if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        // Checked for its shape only: verifying anything at load would cost a whole bcrypt
        // round per filter instance.
        let cost = hash.get(4..6).and_then(|cost| cost.parse::<u32>().ok());
        let shaped = hash.len() == 60
            && hash.as_bytes()[6] == b'$'
            && cost.is_some_and(|cost| (4..=31).contains(&cost))
            && hash[7..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
        if !shaped {
            return Err("not a bcrypt hash (`$2b$<cost>$` and 53 characters)".to_owned());
        }
        Ok(PasswordKind::Bcrypt(hash.to_owned()))
    } else {
        Err(
            "`password_hash` must be an Argon2id or bcrypt hash (`gateway auth hash-password`)"
                .to_owned(),
        )
    }
}

fn verify_password(hash: &PasswordKind, password: &str) -> bool {
    match hash {
        PasswordKind::Argon2(hash) => PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        }),
        PasswordKind::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
    }
}

fn signing_key(config: &SigningKeyConfig) -> Result<(EncodingKey, Algorithm), Error> {
    let algorithm = keys::algorithm(&config.algorithm)?;
    let refuse = |reason: String| Error::Endpoints(format!("signing key: {reason}"));
    let key = match (
        algorithm.family(),
        &config.secret,
        &config.secret_base64,
        &config.pem,
    ) {
        (AlgorithmFamily::Hmac, Some(secret), None, None) => {
            // The same length rule as for verification keys.
            keys::from_config(&crate::config::KeyConfig {
                kid: None,
                algorithm: config.algorithm.clone(),
                secret: Some(secret.clone()),
                secret_base64: None,
                pem: None,
                jwk: None,
            })?;
            EncodingKey::from_secret(secret.as_bytes())
                .map_err(|error| refuse(error.to_string()))?
        }
        (AlgorithmFamily::Hmac, None, Some(secret), None) => {
            EncodingKey::from_base64_secret(secret.trim())
                .map_err(|error| refuse(error.to_string()))?
        }
        (AlgorithmFamily::Rsa, None, None, Some(pem)) => {
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|error| refuse(error.to_string()))?
        }
        (AlgorithmFamily::Ec, None, None, Some(pem)) => {
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|error| refuse(error.to_string()))?
        }
        (AlgorithmFamily::Ed, None, None, Some(pem)) => {
            EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|error| refuse(error.to_string()))?
        }
        _ => {
            return Err(refuse(
                "HS algorithms take one of `secret` and `secret_base64`, the others a private `pem`".to_owned(),
            ));
        }
    };
    Ok((key, algorithm))
}
