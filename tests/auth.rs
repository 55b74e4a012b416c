//! The bundled `auth` filter end to end: the real compiled component in the real gateway, in
//! front of a real echo upstream, with tokens signed here by `jsonwebtoken` with the test keys
//! in `tests/fixtures/auth`. The attack catalogue is a table, each entry refused with its code;
//! then login, refresh rotation, reuse detection and logout, across a reload and on Redis, with
//! a password hashed by `gateway auth hash-password`.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use gateway_tests::{
    Gateway, RedisServer, Reply, Upstream, gateway_bin, http1_client, plugin_dir, send,
};
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const HS_SECRET: &str = "an-e2e-secret-that-is-at-least-32-bytes-long";

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/auth")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign_rs256(kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).expect("RSA key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("signs")
}

fn sign_es256(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(fixture("ec256-private.pem").as_bytes()).expect("EC key");
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).expect("signs")
}

/// An HS256 token over any header, signed with `secret`, made with `jsonwebtoken`'s own
/// HMAC so the signature is right and only the header is wrong.
fn forge(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = EncodingKey::from_secret(secret).expect("an HMAC key");
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).expect("signs");
    format!("{input}.{signature}")
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": "https://idp.test", "aud": "api", "exp": now() + 600, "roles": ["user"]})
}

fn with(extra: Value) -> Value {
    let mut claims = claims();
    for (key, value) in extra.as_object().expect("object") {
        if value.is_null() {
            claims.as_object_mut().expect("object").remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

/// The auth filter's definition and the routes every test here uses: `/api/v1/auth/*` serves
/// the token endpoints; everything else needs a token from `idp` (RS256 pinned to `kid`
/// `rsa-1`, and ES256) or from the gateway itself (HS256). `users` is the endpoints' list.
fn config(upstream: &Upstream, kv: &str, users: Value) -> String {
    let auth = json!({
        "providers": [
            {
                "name": "idp",
                "issuer": "https://idp.test",
                "audiences": ["api"],
                "keys": [
                    {"kid": "rsa-1", "algorithm": "RS256", "pem": fixture("rsa-public.pem")},
                    {"algorithm": "ES256", "pem": fixture("ec256-public.pem")},
                ],
            },
            {
                "name": "gateway",
                "issuer": "gateway",
                "check_revocation": true,
                "keys": [{"algorithm": "HS256", "secret": HS_SECRET}],
            },
        ],
        "public_paths": ["/health", "/api/v1/auth/login", "/api/v1/auth/refresh", "/docs/*"],
        "upstream_headers": {"X-User-Id": "subject", "X-User-Roles": "roles"},
        "rules": [{"path": "/admin/*", "roles": ["admin"]}],
    });
    let mut tokens = auth.clone();
    tokens["endpoints"] = json!({
        "users": users,
        "signing": {"algorithm": "HS256", "secret": HS_SECRET},
        "issuer": "gateway",
        "access_ttl": "5m",
    });
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
watch: false
limits:
  max_header_bytes: 128KiB
{kv}
plugin_dir: "{plugins}"
filters:
  auth:
    module: gateway_plugin_auth.wasm
    timeout: 10s
    memory_limit: 64MiB
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: tokens
    match: {{ path_prefix: /api/v1/auth }}
    filters:
      - filter: auth
        config: {tokens}
  - name: everything
    match: {{ path_prefix: / }}
    service: backend
    filters:
      - filter: auth
        config: {auth}
"#,
        plugins = plugin_dir().display(),
        upstream = upstream.url(),
    )
}

async fn get_with(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(gateway.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(
        &http1_client(),
        request
            .body(Full::new(Bytes::new()))
            .expect("valid request"),
    )
    .await
}

async fn bearer(gateway: &Gateway, path: &str, token: &str) -> Reply {
    get_with(
        gateway,
        path,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

async fn post_json(gateway: &Gateway, path: &str, body: &Value) -> Reply {
    let request = Request::post(gateway.url(path))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid request");
    send(&http1_client(), request).await
}

/// The upstream's echo of what it received.
fn upstream_header(reply: &Reply, name: &str) -> Vec<String> {
    let echo = reply.json();
    echo["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Hashes `password` with `gateway auth hash-password`, from stdin.
fn hash_password(password: &str, extra: &[&str]) -> String {
    let mut child = Command::new(gateway_bin())
        .args(["auth", "hash-password"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gateway runs");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password written");
    let output = child.wait_with_output().expect("hash-password ends");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_catalogue_is_refused_with_the_right_codes() {
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&config(&upstream, "", json!([])));

    // The good token, first: it passes and the upstream sees who, not who the client claimed.
    let good = sign_rs256(Some("rsa-1"), &claims());
    let reply = get_with(
        &gateway,
        "/orders",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("x-user-id", "admin"),
            ("X-User-Roles", "admin"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream_header(&reply, "x-user-id"), ["alice"]);
    assert_eq!(upstream_header(&reply, "x-user-roles"), ["user"]);
    assert_eq!(
        bearer(&gateway, "/orders", &sign_es256(&claims()))
            .await
            .status,
        200
    );

    let rsa_public = fixture("rsa-public.pem");
    let (head, rest) = good.split_once('.').expect("segments");
    let (payload, signature) = rest.split_once('.').expect("segments");
    let mut flipped = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("b64");
    flipped[0] ^= 0x01;
    let mut catalogue: Vec<(String, String, &str)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let unsigned = format!(
            "{}.{payload}.",
            b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes())
        );
        catalogue.push((format!("alg {alg}"), unsigned, "INVALID_TOKEN"));
    }
    for alg in ["rs256", "Rs256", "RS256 ", "hs256"] {
        let forged = forge(
            &json!({"alg": alg, "kid": "rsa-1"}),
            &claims(),
            HS_SECRET.as_bytes(),
        );
        catalogue.push((format!("alg {alg:?}"), forged, "INVALID_TOKEN"));
    }
    let catalogue_rest = [
        (
            "HS256 with the RSA public key as the secret",
            forge(
                &json!({"alg": "HS256", "kid": "rsa-1"}),
                &claims(),
                rsa_public.as_bytes(),
            ),
            "INVALID_TOKEN",
        ),
        (
            "HS256 with the RSA public key, no kid",
            forge(&json!({"alg": "HS256"}), &claims(), rsa_public.as_bytes()),
            "INVALID_TOKEN",
        ),
        (
            "expired beyond the leeway",
            sign_rs256(Some("rsa-1"), &with(json!({"exp": now() - 120}))),
            "TOKEN_EXPIRED",
        ),
        (
            "nbf beyond the leeway",
            sign_rs256(Some("rsa-1"), &with(json!({"nbf": now() + 600}))),
            "INVALID_TOKEN",
        ),
        (
            "wrong aud",
            sign_rs256(Some("rsa-1"), &with(json!({"aud": "other"}))),
            "INVALID_TOKEN",
        ),
        (
            "wrong iss",
            sign_rs256(Some("rsa-1"), &with(json!({"iss": "https://evil.test"}))),
            "INVALID_TOKEN",
        ),
        (
            "no aud",
            sign_rs256(Some("rsa-1"), &with(json!({"aud": null}))),
            "INVALID_TOKEN",
        ),
        (
            "no iss",
            sign_rs256(Some("rsa-1"), &with(json!({"iss": null}))),
            "INVALID_TOKEN",
        ),
        (
            "a flipped signature bit",
            format!("{head}.{payload}.{}", b64(&flipped)),
            "INVALID_TOKEN",
        ),
        (
            "truncated",
            good[..good.len() - 10].to_owned(),
            "INVALID_TOKEN",
        ),
        ("two segments", format!("{head}.{payload}"), "INVALID_TOKEN"),
        (
            "extra segments",
            format!("{good}.{signature}"),
            "INVALID_TOKEN",
        ),
        (
            "bad base64",
            format!("{head}.{payload}*.{signature}"),
            "INVALID_TOKEN",
        ),
        (
            "a non-JSON header",
            format!("{}.{payload}.{signature}", b64(b"{alg:RS256}")),
            "INVALID_TOKEN",
        ),
        (
            "a non-JSON payload",
            format!("{head}.{}.{signature}", b64(b"alice")),
            "INVALID_TOKEN",
        ),
        (
            "an unknown kid",
            sign_rs256(Some("rsa-9"), &claims()),
            "INVALID_TOKEN",
        ),
        (
            "a kid with a path",
            sign_rs256(Some("../../../etc/passwd"), &claims()),
            "INVALID_TOKEN",
        ),
        (
            "a kid with SQL",
            sign_rs256(Some("x' UNION SELECT 'secret"), &claims()),
            "INVALID_TOKEN",
        ),
        (
            "an embedded jwk",
            forge(
                &json!({"alg": "HS256", "jwk": {"kty": "oct", "k": b64(b"attacker-key")}}),
                &claims(),
                b"attacker-key",
            ),
            "INVALID_TOKEN",
        ),
        (
            "a jku",
            forge(
                &json!({"alg": "HS256", "jku": "http://127.0.0.1:1/jwks.json"}),
                &claims(),
                HS_SECRET.as_bytes(),
            ),
            "INVALID_TOKEN",
        ),
        (
            "an x5u",
            forge(
                &json!({"alg": "HS256", "x5u": "http://127.0.0.1:1/cert"}),
                &claims(),
                HS_SECRET.as_bytes(),
            ),
            "INVALID_TOKEN",
        ),
        (
            "crit",
            forge(
                &json!({"alg": "HS256", "crit": ["exp"]}),
                &claims(),
                HS_SECRET.as_bytes(),
            ),
            "INVALID_TOKEN",
        ),
        (
            "a 64 KiB token",
            format!("{head}.{}.{signature}", "A".repeat(64 * 1024)),
            "INVALID_TOKEN",
        ),
    ];
    catalogue.extend(
        catalogue_rest
            .into_iter()
            .map(|(name, token, code)| (name.to_owned(), token, code)),
    );
    for (name, token, code) in &catalogue {
        let reply = bearer(&gateway, "/orders", token).await;
        let body = reply.assert_gateway_error(401, code);
        assert!(
            !reply.text().contains(token.as_str()),
            "{name}: the body echoes the token"
        );
        assert!(body.get("error").is_some(), "{name}");
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
    }
    // Within the leeway (60 s by default) the same checks pass.
    for claims in [
        with(json!({"exp": now() - 20})),
        with(json!({"nbf": now() + 20})),
    ] {
        let reply = bearer(&gateway, "/orders", &sign_rs256(Some("rsa-1"), &claims)).await;
        assert_eq!(reply.status, 200, "{claims}: {}", reply.text());
    }

    // A spoofed identity without credentials never reaches the upstream.
    let reply = get_with(&gateway, "/orders", &[("x-user-id", "admin")]).await;
    reply.assert_gateway_error(401, "MISSING_CREDENTIALS");
    assert_eq!(
        upstream.requests(),
        4,
        "only the four good requests went upstream"
    );

    // A rule needs its role.
    bearer(&gateway, "/admin/users", &good)
        .await
        .assert_gateway_error(403, "FORBIDDEN");

    // Public paths: exactly as written, on the normalised path.
    let reply = get_with(&gateway, "/health", &[("x-user-id", "admin")]).await;
    assert_eq!(reply.status, 200);
    assert!(
        upstream_header(&reply, "x-user-id").is_empty(),
        "removed on public paths too"
    );
    assert_eq!(
        get_with(&gateway, "/docs/a/../b", &[]).await.status,
        200,
        "still under /docs"
    );
    for bypass in [
        "/api/v1/auth/login/../../users",
        "/docs/../admin/users",
        "/docs/%2e%2e/admin/users",
        "/health/../admin",
        "/api/v1/auth%2Flogin",
        "/api/v1/auth/login%2F..%2F..%2Fusers",
        "/HEALTH",
        "/Docs/x",
        "/health%00",
        "//health/../admin",
    ] {
        let reply = get_with(&gateway, bypass, &[]).await;
        assert!(
            reply.status == 401 || reply.status == 400,
            "{bypass}: {} {}",
            reply.status,
            reply.text()
        );
        if reply.status == 401 {
            reply.assert_gateway_error(401, "MISSING_CREDENTIALS");
        }
    }
    assert!(
        gateway
            .logs()
            .iter()
            .any(|line| line.contains("never trusted")),
        "the log says why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_and_logout_survive_a_reload() {
    let upstream = Upstream::start("backend").await;
    let hash = hash_password("correct horse", &[]);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let users = json!([{"username": "alice", "password_hash": hash, "roles": ["admin"]}]);
    let gateway = Gateway::start(&config(&upstream, "", users));

    // Wrong credentials: one answer whether or not the user exists.
    let wrong = post_json(
        &gateway,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": "nope"}),
    )
    .await;
    let unknown = post_json(
        &gateway,
        "/api/v1/auth/login",
        &json!({"username": "mallory", "password": "nope"}),
    )
    .await;
    let (a, b) = (
        wrong.assert_gateway_error(401, "INVALID_CREDENTIALS"),
        unknown.assert_gateway_error(401, "INVALID_CREDENTIALS"),
    );
    assert_eq!(a["error"], b["error"]);
    post_json(
        &gateway,
        "/api/v1/auth/login",
        &json!({"username": "alice"}),
    )
    .await
    .assert_gateway_error(400, "BAD_REQUEST");
    let text = Request::post(gateway.url("/api/v1/auth/login"))
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(
            b"{\"username\":\"alice\",\"password\":\"correct horse\"}",
        )))
        .expect("valid request");
    send(&http1_client(), text)
        .await
        .assert_gateway_error(400, "BAD_REQUEST");

    let login = post_json(
        &gateway,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": "correct horse"}),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let tokens = login.json();
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 300);
    let access = tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let first = tokens["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let reply = bearer(&gateway, "/admin/users", &access).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream_header(&reply, "x-user-id"), ["alice"]);

    // A reload with the keys unchanged keeps tokens and refresh families valid.
    let config_text = std::fs::read_to_string(gateway.config_path()).expect("config");
    let edited = config_text.replace(r#""access_ttl":"5m""#, r#""access_ttl":"4m""#);
    assert_ne!(edited, config_text, "the edit applies");
    std::fs::write(gateway.config_path(), edited).expect("written");
    let reload = Request::post(gateway.admin_url("/admin/reload"))
        .body(Full::new(Bytes::new()))
        .expect("valid");
    let reloaded = send(&http1_client(), reload).await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert_eq!(bearer(&gateway, "/admin/users", &access).await.status, 200);

    let refreshed = post_json(
        &gateway,
        "/api/v1/auth/refresh",
        &json!({"refresh_token": first}),
    )
    .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let second = refreshed.json()["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_eq!(
        refreshed.json()["expires_in"],
        240,
        "the reloaded config signs"
    );
    assert_ne!(first, second);

    // Reuse of the first: refused, and the family is gone, so the second fails too.
    post_json(
        &gateway,
        "/api/v1/auth/refresh",
        &json!({"refresh_token": first}),
    )
    .await
    .assert_gateway_error(401, "INVALID_CREDENTIALS");
    post_json(
        &gateway,
        "/api/v1/auth/refresh",
        &json!({"refresh_token": second}),
    )
    .await
    .assert_gateway_error(401, "INVALID_CREDENTIALS");

    // Logout revokes a fresh family and the access token given with it.
    let login = post_json(
        &gateway,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": "correct horse"}),
    )
    .await
    .json();
    let access = login["access_token"].as_str().expect("access").to_owned();
    let refresh = login["refresh_token"].as_str().expect("refresh").to_owned();
    assert_eq!(bearer(&gateway, "/orders", &access).await.status, 200);
    let logout = Request::post(gateway.url("/api/v1/auth/logout"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {access}"))
        .body(Full::new(Bytes::from(
            json!({"refresh_token": refresh}).to_string(),
        )))
        .expect("valid request");
    assert_eq!(send(&http1_client(), logout).await.status, 204);
    post_json(
        &gateway,
        "/api/v1/auth/refresh",
        &json!({"refresh_token": refresh}),
    )
    .await
    .assert_gateway_error(401, "INVALID_CREDENTIALS");
    bearer(&gateway, "/orders", &access)
        .await
        .assert_gateway_error(401, "INVALID_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_concurrent_refreshes_with_one_token_have_one_winner() {
    let redis = RedisServer::start();
    let upstream = Upstream::start("backend").await;
    // bcrypt, the other scheme the filter verifies.
    let hash = hash_password("pw", &["--scheme", "bcrypt"]);
    assert!(hash.starts_with("$2b$12$"), "{hash}");
    let users = json!([{"username": "bob", "password_hash": hash}]);
    let kv = format!(
        "kv:\n  backend: redis\n  redis:\n    url: \"{}\"\n    operation_timeout: 500ms",
        redis.url()
    );
    let gateway = Gateway::start(&config(&upstream, &kv, users));

    let login = post_json(
        &gateway,
        "/api/v1/auth/login",
        &json!({"username": "bob", "password": "pw"}),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let refresh = login.json()["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let family = refresh.split('.').nth(1).expect("family").to_owned();
    let stored = redis.command(&["GET", &format!("gateway:auth:family:{family}")]);
    assert!(
        stored.contains("\"u\":\"bob\""),
        "the family is in Redis: {stored}"
    );
    assert!(
        !stored.contains(refresh.rsplit('.').next().expect("secret")),
        "only a hash of the secret"
    );

    let races = (0..8).map(|_| {
        let url = gateway.url("/api/v1/auth/refresh");
        let body = json!({"refresh_token": refresh}).to_string();
        tokio::spawn(async move {
            let request = Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("valid request");
            send(&http1_client(), request).await.status.as_u16()
        })
    });
    let mut statuses = Vec::new();
    for race in races {
        statuses.push(race.await.expect("request task"));
    }
    assert!(
        statuses.iter().filter(|status| **status == 200).count() <= 1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|status| *status == 200 || *status == 401),
        "{statuses:?}"
    );
    // Reuse was seen, so the family is revoked whoever won.
    assert_eq!(
        redis
            .command(&["EXISTS", &format!("gateway:auth:family:{family}")])
            .trim(),
        "0"
    );
}

/// What one verification costs in the guest, from the filter's own `verify_seconds`
/// histogram, next to the same verification natively in this process: the figures behind the
/// choice of in-guest verification. Prints, asserts nothing about speed; run with
/// `cargo nextest run -p gateway-tests --test auth --run-ignored only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run it to read the figures"]
async fn verification_cost_in_the_guest() {
    const TOKENS: usize = 300;
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&config(&upstream, "", json!([])));
    let rsa_public =
        jsonwebtoken::DecodingKey::from_rsa_pem(fixture("rsa-public.pem").as_bytes()).expect("key");
    let ec_public = jsonwebtoken::DecodingKey::from_ec_pem(fixture("ec256-public.pem").as_bytes())
        .expect("key");
    for (alg, key) in [
        (Algorithm::RS256, &rsa_public),
        (Algorithm::ES256, &ec_public),
    ] {
        let tokens: Vec<String> = (0..TOKENS)
            .map(|n| {
                let claims = with(json!({"sub": format!("user-{n}")}));
                if alg == Algorithm::RS256 {
                    sign_rs256(Some("rsa-1"), &claims)
                } else {
                    sign_es256(&claims)
                }
            })
            .collect();
        for token in &tokens {
            assert_eq!(bearer(&gateway, "/orders", token).await.status, 200);
        }
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.validate_aud = false;
        let started = std::time::Instant::now();
        for token in &tokens {
            jsonwebtoken::decode::<Value>(token, key, &validation).expect("verifies natively");
        }
        let native = started.elapsed().as_secs_f64() / TOKENS as f64;
        let metrics = gateway_tests::get(&gateway.admin_url("/admin/filter-metrics"))
            .await
            .json();
        let series = metrics
            .as_array()
            .into_iter()
            .flatten()
            .chain(metrics["metrics"].as_array().into_iter().flatten())
            .filter(|family| family["name"] == "filter_auth_verify_seconds")
            .flat_map(|family| family["series"].as_array().cloned().unwrap_or_default())
            .find(|series| series["labels"]["alg"] == format!("{alg:?}"))
            .expect("the histogram has the algorithm");
        let guest = series["sum"].as_f64().expect("sum") / series["count"].as_f64().expect("count");
        println!(
            "{alg:?}: {:.0} µs per verification in the guest ({} verified), {:.0} µs natively",
            guest * 1e6,
            series["count"],
            native * 1e6
        );
    }
}
