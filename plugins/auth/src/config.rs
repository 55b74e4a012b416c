//! The auth filter's configuration, as a route's `config` gives it. Every key is checked when
//! the route is loaded: keys are parsed, hashes recognised and patterns read then, so a request
//! never meets a configuration error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The route's configuration. Every key is optional; `{}` refuses every request that is not on
/// a public path, since nothing can authenticate it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// JWT providers, tried in order; the first that accepts the token authenticates it.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Where a JWT is read from: `Authorization: Bearer` unless turned off, then a cookie and a
    /// query parameter if named.
    #[serde(default)]
    pub token: TokenSources,
    /// The longest token accepted, in bytes; a longer one is `INVALID_TOKEN` before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Claims that carry roles and permissions: each a JSON array of strings or a string of
    /// space-separated names (as `scope` is). A dotted name reads a nested claim
    /// (`realm_access.roles`).
    #[serde(default = "default_role_claims")]
    pub role_claims: Vec<String>,
    /// The claim naming the consumer (the client application) of a JWT, e.g. `client_id` or
    /// `azp`; without it a JWT has no consumer.
    #[serde(default)]
    pub consumer_claim: Option<String>,
    /// API keys, read from a header or a query parameter and stored only as SHA-256 hashes.
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    /// Path patterns that skip authentication, matched on the normalised path: `/health`
    /// (exactly), `/docs/*` (`/docs` and everything under it), `*` (every path).
    #[serde(default)]
    pub public_paths: Vec<String>,
    /// Authorization rules: every rule whose path and method match must hold.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Headers sent upstream for an authenticated request, by name: `subject`, `roles`
    /// (comma-separated), `consumer`, `method`, or `claim:<name>` (a JWT claim; a string, a
    /// number, or an array joined with commas). Any copy the client sent is always removed.
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, String>,
    /// More request headers always removed before the request goes on, whatever it carries.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The verified-token cache of each filter instance.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Token login, refresh and logout answered by the filter itself, on the route that serves
    /// them. Only a route with this section reads request bodies.
    #[serde(default)]
    pub endpoints: Option<EndpointsConfig>,
}

fn default_max_token_bytes() -> usize {
    8192
}

fn default_role_claims() -> Vec<String> {
    vec![
        "roles".to_owned(),
        "scope".to_owned(),
        "permissions".to_owned(),
    ]
}

fn default_realm() -> String {
    "gateway".to_owned()
}

/// Where a JWT comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSources {
    /// Read `Authorization: Bearer <token>`.
    #[serde(default = "yes")]
    pub bearer: bool,
    /// A cookie holding the token, when there is no bearer token.
    #[serde(default)]
    pub cookie: Option<String>,
    /// A query parameter holding the token, when there is neither.
    #[serde(default)]
    pub query: Option<String>,
}

impl Default for TokenSources {
    fn default() -> Self {
        TokenSources {
            bearer: true,
            cookie: None,
            query: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// One issuer of JWTs and the keys it signs with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Named in log lines.
    pub name: String,
    /// The required `iss`; without it any issuer is accepted.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted audiences: the token's `aud` must hold one of them. Empty: `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Whether a token without `exp` is refused.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Keys given one by one, each with its algorithm.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// A JWKS document (`{"keys": [...]}`), inline.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// A JWKS fetched from a service of the gateway (granted with `allow_services`).
    #[serde(default)]
    pub jwks_url: Option<RemoteJwksConfig>,
    /// The algorithm of JWKS keys that name none (an RSA key fits several). Keys with an `alg`
    /// keep theirs; an RSA key with neither is refused.
    #[serde(default)]
    pub jwks_algorithm: Option<String>,
    /// Whether each token's `jti` is looked up in the revocation list that logout writes (one
    /// key-value read per request).
    #[serde(default)]
    pub check_revocation: bool,
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

/// One verification key, pinned to one algorithm.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The `kid` a token must name to use this key; a token without `kid` tries every key of
    /// its algorithm.
    #[serde(default)]
    pub kid: Option<String>,
    /// The only algorithm this key verifies: HS256/384/512, RS256/384/512, PS256/384/512,
    /// ES256/384 or EdDSA.
    pub algorithm: String,
    /// An HMAC secret, as text.
    #[serde(default)]
    pub secret: Option<String>,
    /// An HMAC secret, base64.
    #[serde(default)]
    pub secret_base64: Option<String>,
    /// A public key in PEM (RSA, EC or Ed25519; SPKI or PKCS#1).
    #[serde(default)]
    pub pem: Option<String>,
    /// A public key as a JWK object.
    #[serde(default)]
    pub jwk: Option<serde_json::Value>,
}

/// A JWKS fetched through the outbound capability.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksConfig {
    /// The gateway service that serves it.
    pub service: String,
    /// Its path (and query).
    pub path: String,
    /// How long fetched keys are used before they are fetched again.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// The shortest time between two fetches caused by tokens naming an unknown `kid`.
    #[serde(default = "default_jwks_min_interval", with = "humantime_serde")]
    pub min_refresh_interval: Duration,
    /// How long one fetch may take; keep it well inside the filter's `timeout`.
    #[serde(default = "default_jwks_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_jwks_min_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_jwks_timeout() -> Duration {
    Duration::from_millis(500)
}

/// API keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// The header holding the key.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// A query parameter holding the key, when the header is absent.
    #[serde(default)]
    pub query: Option<String>,
    /// The keys, as SHA-256 hashes.
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
    /// Whether keys not in `keys` are looked up in the key-value store, at
    /// `apikey:<sha256 hex>`, whose value is `{"consumer": "...", "roles": [...]}`.
    #[serde(default)]
    pub kv: bool,
}

fn default_api_key_header() -> String {
    "x-api-key".to_owned()
}

/// One API key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The SHA-256 of the key, 64 hex digits (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// The consumer the key belongs to; it becomes the subject too.
    pub consumer: String,
    /// The consumer's roles and permissions.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// An authorization rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The path pattern it applies to, as `public_paths` are written; every path if absent.
    #[serde(default)]
    pub path: Option<String>,
    /// The methods it applies to (upper-case); every method if empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The caller needs at least one of these roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The caller needs every one of these permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// The verified-token cache.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Tokens kept per filter instance; 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// The longest a token is kept, for tokens without `exp`.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: default_cache_entries(),
            max_ttl: default_cache_ttl(),
        }
    }
}

fn default_cache_entries() -> usize {
    4096
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(300)
}

/// Token login, refresh and logout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsConfig {
    /// The login path.
    #[serde(default = "default_login")]
    pub login: String,
    /// The refresh path.
    #[serde(default = "default_refresh")]
    pub refresh: String,
    /// The logout path.
    #[serde(default = "default_logout")]
    pub logout: String,
    /// The users who may log in.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// The key access tokens are signed with.
    pub signing: SigningKeyConfig,
    /// The `iss` of access tokens.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` of access tokens.
    #[serde(default)]
    pub audience: Option<String>,
    /// How long an access token is valid.
    #[serde(default = "default_access_ttl", with = "humantime_serde")]
    pub access_ttl: Duration,
    /// How long a refresh token is valid, counted from its issue.
    #[serde(default = "default_refresh_ttl", with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// The largest request body read, in bytes; a longer one gets 413.
    #[serde(default = "default_max_body")]
    pub max_body: u32,
}

fn default_login() -> String {
    "/api/v1/auth/login".to_owned()
}

fn default_refresh() -> String {
    "/api/v1/auth/refresh".to_owned()
}

fn default_logout() -> String {
    "/api/v1/auth/logout".to_owned()
}

fn default_access_ttl() -> Duration {
    Duration::from_secs(900)
}

fn default_refresh_ttl() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_max_body() -> u32 {
    16 * 1024
}

/// A user who may log in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The login name; it becomes the token's `sub`.
    pub username: String,
    /// An Argon2id (`$argon2id$...`) or bcrypt (`$2b$...`) hash, from `gateway auth
    /// hash-password`.
    pub password_hash: String,
    /// The roles put in the token's `roles` claim.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The signing key of access tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// Its algorithm, as for verification keys.
    pub algorithm: String,
    /// Put in the token header, so verifiers pick the key.
    #[serde(default)]
    pub kid: Option<String>,
    /// An HMAC secret, as text.
    #[serde(default)]
    pub secret: Option<String>,
    /// An HMAC secret, base64.
    #[serde(default)]
    pub secret_base64: Option<String>,
    /// A private key in PEM (PKCS#8, or PKCS#1 for RSA).
    #[serde(default)]
    pub pem: Option<String>,
}
