//! The bundled `auth` filter: decides who a request comes from and whether it may go on.
//!
//! On every request, in order:
//!
//! 1. Removes the client's copies of the configured upstream headers and `strip_headers`,
//!    whatever else happens, so a client can never pose as a user to the upstream.
//! 2. Answers the token endpoints itself (login, refresh, logout; see [`tokens`]) on a route
//!    that configures `endpoints`.
//! 3. Lets a request on a public path through unauthenticated (patterns matched on the
//!    normalised path; see [`paths`]).
//! 4. Authenticates: a JWT from `Authorization: Bearer`, else a configured cookie, else a
//!    configured query parameter, verified by the providers in order (see [`jwt`]); else an
//!    API key (see [`apikey`]). A token seen before is found in the verified-token cache (see
//!    [`cache`]) and costs no verification.
//! 5. Authorizes with the route's rules: every rule whose path and method match must hold.
//! 6. Sets the request context for later filters and the upstream headers.
//!
//! The request context entries it sets (the rate-limit filter keys on them):
//!
//! | key | value |
//! |---|---|
//! | `auth.subject` | the JWT's `sub` (or its consumer, without `sub`), or the API key's consumer |
//! | `auth.consumer` | the API key's consumer, or the JWT's `consumer_claim`; absent when none |
//! | `auth.roles` | roles and permissions, comma-separated, sorted |
//! | `auth.method` | `jwt` or `api_key` |
//!
//! Refusals are in the gateway's JSON error shape and never say more than their code: 401
//! `MISSING_CREDENTIALS`, `INVALID_TOKEN` or `TOKEN_EXPIRED` with `WWW-Authenticate`, 403
//! `FORBIDDEN`, 503 `AUTH_UNAVAILABLE` when the keys or the store a decision needs cannot be
//! reached. The log line (info) says why, without the token.
//!
//! When the key-value store is unavailable: API keys in the configuration still work, keys
//! only in the store get 503; the revocation check lets verified tokens through; login,
//! refresh and logout get 503. Each instance logs one warning when the store fails and one
//! line when it answers again.

pub mod config;

mod apikey;
mod cache;
mod error;
mod identity;
mod jwt;
mod keys;
mod paths;
#[cfg(test)]
mod tests;
mod tokens;

use std::cell::Cell;
use std::rc::Rc;

use gateway_sdk::metrics::{Counter, Histogram};
use gateway_sdk::{Action, Filter, Headers, Phases, Reads, Reply, Request, clock, kv, log};

use crate::apikey::ApiKeys;
use crate::cache::TokenCache;
use crate::config::Config;
use crate::error::Error;
use crate::identity::{Code, HeaderSource, Identity, Refusal};
use crate::jwt::Provider;
use crate::paths::{Pattern, Rule};
use crate::tokens::Endpoints;

/// The algorithms, as the verification histogram labels them.
const ALGORITHMS: [&str; 13] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA", "other",
];

/// The outcomes, as the decisions counter labels them.
const OUTCOMES: [&str; 8] = [
    "allowed",
    "public",
    "endpoint",
    "missing_credentials",
    "invalid_token",
    "token_expired",
    "forbidden",
    "unavailable",
];

/// The filter, built once per instance from the route's [`Config`].
pub struct Auth {
    providers: Vec<Provider>,
    bearer: bool,
    cookie: Option<String>,
    query: Option<String>,
    max_token_bytes: usize,
    role_claims: Vec<String>,
    consumer_claim: Option<String>,
    api_keys: Option<ApiKeys>,
    public: Vec<Pattern>,
    rules: Vec<Rule>,
    headers: Vec<(String, HeaderSource)>,
    strip: Vec<String>,
    realm: String,
    cache: TokenCache,
    endpoints: Option<Endpoints>,
    store_down: Cell<bool>,
    metrics: Metrics,
}

struct Metrics {
    decisions: Counter,
    cache: Counter,
    verify_seconds: Histogram,
}

impl Filter for Auth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Auth::build(config).map_err(|error| error.to_string())
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    fn reads(&self) -> Reads {
        let mut reads = Reads::default().path().method();
        if self.bearer {
            reads = reads.request_header("authorization");
        }
        if self.cookie.is_some() {
            reads = reads.request_header("cookie");
        }
        if let Some(api_keys) = &self.api_keys {
            reads = reads.request_header(&api_keys.header);
        }
        if let Some(endpoints) = &self.endpoints {
            reads = reads.request_body(endpoints.max_body);
        }
        reads
    }

    fn on_request(&self, request: &mut Request) -> Action {
        for (header, _) in &self.headers {
            request.remove_header(header);
        }
        for header in &self.strip {
            request.remove_header(header);
        }
        let path = request.path();
        if let Some(endpoints) = &self.endpoints
            && endpoints.serves(&path)
        {
            self.metrics.decisions.inc_with(&["endpoint"]);
            return Action::Respond(self.endpoint(endpoints, request));
        }
        if self.public.iter().any(|pattern| pattern.matches(&path)) {
            self.metrics.decisions.inc_with(&["public"]);
            return Action::Continue;
        }
        match self
            .authenticate(request)
            .and_then(|identity| self.authorize(request, &path, identity))
        {
            Ok(identity) => {
                self.metrics.decisions.inc_with(&["allowed"]);
                match self.pass_on(request, &identity) {
                    Ok(()) => Action::Continue,
                    Err(error) => Action::Respond(Reply::error(
                        500,
                        "FILTER_FAILED",
                        &format!("auth failed: {error}"),
                        request,
                    )),
                }
            }
            Err(refusal) => Action::Respond(self.refuse(request, &path, &refusal)),
        }
    }
}

impl Auth {
    fn build(config: Config) -> Result<Self, Error> {
        let providers = config
            .providers
            .into_iter()
            .map(Provider::new)
            .collect::<Result<Vec<_>, _>>()?;
        let api_keys = config.api_keys.map(ApiKeys::new).transpose()?;
        let public = config
            .public_paths
            .iter()
            .map(|pattern| Pattern::parse(pattern))
            .collect::<Result<Vec<_>, _>>()?;
        let rules = config
            .rules
            .into_iter()
            .map(Rule::new)
            .collect::<Result<Vec<_>, _>>()?;
        let headers = config
            .upstream_headers
            .iter()
            .map(|(header, source)| {
                Ok((
                    header.to_ascii_lowercase(),
                    HeaderSource::parse(header, source)?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let endpoints = config.endpoints.map(Endpoints::new).transpose()?;
        Ok(Auth {
            providers,
            bearer: config.token.bearer,
            cookie: config.token.cookie,
            query: config.token.query,
            max_token_bytes: config.max_token_bytes,
            role_claims: config.role_claims,
            consumer_claim: config.consumer_claim,
            api_keys,
            public,
            rules,
            headers,
            strip: config.strip_headers,
            realm: config.realm,
            cache: TokenCache::new(
                config.cache.max_entries,
                u64::try_from(config.cache.max_ttl.as_millis()).unwrap_or(u64::MAX),
            ),
            endpoints,
            store_down: Cell::new(false),
            metrics: Metrics {
                decisions: Counter::with_labels(
                    "decisions_total",
                    "Requests decided, by outcome",
                    &[("outcome", &OUTCOMES)],
                ),
                cache: Counter::with_labels(
                    "token_cache_total",
                    "Verified-token cache lookups",
                    &[("result", &["hit", "miss"])],
                ),
                verify_seconds: Histogram::with_labels(
                    "verify_seconds",
                    "Time of one JWT signature and claims verification in the filter",
                    &[
                        1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2,
                    ],
                    &[("alg", &ALGORITHMS)],
                ),
            },
        })
    }

    /// The caller's identity, from a JWT if one is presented, else from an API key.
    fn authenticate(&self, request: &Request) -> Result<Rc<Identity>, Refusal> {
        if let Some(token) = self.token(request) {
            return self.verify_token(&token);
        }
        if let Some(api_keys) = &self.api_keys {
            let presented = request.header(&api_keys.header).or_else(|| {
                api_keys
                    .query
                    .as_deref()
                    .and_then(|name| request.query_param(name))
            });
            if let Some(presented) = presented.filter(|key| !key.is_empty()) {
                let mut identity = api_keys
                    .authenticate(&presented)
                    .inspect_err(|refusal| self.store_failed(refusal))?;
                identity.headers = identity::header_values(&self.headers, &identity, None);
                return Ok(Rc::new(identity));
            }
        }
        Err(Refusal::new(Code::MissingCredentials, "no credentials"))
    }

    fn token(&self, request: &Request) -> Option<String> {
        if self.bearer
            && let Some(token) = request.bearer_token()
        {
            return Some(token);
        }
        if let Some(cookie) = &self.cookie
            && let Some(token) = request.cookie(cookie).filter(|token| !token.is_empty())
        {
            return Some(token);
        }
        self.query
            .as_deref()
            .and_then(|name| request.query_param(name))
            .filter(|token| !token.is_empty())
    }

    fn verify_token(&self, token: &str) -> Result<Rc<Identity>, Refusal> {
        let now_ms = clock::now_ms();
        let key = cache::key(token);
        if let Some((identity, provider, jti)) = self.cache.get(&key, now_ms) {
            self.metrics.cache.inc_with(&["hit"]);
            self.check_revoked(provider, jti.as_deref())?;
            return Ok(identity);
        }
        self.metrics.cache.inc_with(&["miss"]);
        if self.providers.is_empty() {
            return Err(Refusal::invalid(
                "a token was sent, and no provider is configured",
            ));
        }
        let parsed = jwt::parse(token, self.max_token_bytes)?;
        let mut refusal = Refusal::invalid("no provider issues tokens with this `iss`");
        for (index, provider) in self.providers.iter().enumerate() {
            if !provider.may_have_issued(&parsed) {
                continue;
            }
            let started = clock::monotonic_ns();
            let verified = provider.verify(&parsed);
            let seconds = clock::monotonic_ns().saturating_sub(started) as f64 / 1e9;
            self.metrics
                .verify_seconds
                .observe_with(&[algorithm_name(parsed.algorithm)], seconds);
            match verified {
                Ok(verified) => {
                    let mut identity = jwt::identity(
                        &verified,
                        &self.role_claims,
                        self.consumer_claim.as_deref(),
                    )?;
                    identity.headers =
                        identity::header_values(&self.headers, &identity, Some(&verified.claims));
                    let identity = Rc::new(identity);
                    let jti = verified
                        .claims
                        .get("jti")
                        .and_then(|jti| jti.as_str())
                        .map(str::to_owned);
                    self.check_revoked(index, jti.as_deref())?;
                    self.cache.insert(
                        key,
                        cache::Entry {
                            identity: identity.clone(),
                            until_ms: 0,
                            provider: index,
                            jti,
                        },
                        verified.expires_ms,
                        now_ms,
                    );
                    return Ok(identity);
                }
                Err(failed) => {
                    let failed = Refusal {
                        reason: format!("provider `{}`: {}", provider.name, failed.reason),
                        code: failed.code,
                    };
                    // The most telling refusal wins: an expired token over a wrong key.
                    if failed.code != Code::InvalidToken || refusal.code == Code::InvalidToken {
                        refusal = failed;
                    }
                }
            }
        }
        Err(refusal)
    }

    /// Refuses a token that logout listed, for providers that ask. A store that cannot
    /// answer lets the verified token through.
    fn check_revoked(&self, provider: usize, jti: Option<&str>) -> Result<(), Refusal> {
        let Some(jti) = jti else { return Ok(()) };
        if !self
            .providers
            .get(provider)
            .is_some_and(|provider| provider.check_revocation)
        {
            return Ok(());
        }
        match kv::get(&format!("revoked:{jti}")) {
            Ok(Some(_)) => Err(Refusal::invalid("the token was revoked (logout)")),
            Ok(None) => {
                self.store_answered();
                Ok(())
            }
            Err(error) if error.is_unavailable() => {
                self.store_failed(&Refusal::new(
                    Code::Unavailable,
                    format!("not checking revocation: {error}"),
                ));
                Ok(())
            }
            Err(error) => Err(Refusal::invalid(format!(
                "cannot check revocation: {error}"
            ))),
        }
    }

    fn authorize(
        &self,
        request: &Request,
        path: &str,
        identity: Rc<Identity>,
    ) -> Result<Rc<Identity>, Refusal> {
        if self.rules.is_empty() {
            return Ok(identity);
        }
        let method = request.method();
        for rule in self.rules.iter().filter(|rule| rule.applies(&method, path)) {
            if let Some(unmet) = rule.unmet(&identity.roles) {
                return Err(Refusal::new(
                    Code::Forbidden,
                    format!("`{}` {unmet}", jwt::printable(&identity.subject)),
                ));
            }
        }
        Ok(identity)
    }

    /// The context entries and upstream headers of an authenticated request.
    fn pass_on(
        &self,
        request: &mut Request,
        identity: &Identity,
    ) -> Result<(), gateway_sdk::Error> {
        request.set_context("auth.subject", truncated(&identity.subject, 4096))?;
        match &identity.consumer {
            Some(consumer) => request.set_context("auth.consumer", truncated(consumer, 4096))?,
            None => request.remove_context("auth.consumer"),
        }
        let roles = identity.roles_joined();
        request.set_context("auth.roles", roles_within(&roles, 4096))?;
        request.set_context("auth.method", identity.method.as_str())?;
        for (header, value) in &identity.headers {
            request.set_header(header, value)?;
        }
        Ok(())
    }

    fn refuse(&self, request: &Request, path: &str, refusal: &Refusal) -> Reply {
        let outcome = match refusal.code {
            Code::MissingCredentials => "missing_credentials",
            Code::InvalidToken => "invalid_token",
            Code::TokenExpired => "token_expired",
            Code::Forbidden => "forbidden",
            Code::Unavailable => "unavailable",
        };
        self.metrics.decisions.inc_with(&[outcome]);
        // An unavailable store or JWKS is logged once when it fails, not per request.
        if refusal.code != Code::Unavailable && log::enabled(log::Level::Info) {
            log::info(&format!(
                "refused {} {}: {}: {}",
                request.method(),
                jwt::printable(path),
                refusal.code.as_str(),
                refusal.reason
            ));
        }
        let reply = Reply::error(
            refusal.code.status(),
            refusal.code.as_str(),
            refusal.code.message(),
            request,
        );
        match refusal.code {
            Code::MissingCredentials => reply.with_header("www-authenticate", self.challenge(None)),
            Code::InvalidToken => reply.with_header(
                "www-authenticate",
                self.challenge(Some("the token is not valid")),
            ),
            Code::TokenExpired => reply.with_header(
                "www-authenticate",
                self.challenge(Some("the token has expired")),
            ),
            Code::Forbidden | Code::Unavailable => reply,
        }
    }

    /// `WWW-Authenticate`: a Bearer challenge if providers are configured (with RFC 6750's
    /// `invalid_token` error for a token refused), an ApiKey one if API keys are.
    fn challenge(&self, token_error: Option<&str>) -> String {
        let mut challenges = Vec::with_capacity(2);
        if !self.providers.is_empty() {
            challenges.push(match token_error {
                Some(description) => format!(
                    "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{description}\"",
                    self.realm
                ),
                None => format!("Bearer realm=\"{}\"", self.realm),
            });
        }
        if let Some(api_keys) = &self.api_keys {
            challenges.push(format!(
                "ApiKey realm=\"{}\", header=\"{}\"",
                self.realm, api_keys.header
            ));
        }
        challenges.join(", ")
    }

    fn endpoint(&self, endpoints: &Endpoints, request: &Request) -> Reply {
        if request.method() != "POST" {
            return Reply::error(405, "METHOD_NOT_ALLOWED", "use POST", request)
                .with_header("allow", "POST");
        }
        match endpoints.answer(request) {
            Ok(reply) => {
                self.store_answered();
                reply
            }
            Err(tokens::Failure::BadRequest(message)) => {
                Reply::error(400, "BAD_REQUEST", message, request)
            }
            Err(tokens::Failure::Credentials(reason)) => {
                log::info(&format!(
                    "refused {}: INVALID_CREDENTIALS: {reason}",
                    jwt::printable(&request.path())
                ));
                Reply::error(401, "INVALID_CREDENTIALS", "invalid credentials", request)
                    .with_header("www-authenticate", self.challenge(None))
            }
            Err(tokens::Failure::Unavailable(reason)) => {
                self.store_failed(&Refusal::new(Code::Unavailable, reason));
                Reply::error(
                    503,
                    Code::Unavailable.as_str(),
                    Code::Unavailable.message(),
                    request,
                )
            }
        }
    }

    /// Logs the first failure of the store after it worked, not every one.
    fn store_failed(&self, refusal: &Refusal) {
        if refusal.code == Code::Unavailable && !self.store_down.replace(true) {
            log::warn(&format!("key-value store unavailable: {}", refusal.reason));
        }
    }

    fn store_answered(&self) {
        if self.store_down.replace(false) {
            log::info("key-value store answers again");
        }
    }
}

fn algorithm_name(algorithm: jsonwebtoken::Algorithm) -> &'static str {
    use jsonwebtoken::Algorithm::*;
    match algorithm {
        HS256 => "HS256",
        HS384 => "HS384",
        HS512 => "HS512",
        RS256 => "RS256",
        RS384 => "RS384",
        RS512 => "RS512",
        PS256 => "PS256",
        PS384 => "PS384",
        PS512 => "PS512",
        ES256 => "ES256",
        ES384 => "ES384",
        EdDSA => "EdDSA",
        _ => "other",
    }
}

/// At most `limit` bytes, cut on a character boundary: a context value has a bound.
fn truncated(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The roles that fit in `limit` bytes, cut after a whole role.
fn roles_within(roles: &str, limit: usize) -> &str {
    if roles.len() <= limit {
        return roles;
    }
    let cut = truncated(roles, limit);
    match cut.rfind(',') {
        Some(end) => &cut[..end],
        None => "",
    }
}

gateway_sdk::export_filter!(Auth);
