//! Unit tests through the SDK's test host, with tokens signed here by `jsonwebtoken` with the
//! test keys in `tests/fixtures/auth`.

use std::time::Duration;

use base64::Engine as _;
use gateway_sdk::serde_json::{Value, json};
use gateway_sdk::testing::{
    KvFailure, OutboundFailure, TestHost, TestOutboundResponse, TestRequest,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::Auth;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/auth/", $name))
    };
}

const RSA_PRIVATE: &str = fixture!("rsa-private.pem");
const RSA_PUBLIC: &str = fixture!("rsa-public.pem");
const RSA2_PRIVATE: &str = fixture!("rsa2-private.pem");
const EC256_PRIVATE: &str = fixture!("ec256-private.pem");
const EC256_PUBLIC: &str = fixture!("ec256-public.pem");
const EC384_PRIVATE: &str = fixture!("ec384-private.pem");
const EC384_PUBLIC: &str = fixture!("ec384-public.pem");
const ED_PRIVATE: &str = fixture!("ed25519-private.pem");
const ED_PUBLIC: &str = fixture!("ed25519-public.pem");
const JWKS: &str = fixture!("jwks.json");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": "https://idp.test", "aud": "api", "exp": NOW + 600, "roles": ["user"]})
}

fn sign(algorithm: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(format!("{SECRET}{SECRET}").as_bytes())
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()),
        Algorithm::ES384 => EncodingKey::from_ec_pem(EC384_PRIVATE.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()),
        _ => EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()),
    }
    .expect("test key");
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("signs")
}

/// A token with any header, signed with HMAC over exactly what it carries.
fn forge(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use hmac_sign::sign as hmac;
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{input}.{}", b64(&hmac(secret, input.as_bytes())))
}

mod hmac_sign {
    /// HMAC-SHA256 (RFC 2104) with `sha2`, for forged headers `jsonwebtoken` would not write.
    pub(super) fn sign(key: &[u8], message: &[u8]) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner_hash = Sha256::new()
            .chain_update(&inner)
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(&outer)
            .chain_update(inner_hash)
            .finalize()
            .to_vec()
    }
}

fn hs_secret() -> String {
    format!("{SECRET}{SECRET}")
}

/// Every algorithm, one key each, pinned.
fn all_keys() -> Value {
    json!([
        {"kid": "hs256", "algorithm": "HS256", "secret": hs_secret()},
        {"kid": "hs384", "algorithm": "HS384", "secret": hs_secret()},
        {"kid": "hs512", "algorithm": "HS512", "secret": hs_secret()},
        {"kid": "rs256", "algorithm": "RS256", "pem": RSA_PUBLIC},
        {"kid": "rs384", "algorithm": "RS384", "pem": RSA_PUBLIC},
        {"kid": "rs512", "algorithm": "RS512", "pem": RSA_PUBLIC},
        {"kid": "ps256", "algorithm": "PS256", "pem": RSA_PUBLIC},
        {"kid": "ps384", "algorithm": "PS384", "pem": RSA_PUBLIC},
        {"kid": "ps512", "algorithm": "PS512", "pem": RSA_PUBLIC},
        {"kid": "es256", "algorithm": "ES256", "pem": EC256_PUBLIC},
        {"kid": "es384", "algorithm": "ES384", "pem": EC384_PUBLIC},
        {"kid": "eddsa", "algorithm": "EdDSA", "pem": ED_PUBLIC},
    ])
}

fn config() -> Value {
    json!({
        "providers": [{
            "name": "idp",
            "issuer": "https://idp.test",
            "audiences": ["api"],
            "keys": all_keys(),
        }],
        "public_paths": ["/health", "/api/v1/auth/login", "/docs/*"],
        "upstream_headers": {"X-User-Id": "subject", "X-User-Roles": "roles", "X-User-Email": "claim:email"},
    })
}

fn host(config: Value) -> TestHost<Auth> {
    let mut host = TestHost::<Auth>::new(config).expect("config accepted");
    host.set_now_ms(NOW * 1000);
    host
}

/// The status and code of a request with this bearer token (200 and "" when it goes on).
fn outcome(host: &mut TestHost<Auth>, token: &str) -> (u16, String) {
    let mut request =
        TestRequest::get("/orders").with_header("authorization", &format!("Bearer {token}"));
    status_of(host, &mut request)
}

fn status_of(host: &mut TestHost<Auth>, request: &mut TestRequest) -> (u16, String) {
    match host.on_request(request).reply() {
        None => (200, String::new()),
        Some(reply) => {
            let body: Value =
                gateway_sdk::serde_json::from_slice(&reply.body).expect("a JSON error");
            (
                reply.status,
                body["code"].as_str().unwrap_or_default().to_owned(),
            )
        }
    }
}

fn refused(code: &str) -> (u16, String) {
    (if code == "FORBIDDEN" { 403 } else { 401 }, code.to_owned())
}

#[test]
fn every_algorithm_verifies_with_its_pinned_key() {
    let mut host = host(config());
    let algorithms = [
        (Algorithm::HS256, "hs256"),
        (Algorithm::HS384, "hs384"),
        (Algorithm::HS512, "hs512"),
        (Algorithm::RS256, "rs256"),
        (Algorithm::RS384, "rs384"),
        (Algorithm::RS512, "rs512"),
        (Algorithm::PS256, "ps256"),
        (Algorithm::PS384, "ps384"),
        (Algorithm::PS512, "ps512"),
        (Algorithm::ES256, "es256"),
        (Algorithm::ES384, "es384"),
        (Algorithm::EdDSA, "eddsa"),
    ];
    for (algorithm, kid) in algorithms {
        let token = sign(algorithm, Some(kid), &claims());
        assert_eq!(
            outcome(&mut host, &token),
            (200, String::new()),
            "{algorithm:?}"
        );
        // Without a kid, the keys pinned to the algorithm are tried.
        let token = sign(
            algorithm,
            None,
            &json!({"sub": "bob", "iss": "https://idp.test", "aud": "api", "exp": NOW + 60}),
        );
        assert_eq!(
            outcome(&mut host, &token),
            (200, String::new()),
            "{algorithm:?} without kid"
        );
    }
    // A kid naming a key of another algorithm does not verify.
    let token = sign(Algorithm::RS256, Some("ps256"), &claims());
    assert_eq!(outcome(&mut host, &token), refused("INVALID_TOKEN"));
}

#[test]
fn the_identity_goes_into_the_context_and_upstream_headers_replacing_the_clients() {
    let mut host = host(json!({
        "providers": [{"name": "idp", "keys": [{"algorithm": "RS256", "pem": RSA_PUBLIC}]}],
        "consumer_claim": "azp",
        "role_claims": ["roles", "scope", "realm_access.roles"],
        "upstream_headers": {"X-User-Id": "subject", "X-User-Roles": "roles", "X-User-Email": "claim:email", "X-Consumer": "consumer"},
    }));
    let token = sign(
        Algorithm::RS256,
        None,
        &json!({
            "sub": "alice", "exp": NOW + 60, "azp": "web", "email": "a@example.com",
            "roles": ["admin"], "scope": "orders:read orders:write", "realm_access": {"roles": ["staff"]},
        }),
    );
    let mut request = TestRequest::get("/orders")
        .with_header("authorization", &format!("Bearer {token}"))
        .with_header("x-user-id", "mallory")
        .with_header("X-User-Roles", "admin")
        .with_header("x-consumer", "evil");
    assert!(host.on_request(&mut request).is_continue());
    assert_eq!(request.header_values("x-user-id"), ["alice"]);
    assert_eq!(
        request.header("x-user-roles").as_deref(),
        Some("admin,orders:read,orders:write,staff")
    );
    assert_eq!(
        request.header("x-user-email").as_deref(),
        Some("a@example.com")
    );
    assert_eq!(request.header_values("x-consumer"), ["web"]);
    assert_eq!(request.context("auth.subject").as_deref(), Some("alice"));
    assert_eq!(request.context("auth.consumer").as_deref(), Some("web"));
    assert_eq!(
        request.context("auth.roles").as_deref(),
        Some("admin,orders:read,orders:write,staff")
    );
    assert_eq!(request.context("auth.method").as_deref(), Some("jwt"));

    // On a refused request and a public one, the spoofed headers are gone all the same.
    let mut request = TestRequest::get("/orders").with_header("x-user-id", "mallory");
    assert_eq!(
        status_of(&mut host, &mut request),
        refused("MISSING_CREDENTIALS")
    );
}

#[test]
fn spoofed_headers_are_removed_on_public_paths_too() {
    let mut host = host(config());
    let mut request = TestRequest::get("/health").with_header("x-user-id", "admin");
    assert!(host.on_request(&mut request).is_continue());
    assert_eq!(request.header("x-user-id"), None);
    assert_eq!(request.context("auth.subject"), None);
}

#[test]
fn unsigned_and_odd_algorithms_are_refused() {
    let mut host = host(config());
    let body = claims();
    for alg in [
        "none", "None", "NONE", "nOnE", "hs256", "Hs256", "rs256", "RS999", "",
    ] {
        let token = forge(
            &json!({"alg": alg, "typ": "JWT"}),
            &body,
            hs_secret().as_bytes(),
        );
        assert_eq!(
            outcome(&mut host, &token),
            refused("INVALID_TOKEN"),
            "alg {alg:?}"
        );
        // And with an empty signature, as `none` tokens come.
        let unsigned = format!(
            "{}.{}.",
            b64(json!({"alg": alg}).to_string().as_bytes()),
            b64(body.to_string().as_bytes())
        );
        assert_eq!(
            outcome(&mut host, &unsigned),
            refused("INVALID_TOKEN"),
            "unsigned {alg:?}"
        );
    }
    let no_alg = forge(&json!({"typ": "JWT"}), &body, hs_secret().as_bytes());
    assert_eq!(outcome(&mut host, &no_alg), refused("INVALID_TOKEN"));
}

#[test]
fn an_hmac_token_signed_with_the_rsa_public_key_is_refused() {
    // Key confusion: only RS256 keys here, and the attacker signs HS256 with the public PEM.
    let mut host = host(
        json!({"providers": [{"name": "idp", "keys": [{"algorithm": "RS256", "pem": RSA_PUBLIC}]}]}),
    );
    let confused = forge(&json!({"alg": "HS256"}), &claims(), RSA_PUBLIC.as_bytes());
    assert_eq!(outcome(&mut host, &confused), refused("INVALID_TOKEN"));
    let good = sign(Algorithm::RS256, None, &claims());
    assert_eq!(outcome(&mut host, &good), (200, String::new()));
}

#[test]
fn time_claims_are_checked_with_the_leeway() {
    let mut host = host(config());
    let with = |extra: Value| {
        let mut claims = claims();
        for (key, value) in extra.as_object().expect("object") {
            claims[key] = value.clone();
        }
        sign(Algorithm::HS256, Some("hs256"), &claims)
    };
    assert_eq!(
        outcome(&mut host, &with(json!({"exp": NOW - 61}))),
        refused("TOKEN_EXPIRED")
    );
    assert_eq!(
        outcome(&mut host, &with(json!({"exp": NOW - 60}))),
        refused("TOKEN_EXPIRED"),
        "exp + leeway is already past"
    );
    assert_eq!(
        outcome(&mut host, &with(json!({"exp": NOW - 30}))),
        (200, String::new()),
        "within the leeway"
    );
    assert_eq!(
        outcome(&mut host, &with(json!({"nbf": NOW + 61}))),
        refused("INVALID_TOKEN")
    );
    assert_eq!(
        outcome(&mut host, &with(json!({"nbf": NOW + 30}))),
        (200, String::new()),
        "within the leeway"
    );
    assert_eq!(
        outcome(&mut host, &with(json!({"exp": "tomorrow"}))),
        refused("INVALID_TOKEN")
    );
    assert_eq!(
        outcome(&mut host, &with(json!({"nbf": "now"}))),
        refused("INVALID_TOKEN")
    );
    let no_exp = sign(
        Algorithm::HS256,
        Some("hs256"),
        &json!({"sub": "a", "iss": "https://idp.test", "aud": "api"}),
    );
    assert_eq!(
        outcome(&mut host, &no_exp),
        refused("INVALID_TOKEN"),
        "exp is required by default"
    );
}

#[test]
fn a_zero_leeway_is_exact() {
    let mut host = host(
        json!({"providers": [{"name": "idp", "leeway": "0s", "keys": [{"algorithm": "HS256", "secret": hs_secret()}]}]}),
    );
    let token = sign(Algorithm::HS256, None, &json!({"sub": "a", "exp": NOW}));
    assert_eq!(outcome(&mut host, &token), refused("TOKEN_EXPIRED"));
    let token = sign(Algorithm::HS256, None, &json!({"sub": "a", "exp": NOW + 1}));
    assert_eq!(outcome(&mut host, &token), (200, String::new()));
}

#[test]
fn issuer_and_audience_are_required_when_configured() {
    let mut host = host(config());
    let cases = [
        json!({"sub": "a", "exp": NOW + 60, "iss": "https://evil.test", "aud": "api"}),
        json!({"sub": "a", "exp": NOW + 60, "aud": "api"}),
        json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.test", "aud": "other"}),
        json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.test"}),
        json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.test", "aud": ["x", "y"]}),
        json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.test", "aud": 7}),
    ];
    for claims in cases {
        let token = sign(Algorithm::HS256, Some("hs256"), &claims);
        assert_eq!(
            outcome(&mut host, &token),
            refused("INVALID_TOKEN"),
            "{claims}"
        );
    }
    let token = sign(
        Algorithm::HS256,
        Some("hs256"),
        &json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.test", "aud": ["x", "api"]}),
    );
    assert_eq!(outcome(&mut host, &token), (200, String::new()));
}

#[test]
fn malformed_tokens_are_refused() {
    let mut host = host(config());
    let good = sign(Algorithm::RS256, Some("rs256"), &claims());
    let (head, rest) = good.split_once('.').expect("three parts");
    let (payload, signature) = rest.split_once('.').expect("three parts");
    let mut flipped = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("b64");
    flipped[10] ^= 1;
    let cases = [
        format!("{head}.{payload}.{}", b64(&flipped)),
        good[..good.len() - 5].to_owned(),
        format!("{head}.{payload}"),
        format!("{good}.extra"),
        format!("{head}.{payload}.{signature}."),
        format!("{head}.{payload}!.{signature}"),
        format!("{head}.{payload}.{signature}=="),
        format!("{}.{payload}.{signature}", b64(b"not json")),
        format!("{head}.{}.{signature}", b64(b"[1,2]")),
        format!("{head}.{}.{signature}", b64(b"\"text\"")),
        "..".to_owned(),
        "abc".to_owned(),
    ];
    for token in cases {
        assert_eq!(
            outcome(&mut host, &token),
            refused("INVALID_TOKEN"),
            "{token}"
        );
    }
    assert_eq!(outcome(&mut host, &good), (200, String::new()));
}

#[test]
fn keys_in_the_header_and_crit_are_refused_and_kids_only_look_up() {
    let mut host = host(config());
    let secret = hs_secret();
    let headers = [
        json!({"alg": "HS256", "kid": "hs256", "jwk": {"kty": "oct", "k": b64(b"attacker")}}),
        json!({"alg": "HS256", "kid": "hs256", "jku": "https://evil.test/jwks"}),
        json!({"alg": "HS256", "kid": "hs256", "x5u": "https://evil.test/cert"}),
        json!({"alg": "HS256", "kid": "hs256", "x5c": ["MIIB"]}),
        json!({"alg": "HS256", "kid": "hs256", "crit": ["exp"], "exp": 1}),
        json!({"alg": "HS256", "kid": "hs256", "crit": []}),
        json!({"alg": "HS256", "kid": "unknown"}),
        json!({"alg": "HS256", "kid": "../../../../dev/null"}),
        json!({"alg": "HS256", "kid": "' OR '1'='1"}),
        json!({"alg": "HS256", "kid": 7}),
    ];
    for header in headers {
        let token = forge(&header, &claims(), secret.as_bytes());
        assert_eq!(
            outcome(&mut host, &token),
            refused("INVALID_TOKEN"),
            "{header}"
        );
    }
    // The same forge with a clean header verifies: the refusals above are the header's.
    let token = forge(
        &json!({"alg": "HS256", "kid": "hs256"}),
        &claims(),
        secret.as_bytes(),
    );
    assert_eq!(outcome(&mut host, &token), (200, String::new()));
    let logs = host.logs();
    assert!(
        logs.iter()
            .any(|line| line.message.contains("never trusted")),
        "{logs:?}"
    );
    assert!(
        logs.iter().all(|line| !line.message.contains(&token)),
        "no token in the log"
    );
}

#[test]
fn an_oversized_token_is_refused_before_parsing() {
    let mut host = host(config());
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(32 * 1024),
        "b".repeat(32 * 1024),
        "c"
    );
    assert_eq!(outcome(&mut host, &huge), refused("INVALID_TOKEN"));
    let mut request =
        TestRequest::get("/orders").with_header("authorization", &format!("Bearer {huge}"));
    let action = host.on_request(&mut request);
    let reply = action.reply().expect("refused");
    assert!(
        !reply.body_text().contains("aaaa"),
        "the body never echoes the token"
    );
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"the token is not valid\""
        )
    );
}

#[test]
fn missing_credentials_get_a_challenge() {
    let mut host = host(config());
    let mut request = TestRequest::get("/orders");
    let action = host.on_request(&mut request);
    let reply = action.reply().expect("refused");
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"gateway\"")
    );
    let body: Value = gateway_sdk::serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["code"], "MISSING_CREDENTIALS");
    assert!(body["request_id"].is_string() && body["timestamp"].is_string());
    let mut basic = TestRequest::get("/orders").with_header("authorization", "Basic YTpi");
    assert_eq!(
        status_of(&mut host, &mut basic),
        refused("MISSING_CREDENTIALS")
    );
}

#[test]
fn tokens_come_from_a_cookie_or_a_query_parameter_when_configured() {
    let mut config = config();
    config["token"] = json!({"bearer": false, "cookie": "session", "query": "access_token"});
    let mut host = host(config);
    let token = sign(Algorithm::ES256, Some("es256"), &claims());
    let mut request =
        TestRequest::get("/orders").with_header("cookie", &format!("theme=dark; session={token}"));
    assert_eq!(status_of(&mut host, &mut request), (200, String::new()));
    let mut request = TestRequest::get(&format!("/orders?x=1&access_token={token}"));
    assert_eq!(status_of(&mut host, &mut request), (200, String::new()));
    let mut request =
        TestRequest::get("/orders").with_header("authorization", &format!("Bearer {token}"));
    assert_eq!(
        status_of(&mut host, &mut request),
        refused("MISSING_CREDENTIALS"),
        "bearer turned off"
    );
}

#[test]
fn providers_are_tried_in_order() {
    let mut host = host(json!({"providers": [
        {"name": "partner", "issuer": "https://partner.test", "keys": [{"algorithm": "ES256", "pem": EC256_PUBLIC}]},
        {"name": "internal", "keys": [{"algorithm": "RS256", "pem": RSA_PUBLIC}]},
    ]}));
    let partner = sign(
        Algorithm::ES256,
        None,
        &json!({"sub": "p", "iss": "https://partner.test", "exp": NOW + 60}),
    );
    let internal = sign(
        Algorithm::RS256,
        None,
        &json!({"sub": "i", "exp": NOW + 60}),
    );
    assert_eq!(outcome(&mut host, &partner), (200, String::new()));
    assert_eq!(outcome(&mut host, &internal), (200, String::new()));
    // Expiry is reported by the provider whose key verified the token.
    let expired = sign(
        Algorithm::RS256,
        None,
        &json!({"sub": "i", "exp": NOW - 3600}),
    );
    assert_eq!(outcome(&mut host, &expired), refused("TOKEN_EXPIRED"));
    // A partner-issued token signed with the internal key is neither.
    let wrong = sign(
        Algorithm::RS256,
        None,
        &json!({"sub": "p", "iss": "https://partner.test", "exp": NOW + 60}),
    );
    assert_eq!(
        outcome(&mut host, &wrong),
        (200, String::new()),
        "internal accepts any issuer"
    );
}

#[test]
fn a_reused_token_costs_no_verification_and_never_outlives_exp() {
    let mut host = host(config());
    let token = sign(
        Algorithm::RS256,
        Some("rs256"),
        &json!({"sub": "a", "iss": "https://idp.test", "aud": "api", "exp": NOW + 120}),
    );
    for _ in 0..5 {
        assert_eq!(outcome(&mut host, &token), (200, String::new()));
    }
    assert_eq!(host.histogram_count("verify_seconds", &["RS256"]), 1);
    assert_eq!(host.counter("token_cache_total", &["hit"]), 4.0);
    host.advance(Duration::from_secs(120 + 59));
    assert_eq!(
        outcome(&mut host, &token),
        (200, String::new()),
        "within the leeway, from the cache"
    );
    host.advance(Duration::from_secs(1));
    assert_eq!(outcome(&mut host, &token), refused("TOKEN_EXPIRED"));
    assert_eq!(host.histogram_count("verify_seconds", &["RS256"]), 2);
}

#[test]
fn the_cache_is_bounded() {
    let mut config = config();
    config["cache"] = json!({"max_entries": 3});
    let mut host = host(config);
    for n in 0..10 {
        let token = sign(
            Algorithm::HS256,
            Some("hs256"),
            &json!({"sub": format!("u{n}"), "iss": "https://idp.test", "aud": "api", "exp": NOW + 60}),
        );
        assert_eq!(outcome(&mut host, &token), (200, String::new()));
    }
    assert!(host.filter().cache.len() <= 3);
}

#[test]
fn a_jwks_pins_each_key_to_its_algorithm() {
    let mut host = host(
        json!({"providers": [{"name": "idp", "jwks": gateway_sdk::serde_json::from_str::<Value>(JWKS).expect("json")}]}),
    );
    for (algorithm, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-256"),
        (Algorithm::ES384, "ec-384"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        let token = sign(algorithm, Some(kid), &claims());
        assert_eq!(outcome(&mut host, &token), (200, String::new()), "{kid}");
    }
    // rsa-1 is RS256 in the JWKS: a PS256 token naming it is refused.
    let token = sign(Algorithm::PS256, Some("rsa-1"), &claims());
    assert_eq!(outcome(&mut host, &token), refused("INVALID_TOKEN"));
    // A token signed by another RSA key naming rsa-1.
    let key = EncodingKey::from_rsa_pem(RSA2_PRIVATE.as_bytes()).expect("key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".to_owned());
    let token = jsonwebtoken::encode(&header, &claims(), &key).expect("signs");
    assert_eq!(outcome(&mut host, &token), refused("INVALID_TOKEN"));
}

#[test]
fn bad_keys_are_refused_at_load() {
    let bad = [
        json!({"providers": [{"name": "p", "keys": [{"algorithm": "none", "secret": hs_secret()}]}]}),
        json!({"providers": [{"name": "p", "keys": [{"algorithm": "hs256", "secret": hs_secret()}]}]}),
        json!({"providers": [{"name": "p", "keys": [{"algorithm": "HS256", "secret": "short"}]}]}),
        json!({"providers": [{"name": "p", "keys": [{"algorithm": "HS256", "pem": RSA_PUBLIC}]}]}),
        json!({"providers": [{"name": "p", "keys": [{"algorithm": "RS256", "secret": hs_secret()}]}]}),
        json!({"providers": [{"name": "p", "keys": [{"algorithm": "ES256", "pem": RSA_PUBLIC}]}]}),
        json!({"providers": [{"name": "p", "keys": [{"algorithm": "RS256", "pem": RSA_PUBLIC, "secret": "x"}]}]}),
        json!({"providers": [{"name": "p", "keys": []}]}),
        json!({"providers": [{"name": "p", "jwks": {"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]}}]}),
        json!({"providers": [{"name": "p", "keys": [{"algorithm": "RS256", "pem": RSA_PUBLIC}], "typo": 1}]}),
        json!({"public_paths": ["health"]}),
        json!({"upstream_headers": {"x-user": "password"}}),
        json!({"upstream_headers": {"x user": "subject"}}),
        json!({"api_keys": {"keys": [{"sha256": "abc", "consumer": "c"}]}}),
    ];
    for config in bad {
        assert!(TestHost::<Auth>::new(config.clone()).is_err(), "{config}");
    }
}

fn api_key_config() -> Value {
    json!({
        "api_keys": {
            "query": "api_key",
            "keys": [{"sha256": hex::encode(sha2::Sha256::digest_str("key-one")), "consumer": "billing", "roles": ["reports"]}],
            "kv": true,
        },
        "upstream_headers": {"X-Consumer": "consumer", "X-User-Id": "subject"},
        "rules": [{"path": "/reports/*", "roles": ["reports"]}],
    })
}

trait DigestStr {
    fn digest_str(text: &str) -> [u8; 32];
}

impl DigestStr for sha2::Sha256 {
    fn digest_str(text: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(text.as_bytes()).into()
    }
}

#[test]
fn api_keys_map_to_consumers() {
    let mut host = host(api_key_config());
    let mut request = TestRequest::get("/reports/1")
        .with_header("x-api-key", "key-one")
        .with_header("x-consumer", "spoof");
    assert_eq!(status_of(&mut host, &mut request), (200, String::new()));
    assert_eq!(request.header_values("x-consumer"), ["billing"]);
    assert_eq!(request.context("auth.subject").as_deref(), Some("billing"));
    assert_eq!(request.context("auth.consumer").as_deref(), Some("billing"));
    assert_eq!(request.context("auth.roles").as_deref(), Some("reports"));
    assert_eq!(request.context("auth.method").as_deref(), Some("api_key"));
    let mut request = TestRequest::get("/reports/1?api_key=key-one");
    assert_eq!(status_of(&mut host, &mut request), (200, String::new()));
    let mut request = TestRequest::get("/reports/1").with_header("x-api-key", "key-two");
    assert_eq!(status_of(&mut host, &mut request), refused("INVALID_TOKEN"));

    // A key kept in the store, by its hash.
    let hash = hex::encode(sha2::Sha256::digest_str("key-two"));
    host.kv_set(
        &format!("apikey:{hash}"),
        r#"{"consumer":"shop","roles":[]}"#,
        None,
    );
    let mut request = TestRequest::get("/orders").with_header("x-api-key", "key-two");
    assert_eq!(status_of(&mut host, &mut request), (200, String::new()));
    let mut request = TestRequest::get("/reports/1").with_header("x-api-key", "key-two");
    assert_eq!(status_of(&mut host, &mut request), refused("FORBIDDEN"));

    // Without the store, configured keys still work and stored ones get 503.
    host.kv_fails(KvFailure::Unavailable);
    let mut request = TestRequest::get("/reports/1").with_header("x-api-key", "key-one");
    assert_eq!(status_of(&mut host, &mut request), (200, String::new()));
    for _ in 0..3 {
        let mut request = TestRequest::get("/orders").with_header("x-api-key", "key-two");
        assert_eq!(
            status_of(&mut host, &mut request),
            (503, "AUTH_UNAVAILABLE".to_owned())
        );
    }
    let warnings = host
        .logs()
        .iter()
        .filter(|line| line.message.contains("unavailable"))
        .count();
    assert_eq!(warnings, 1, "one line per outage");
}

#[test]
fn rules_require_roles_or_permissions_per_method() {
    let mut host = host(json!({
        "providers": [{"name": "idp", "keys": [{"algorithm": "HS256", "secret": hs_secret()}]}],
        "rules": [
            {"path": "/admin/*", "roles": ["admin", "ops"]},
            {"path": "/orders/*", "methods": ["POST", "DELETE"], "permissions": ["orders:write", "orders:read"]},
        ],
    }));
    let token = |claims: Value| sign(Algorithm::HS256, None, &claims);
    let user = token(json!({"sub": "u", "exp": NOW + 60, "scope": "orders:read"}));
    let writer = token(json!({"sub": "w", "exp": NOW + 60, "scope": "orders:read orders:write"}));
    let ops = token(json!({"sub": "o", "exp": NOW + 60, "roles": ["ops"]}));
    let call = |host: &mut TestHost<Auth>, method: &str, path: &str, token: &str| {
        let mut request =
            TestRequest::new(method, path).with_header("authorization", &format!("Bearer {token}"));
        status_of(host, &mut request).0
    };
    assert_eq!(call(&mut host, "GET", "/admin/users", &user), 403);
    assert_eq!(call(&mut host, "GET", "/admin", &ops), 200);
    assert_eq!(call(&mut host, "GET", "/orders/1", &user), 200);
    assert_eq!(call(&mut host, "POST", "/orders", &user), 403);
    assert_eq!(call(&mut host, "DELETE", "/orders/1", &writer), 200);
    assert_eq!(
        call(&mut host, "GET", "/administrator", &user),
        200,
        "a segment boundary"
    );
}

#[test]
fn public_paths_match_the_normalised_path_only() {
    let mut host = host(config());
    for public in ["/health", "/api/v1/auth/login", "/docs", "/docs/index.html"] {
        assert_eq!(
            status_of(&mut host, &mut TestRequest::get(public)),
            (200, String::new()),
            "{public}"
        );
    }
    // The gateway resolves dot segments before filters; what is left is matched literally.
    for private in [
        "/users",
        "/api/v1/auth/login/x",
        "/api/v1/auth%2Flogin",
        "/HEALTH",
        "/Health",
        "/health/",
        "/docsx",
        "/api/v1/auth/login%2F..%2F..%2Fusers",
    ] {
        assert_eq!(
            status_of(&mut host, &mut TestRequest::get(private)),
            refused("MISSING_CREDENTIALS"),
            "{private}"
        );
    }
}

#[test]
fn a_remote_jwks_is_fetched_cached_refreshed_and_kept_on_failure() {
    use std::cell::Cell;
    use std::rc::Rc;
    let mut host = host(json!({"providers": [{
        "name": "idp",
        "jwks_url": {"service": "idp", "path": "/.well-known/jwks.json", "refresh": "5m", "min_refresh_interval": "30s"},
    }]}));
    let fetches = Rc::new(Cell::new(0));
    let up = Rc::new(Cell::new(true));
    let (counted, serving) = (fetches.clone(), up.clone());
    host.grant_service("idp", move |sent| {
        assert_eq!(sent.path_and_query, "/.well-known/jwks.json");
        counted.set(counted.get() + 1);
        if serving.get() {
            Ok(TestOutboundResponse::new(200).with_body(JWKS))
        } else {
            Err(OutboundFailure::Failed("connection refused".into()))
        }
    });
    let token = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        &json!({"sub": "a", "exp": NOW + 3600}),
    );
    assert_eq!(outcome(&mut host, &token), (200, String::new()));
    let other = sign(
        Algorithm::ES256,
        Some("ec-256"),
        &json!({"sub": "b", "exp": NOW + 3600}),
    );
    assert_eq!(outcome(&mut host, &other), (200, String::new()));
    assert_eq!(fetches.get(), 1, "fetched once, then kept");

    // An unknown kid refetches, but not more often than min_refresh_interval.
    let unknown = sign(
        Algorithm::RS256,
        Some("rsa-new"),
        &json!({"sub": "c", "exp": NOW + 3600}),
    );
    assert_eq!(outcome(&mut host, &unknown), refused("INVALID_TOKEN"));
    assert_eq!(outcome(&mut host, &unknown), refused("INVALID_TOKEN"));
    assert_eq!(fetches.get(), 1, "too soon after the first fetch");
    host.advance(Duration::from_secs(31));
    assert_eq!(outcome(&mut host, &unknown), refused("INVALID_TOKEN"));
    assert_eq!(fetches.get(), 2);

    // The provider goes down: after `refresh` the fetch fails and the keys are kept.
    up.set(false);
    host.advance(Duration::from_secs(301));
    let fresh = sign(
        Algorithm::EdDSA,
        Some("ed-1"),
        &json!({"sub": "d", "exp": NOW + 3600}),
    );
    assert_eq!(outcome(&mut host, &fresh), (200, String::new()));
    assert_eq!(fetches.get(), 3);
    let warnings = host
        .logs()
        .iter()
        .filter(|line| line.message.contains("cannot fetch the JWKS"))
        .count();
    assert_eq!(warnings, 1);
}

#[test]
fn without_any_fetched_keys_the_answer_is_unavailable() {
    let mut host = host(
        json!({"providers": [{"name": "idp", "jwks_url": {"service": "idp", "path": "/jwks"}}]}),
    );
    host.grant_service("idp", |_| Ok(TestOutboundResponse::new(500)));
    let token = sign(Algorithm::RS256, Some("rsa-1"), &claims());
    assert_eq!(
        outcome(&mut host, &token),
        (503, "AUTH_UNAVAILABLE".to_owned())
    );
}

mod endpoints {
    use super::*;

    fn argon2_hash(password: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        // Small parameters: the unit tests check the logic, not the cost.
        let params = argon2::Params::new(64, 1, 1, None).expect("params");
        let hasher =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        hasher
            .hash_password(password.as_bytes(), &salt)
            .expect("hash")
            .to_string()
    }

    pub(super) fn login_config() -> Value {
        json!({
            "providers": [{"name": "self", "issuer": "gateway", "check_revocation": true, "keys": [{"algorithm": "HS256", "secret": hs_secret()}]}],
            "endpoints": {
                "users": [
                    {"username": "alice", "password_hash": argon2_hash("wonderland"), "roles": ["admin"]},
                    {"username": "bob", "password_hash": bcrypt::hash_with_salt("builder", 4, *b"0123456789abcdef").expect("bcrypt").format_for_version(bcrypt::Version::TwoB)},
                ],
                "signing": {"algorithm": "HS256", "secret": hs_secret()},
                "issuer": "gateway",
                "access_ttl": "10m",
            },
        })
    }

    fn post(host: &mut TestHost<Auth>, path: &str, body: &str) -> (u16, Value) {
        let mut request = TestRequest::post(path)
            .with_header("content-type", "application/json")
            .with_body(body.as_bytes().to_vec());
        send(host, &mut request)
    }

    fn send(host: &mut TestHost<Auth>, request: &mut TestRequest) -> (u16, Value) {
        let action = host.on_request(request);
        let reply = action.reply().expect("the filter answers");
        let body = if reply.body.is_empty() {
            Value::Null
        } else {
            gateway_sdk::serde_json::from_slice(&reply.body).expect("json")
        };
        (reply.status, body)
    }

    #[test]
    fn login_answers_tokens_that_the_providers_accept() {
        let mut host = host(login_config());
        let (status, body) = post(
            &mut host,
            "/api/v1/auth/login",
            r#"{"username":"alice","password":"wonderland"}"#,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 600);
        let access = body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned();
        assert!(
            body["refresh_token"]
                .as_str()
                .is_some_and(|token| token.starts_with("rt1."))
        );
        let mut request =
            TestRequest::get("/orders").with_header("authorization", &format!("Bearer {access}"));
        assert!(host.on_request(&mut request).is_continue());
        assert_eq!(request.context("auth.subject").as_deref(), Some("alice"));
        assert_eq!(request.context("auth.roles").as_deref(), Some("admin"));
        let (status, _) = post(
            &mut host,
            "/api/v1/auth/login",
            r#"{"username":"bob","password":"builder"}"#,
        );
        assert_eq!(status, 200, "bcrypt hashes verify");
    }

    #[test]
    fn wrong_credentials_get_one_answer() {
        let mut host = host(login_config());
        let (wrong_password, a) = post(
            &mut host,
            "/api/v1/auth/login",
            r#"{"username":"alice","password":"nope"}"#,
        );
        let (no_user, b) = post(
            &mut host,
            "/api/v1/auth/login",
            r#"{"username":"carol","password":"nope"}"#,
        );
        assert_eq!((wrong_password, no_user), (401, 401));
        assert_eq!((&a["code"], &a["error"]), (&b["code"], &b["error"]));
        assert_eq!(a["code"], "INVALID_CREDENTIALS");
    }

    #[test]
    fn bad_requests_get_400() {
        let mut host = host(login_config());
        for body in [
            "{",
            r#"{"username":"alice"}"#,
            "[]",
            r#"{"username":1,"password":"x"}"#,
            "",
        ] {
            let (status, reply) = post(&mut host, "/api/v1/auth/login", body);
            assert_eq!(status, 400, "{body}: {reply}");
            assert_eq!(reply["code"], "BAD_REQUEST");
        }
        let mut request = TestRequest::post("/api/v1/auth/login")
            .with_header("content-type", "text/plain")
            .with_body(br#"{"username":"alice","password":"wonderland"}"#.to_vec());
        assert_eq!(send(&mut host, &mut request).0, 400);
        let mut request = TestRequest::get("/api/v1/auth/login");
        assert_eq!(send(&mut host, &mut request).0, 405);
    }

    #[test]
    fn refresh_rotates_and_reuse_revokes_the_family() {
        let mut host = host(login_config());
        let (_, login) = post(
            &mut host,
            "/api/v1/auth/login",
            r#"{"username":"alice","password":"wonderland"}"#,
        );
        let first = login["refresh_token"].as_str().expect("refresh").to_owned();
        let (status, refreshed) = post(
            &mut host,
            "/api/v1/auth/refresh",
            &json!({"refresh_token": first}).to_string(),
        );
        assert_eq!(status, 200, "{refreshed}");
        let second = refreshed["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned();
        assert_ne!(first, second);
        // The first one again: reuse. The family goes, so the second fails too.
        let (status, reuse) = post(
            &mut host,
            "/api/v1/auth/refresh",
            &json!({"refresh_token": first}).to_string(),
        );
        assert_eq!(
            (status, reuse["code"].as_str()),
            (401, Some("INVALID_CREDENTIALS"))
        );
        let (status, _) = post(
            &mut host,
            "/api/v1/auth/refresh",
            &json!({"refresh_token": second}).to_string(),
        );
        assert_eq!(status, 401);
        for bad in [
            "",
            "rt1.x.y",
            "garbage",
            "rt1.aaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbb",
        ] {
            let (status, _) = post(
                &mut host,
                "/api/v1/auth/refresh",
                &json!({"refresh_token": bad}).to_string(),
            );
            assert_eq!(status, 401, "{bad}");
        }
    }

    #[test]
    fn logout_revokes_the_refresh_family_and_the_access_token() {
        let mut host = host(login_config());
        let (_, login) = post(
            &mut host,
            "/api/v1/auth/login",
            r#"{"username":"alice","password":"wonderland"}"#,
        );
        let access = login["access_token"].as_str().expect("access").to_owned();
        let refresh = login["refresh_token"].as_str().expect("refresh").to_owned();
        let mut request =
            TestRequest::get("/orders").with_header("authorization", &format!("Bearer {access}"));
        assert!(host.on_request(&mut request).is_continue());
        let mut logout = TestRequest::post("/api/v1/auth/logout")
            .with_header("content-type", "application/json")
            .with_header("authorization", &format!("Bearer {access}"))
            .with_body(json!({"refresh_token": refresh}).to_string().into_bytes());
        assert_eq!(send(&mut host, &mut logout).0, 204);
        let (status, _) = post(
            &mut host,
            "/api/v1/auth/refresh",
            &json!({"refresh_token": refresh}).to_string(),
        );
        assert_eq!(status, 401);
        // Revoked, even though the token is in the cache.
        assert_eq!(outcome(&mut host, &access), refused("INVALID_TOKEN"));
    }

    #[test]
    fn without_the_store_the_endpoints_answer_503() {
        let mut host = host(login_config());
        host.kv_fails(KvFailure::Unavailable);
        let (status, body) = post(
            &mut host,
            "/api/v1/auth/login",
            r#"{"username":"alice","password":"wonderland"}"#,
        );
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("AUTH_UNAVAILABLE"))
        );
        host.kv_recovers();
        let (status, _) = post(
            &mut host,
            "/api/v1/auth/login",
            r#"{"username":"alice","password":"wonderland"}"#,
        );
        assert_eq!(status, 200);
    }

    #[test]
    fn only_hashes_are_accepted_as_passwords() {
        let mut config = login_config();
        config["endpoints"]["users"][0]["password_hash"] = json!("wonderland");
        assert!(TestHost::<Auth>::new(config).is_err());
        let mut config = login_config();
        config["endpoints"]["users"][0]["password_hash"] = json!("$2b$04$short");
        assert!(TestHost::<Auth>::new(config).is_err());
    }
}
