//! JWT verification: the token's shape and header checked before any key is touched, the
//! signature by `jsonwebtoken` with a key pinned to the token's algorithm, then every claim
//! check by this module against the gateway's clock.
//!
//! `jsonwebtoken`'s own claim checks are all turned off: it reads the wall clock of the
//! process (not the gateway's, which the tests set), skips `nbf` unless asked and ignores
//! `crit`. Doing every check here keeps them in one place, each with a test.

use std::cell::RefCell;
use std::str::FromStr;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use gateway_sdk::{clock, log, outbound};

use crate::config::{ProviderConfig, RemoteJwksConfig};
use crate::error::Error;
use crate::identity::{Code, Identity, Method, Refusal, claim};
use crate::keys::{self, Key};

/// Header parameters that carry or point at a key. A token never chooses its own key.
const EMBEDDED_KEY_PARAMETERS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

/// A token split and decoded, its header checked; the signature not yet.
pub(crate) struct Parsed<'t> {
    pub(crate) token: &'t str,
    pub(crate) algorithm: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) claims: Map<String, Value>,
}

/// Splits a compact JWS and checks what can be checked without a key: the size, three
/// non-empty base64url segments, JSON objects in the first two, an algorithm that is one of
/// ours (exactly as written: `none`, `None` and `hs256` are all refused), no `crit` (this
/// filter understands no extension, so RFC 7515 §4.1.11 requires refusing any) and no key
/// carried in the token.
pub(crate) fn parse(token: &str, max_bytes: usize) -> Result<Parsed<'_>, Refusal> {
    if token.len() > max_bytes {
        return Err(Refusal::invalid(format!(
            "the token is {} bytes, over the {max_bytes} allowed",
            token.len()
        )));
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(Refusal::invalid(
            "the token is not three dot-separated segments",
        ));
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(Refusal::invalid(
            "a token segment is empty (unsigned tokens are refused)",
        ));
    }
    let header = object(header, "header")?;
    let claims = object(payload, "payload")?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Refusal::invalid("the signature is not base64url"))?;
    let algorithm = match header.get("alg") {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(Refusal::invalid("alg `none` is refused"));
        }
        Some(Value::String(name)) => Algorithm::from_str(name)
            .map_err(|_| Refusal::invalid(format!("unsupported alg `{}`", printable(name))))?,
        _ => return Err(Refusal::invalid("the header has no alg")),
    };
    if header.contains_key("crit") {
        return Err(Refusal::invalid(
            "the header has `crit`: no extension is understood",
        ));
    }
    if let Some(parameter) = EMBEDDED_KEY_PARAMETERS
        .iter()
        .find(|parameter| header.contains_key(**parameter))
    {
        return Err(Refusal::invalid(format!(
            "the header carries a key (`{parameter}`), which is never trusted"
        )));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Refusal::invalid("the `kid` is not a string")),
    };
    Ok(Parsed {
        token,
        algorithm,
        kid,
        claims,
    })
}

fn object(segment: &str, what: &str) -> Result<Map<String, Value>, Refusal> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Refusal::invalid(format!("the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Refusal::invalid(format!("the {what} is not a JSON object"))),
    }
}

/// At most 64 characters of something the client sent, without control characters, for a
/// log line.
pub(crate) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// One issuer: its checks, its keys, and the state of its remote JWKS if it has one.
pub(crate) struct Provider {
    pub(crate) name: String,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway_s: f64,
    require_exp: bool,
    keys: Vec<Key>,
    remote: Option<Remote>,
    pub(crate) check_revocation: bool,
}

/// A remote JWKS as this instance last fetched it.
struct Remote {
    config: RemoteJwksConfig,
    fallback: Option<Algorithm>,
    state: RefCell<RemoteState>,
}

#[derive(Default)]
struct RemoteState {
    keys: Vec<Key>,
    /// When the keys in use were fetched; `None` before the first success.
    fetched_ms: Option<u64>,
    /// When the last fetch was tried, to space out fetches that unknown `kid`s cause.
    attempted_ms: Option<u64>,
    /// Whether the last fetch failed, so a failing provider is logged once, not per request.
    failing: bool,
}

/// What a verified token says.
pub(crate) struct Verified {
    pub(crate) claims: Map<String, Value>,
    /// When the token stops being accepted (`exp` plus the leeway), in ms since the epoch.
    pub(crate) expires_ms: Option<u64>,
}

impl Provider {
    pub(crate) fn new(config: ProviderConfig) -> Result<Self, Error> {
        let at_fault = |reason: String| Error::Provider {
            provider: config.name.clone(),
            reason,
        };
        let mut keys = config
            .keys
            .iter()
            .map(keys::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        let fallback = config
            .jwks_algorithm
            .as_deref()
            .map(keys::algorithm)
            .transpose()?;
        if let Some(jwks) = &config.jwks {
            let document = serde_json::to_vec(jwks).map_err(|error| at_fault(error.to_string()))?;
            keys.extend(keys::from_jwks(&document, fallback)?);
        }
        if keys.is_empty() && config.jwks_url.is_none() {
            return Err(at_fault(
                "no keys: give `keys`, `jwks` or `jwks_url`".to_owned(),
            ));
        }
        if let Some(remote) = &config.jwks_url
            && !remote.path.starts_with('/')
        {
            return Err(at_fault("`jwks_url.path` must start with `/`".to_owned()));
        }
        Ok(Provider {
            issuer: config.issuer,
            audiences: config.audiences,
            leeway_s: config.leeway.as_secs_f64(),
            require_exp: config.require_exp,
            keys,
            remote: config.jwks_url.map(|remote| Remote {
                config: remote,
                fallback,
                state: RefCell::new(RemoteState::default()),
            }),
            check_revocation: config.check_revocation,
            name: config.name,
        })
    }

    /// Whether this provider could have issued the token: a token naming another issuer is
    /// not tried against its keys, which saves a signature check per provider.
    pub(crate) fn may_have_issued(&self, parsed: &Parsed<'_>) -> bool {
        match &self.issuer {
            Some(issuer) => parsed.claims.get("iss").and_then(Value::as_str) == Some(issuer),
            None => true,
        }
    }

    /// Verifies the signature with the keys pinned to the token's algorithm (and its `kid`,
    /// if it names one), then the claims.
    pub(crate) fn verify(&self, parsed: &Parsed<'_>) -> Result<Verified, Refusal> {
        let now_ms = clock::now_ms();
        self.refresh_if_due(now_ms, false);
        let mut verified = self.verify_signature(parsed)?;
        if verified.is_none()
            && parsed.kid.is_some()
            && self.remote.is_some()
            && !self.knows_kid(parsed)
        {
            // An unknown `kid` may be a key the provider has just rotated in.
            self.refresh_if_due(now_ms, true);
            verified = self.verify_signature(parsed)?;
        }
        let Some(claims) = verified else {
            if self.has_no_keys() {
                return Err(Refusal::new(
                    Code::Unavailable,
                    format!(
                        "provider `{}` has no keys: its JWKS could not be fetched",
                        self.name
                    ),
                ));
            }
            return Err(Refusal::invalid(match &parsed.kid {
                Some(kid) if !self.knows_kid(parsed) => {
                    format!(
                        "unknown kid `{}` for {:?}",
                        printable(kid),
                        parsed.algorithm
                    )
                }
                _ => format!("the signature does not verify ({:?})", parsed.algorithm),
            }));
        };
        self.check_claims(claims, now_ms)
    }

    fn has_no_keys(&self) -> bool {
        self.keys.is_empty()
            && self
                .remote
                .as_ref()
                .is_none_or(|remote| remote.state.borrow().keys.is_empty())
    }

    fn knows_kid(&self, parsed: &Parsed<'_>) -> bool {
        let named = |key: &Key| key.kid.is_some() && key.kid == parsed.kid;
        self.keys.iter().any(named)
            || self
                .remote
                .as_ref()
                .is_some_and(|remote| remote.state.borrow().keys.iter().any(named))
    }

    /// The claims if a candidate key verifies the signature, `None` if none does.
    fn verify_signature(&self, parsed: &Parsed<'_>) -> Result<Option<Map<String, Value>>, Refusal> {
        let remote = self.remote.as_ref().map(|remote| remote.state.borrow());
        let remote_keys = remote.iter().flat_map(|state| state.keys.iter());
        let candidates = self.keys.iter().chain(remote_keys).filter(|key| {
            key.algorithm == parsed.algorithm
                && match (&parsed.kid, &key.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                }
        });
        let mut validation = Validation::new(parsed.algorithm);
        // Every claim is checked in `check_claims`, against the gateway's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(
                parsed.token,
                &key.decoding,
                &validation,
            ) {
                Ok(data) => return Ok(Some(data.claims)),
                Err(error) => {
                    if log::enabled(log::Level::Debug) {
                        log::debug(&format!("provider `{}`: {error}", self.name));
                    }
                }
            }
        }
        Ok(None)
    }

    fn check_claims(&self, claims: Map<String, Value>, now_ms: u64) -> Result<Verified, Refusal> {
        let now = now_ms as f64 / 1000.0;
        let expires_ms = match claims.get("exp") {
            Some(Value::Number(exp)) => {
                // JSON numbers are finite, so the comparisons below are total.
                let exp = exp
                    .as_f64()
                    .ok_or_else(|| Refusal::invalid("`exp` is out of range"))?;
                // RFC 7519 §4.1.4: not accepted on or after `exp`.
                if now >= exp + self.leeway_s {
                    return Err(Refusal::new(Code::TokenExpired, "the token has expired"));
                }
                Some(((exp + self.leeway_s) * 1000.0) as u64)
            }
            Some(_) => return Err(Refusal::invalid("`exp` is not a number")),
            None if self.require_exp => return Err(Refusal::invalid("the token has no `exp`")),
            None => None,
        };
        match claims.get("nbf") {
            Some(Value::Number(nbf)) => {
                let nbf = nbf
                    .as_f64()
                    .ok_or_else(|| Refusal::invalid("`nbf` is out of range"))?;
                if now + self.leeway_s < nbf {
                    return Err(Refusal::invalid("the token is not valid yet (`nbf`)"));
                }
            }
            Some(_) => return Err(Refusal::invalid("`nbf` is not a number")),
            None => {}
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer)
        {
            return Err(Refusal::invalid("wrong or missing `iss`"));
        }
        if !self.audiences.is_empty() {
            let accepted = |aud: &str| self.audiences.iter().any(|wanted| wanted == aud);
            let fits = match claims.get("aud") {
                Some(Value::String(aud)) => accepted(aud),
                Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
                _ => false,
            };
            if !fits {
                return Err(Refusal::invalid("wrong or missing `aud`"));
            }
        }
        if claims.get("sub").is_some_and(|sub| !sub.is_string()) {
            return Err(Refusal::invalid("`sub` is not a string"));
        }
        Ok(Verified { claims, expires_ms })
    }

    /// Fetches the remote JWKS if the keys are older than `refresh` (or absent), or if
    /// `unknown_kid`; never more often than `min_refresh_interval`. A failed fetch keeps the
    /// keys in use.
    fn refresh_if_due(&self, now_ms: u64, unknown_kid: bool) {
        let Some(remote) = &self.remote else { return };
        let config = &remote.config;
        {
            let state = remote.state.borrow();
            let stale = state
                .fetched_ms
                .is_none_or(|fetched| now_ms.saturating_sub(fetched) >= millis(config.refresh));
            let spaced = state.attempted_ms.is_none_or(|attempted| {
                now_ms.saturating_sub(attempted) >= millis(config.min_refresh_interval)
            });
            if !(stale || unknown_kid) || !spaced {
                return;
            }
        }
        let fetched = outbound::Request::get(&config.service, &config.path)
            .header("accept", "application/json")
            .timeout(config.timeout)
            .send()
            .map_err(|error| error.to_string())
            .and_then(|response| match response.status() {
                200 => keys::from_jwks(response.body(), remote.fallback)
                    .map_err(|error| error.to_string()),
                status => Err(format!("status {status}")),
            });
        let mut state = remote.state.borrow_mut();
        state.attempted_ms = Some(now_ms);
        match fetched {
            Ok(keys) => {
                if state.failing {
                    log::info(&format!("provider `{}`: JWKS fetched again", self.name));
                }
                state.keys = keys;
                state.fetched_ms = Some(now_ms);
                state.failing = false;
            }
            Err(reason) => {
                if !state.failing {
                    log::warn(&format!(
                        "provider `{}`: cannot fetch the JWKS from `{}{}` ({reason}); keeping {} keys",
                        self.name,
                        config.service,
                        config.path,
                        state.keys.len()
                    ));
                }
                state.failing = true;
            }
        }
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The identity a verified token gives, with the configured claims read.
pub(crate) fn identity(
    verified: &Verified,
    role_claims: &[String],
    consumer_claim: Option<&str>,
) -> Result<Identity, Refusal> {
    let consumer = consumer_claim
        .and_then(|name| claim(&verified.claims, name))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let subject = match verified.claims.get("sub").and_then(Value::as_str) {
        Some(sub) => sub.to_owned(),
        None => consumer
            .clone()
            .ok_or_else(|| Refusal::invalid("the token has neither `sub` nor a consumer"))?,
    };
    Ok(Identity {
        subject,
        consumer,
        roles: crate::identity::roles(&verified.claims, role_claims),
        method: Method::Jwt,
        headers: Vec::new(),
    })
}
