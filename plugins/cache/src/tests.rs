//! The RFC rules as a table of header cases (most from RFC 9111's and RFC 9110's own examples),
//! then the filter through the SDK's test host.

use std::time::Duration;

use gateway_sdk::Action;
use gateway_sdk::serde_json::{Value, json};
use gateway_sdk::testing::{KvFailure, TestHost, TestRequest, TestResponse};

use crate::Cache;
use crate::rfc::{self, Answer, CacheControl, NotStored, Use};

/// 1994-11-15T08:12:31Z, RFC 9110's example date: `Tue, 15 Nov 1994 08:12:31 GMT`.
const DATE: u64 = 784_887_151;

fn cc(value: &str) -> CacheControl {
    CacheControl::parse(&[value])
}

fn answer<'a>(status: u16, cache_control: &str, expires: Option<&'a str>) -> Answer<'a> {
    Answer {
        status,
        cc: cc(cache_control),
        expires,
        date: Some(DATE),
        ..Answer::default()
    }
}

#[test]
fn cache_control_directives_parse_as_rfc_9111_writes_them() {
    let cases: &[(&str, CacheControl)] = &[
        // §5.2: directive names are case-insensitive; a quoted argument is accepted.
        (
            "Max-Age=5",
            CacheControl {
                max_age: Some(5),
                ..CacheControl::default()
            },
        ),
        (
            "max-age=\"5\"",
            CacheControl {
                max_age: Some(5),
                ..CacheControl::default()
            },
        ),
        // §5.2.2.4 / §5.2.2.7: the qualified forms count as the unqualified ones here.
        (
            "no-cache=\"Set-Cookie, Set-Cookie2\"",
            CacheControl {
                no_cache: true,
                ..CacheControl::default()
            },
        ),
        (
            "private=\"x-user\", max-age=60",
            CacheControl {
                private: true,
                max_age: Some(60),
                ..CacheControl::default()
            },
        ),
        (
            "public, s-maxage=600, max-age=60",
            CacheControl {
                public: true,
                s_maxage: Some(600),
                max_age: Some(60),
                ..CacheControl::default()
            },
        ),
        // §4.2.1: conflicting duplicates make the answer stale.
        (
            "max-age=5, max-age=10",
            CacheControl {
                max_age: Some(0),
                ..CacheControl::default()
            },
        ),
        // §1.2.2: an invalid delta-seconds is not trusted; a huge one is capped at 2^31.
        (
            "max-age=-1",
            CacheControl {
                max_age: Some(0),
                ..CacheControl::default()
            },
        ),
        (
            "max-age=99999999999999999999999",
            CacheControl {
                max_age: Some(rfc::MAX_DELTA),
                ..CacheControl::default()
            },
        ),
        (
            "max-stale",
            CacheControl {
                max_stale: Some(None),
                ..CacheControl::default()
            },
        ),
        (
            "max-stale=30, min-fresh=10, only-if-cached",
            CacheControl {
                max_stale: Some(Some(30)),
                min_fresh: Some(10),
                only_if_cached: true,
                ..CacheControl::default()
            },
        ),
        (
            "must-revalidate, proxy-revalidate, no-store, stale-if-error=60, community=\"UCI\"",
            CacheControl {
                must_revalidate: true,
                proxy_revalidate: true,
                no_store: true,
                stale_if_error: Some(60),
                ..CacheControl::default()
            },
        ),
        ("", CacheControl::default()),
    ];
    for (value, expected) in cases {
        assert_eq!(&cc(value), expected, "Cache-Control: {value}");
    }
    assert_eq!(
        CacheControl::parse(&["max-age=60", "private"]),
        CacheControl {
            private: true,
            max_age: Some(60),
            ..CacheControl::default()
        },
        "directives on two field lines combine"
    );
}

#[test]
fn what_a_shared_cache_stores_and_for_how_long() {
    let expires_in_an_hour = rfc::format_http_date(DATE + 3600);
    let vary_star = Answer {
        vary: vec!["*".into()],
        ..answer(200, "max-age=60", None)
    };
    let with_cookie = Answer {
        sets_cookie: true,
        ..answer(200, "max-age=60", None)
    };
    let validator_only = Answer {
        has_etag: true,
        ..answer(200, "", None)
    };
    // (name, answer, authorized, strip cookies, heuristic, expected)
    type Case<'a> = (&'a str, Answer<'a>, bool, bool, u64, Result<u64, NotStored>);
    let cases: Vec<Case<'_>> = vec![
        (
            "max-age",
            answer(200, "max-age=3600", None),
            false,
            false,
            0,
            Ok(3600),
        ),
        // §5.2.2.10: s-maxage wins for a shared cache.
        (
            "s-maxage over max-age",
            answer(200, "max-age=60, s-maxage=600", None),
            false,
            false,
            0,
            Ok(600),
        ),
        // §5.3: Expires less Date.
        (
            "expires",
            answer(200, "", Some(&expires_in_an_hour)),
            false,
            false,
            0,
            Ok(3600),
        ),
        (
            "max-age over expires",
            answer(200, "max-age=10", Some(&expires_in_an_hour)),
            false,
            false,
            0,
            Ok(10),
        ),
        // §5.3: "Expires: 0" is not a date: already expired; stored only with a validator.
        (
            "invalid expires",
            answer(200, "", Some("0")),
            false,
            false,
            0,
            Err(NotStored::NoFreshness),
        ),
        (
            "no-store",
            answer(200, "no-store, max-age=60", None),
            false,
            false,
            0,
            Err(NotStored::NoStore),
        ),
        (
            "private",
            answer(200, "private, max-age=60", None),
            false,
            false,
            0,
            Err(NotStored::Private),
        ),
        (
            "set-cookie",
            with_cookie.clone(),
            false,
            false,
            0,
            Err(NotStored::SetCookie),
        ),
        ("set-cookie, stripped", with_cookie, false, true, 0, Ok(60)),
        (
            "vary *",
            vary_star,
            false,
            false,
            0,
            Err(NotStored::VaryStar),
        ),
        // §3.5: an answer to a request with credentials only if it says it may be shared.
        (
            "authorization",
            answer(200, "max-age=60", None),
            true,
            false,
            0,
            Err(NotStored::Authorization),
        ),
        (
            "authorization, public",
            answer(200, "public, max-age=60", None),
            true,
            false,
            0,
            Ok(60),
        ),
        (
            "authorization, s-maxage",
            answer(200, "s-maxage=60", None),
            true,
            false,
            0,
            Ok(60),
        ),
        // §4.2.2: a heuristic only for heuristically cacheable statuses, or `public`.
        (
            "heuristic 200",
            answer(200, "", None),
            false,
            false,
            30,
            Ok(30),
        ),
        (
            "heuristic 404",
            answer(404, "", None),
            false,
            false,
            30,
            Ok(30),
        ),
        (
            "no heuristic for 302",
            answer(302, "", None),
            false,
            false,
            30,
            Err(NotStored::Status),
        ),
        (
            "302 with max-age",
            answer(302, "max-age=60", None),
            false,
            false,
            0,
            Ok(60),
        ),
        (
            "public 302",
            answer(302, "public", None),
            false,
            false,
            30,
            Ok(30),
        ),
        (
            "206 never",
            answer(206, "max-age=60", None),
            false,
            false,
            0,
            Err(NotStored::Status),
        ),
        (
            "nothing to go on",
            answer(200, "", None),
            false,
            false,
            0,
            Err(NotStored::NoFreshness),
        ),
        ("a validator alone", validator_only, false, false, 0, Ok(0)),
        // §5.2.2.4: no-cache is stored, and revalidated on every use.
        (
            "no-cache",
            answer(200, "no-cache, max-age=60", None),
            false,
            false,
            0,
            Ok(60),
        ),
    ];
    let request = CacheControl::default();
    for (name, answer, authorized, strip, heuristic, expected) in cases {
        assert_eq!(
            rfc::storable(&request, &answer, authorized, strip, heuristic),
            expected,
            "{name}"
        );
    }
    assert_eq!(
        rfc::storable(
            &cc("no-store"),
            &answer(200, "max-age=60", None),
            false,
            false,
            0
        ),
        Err(NotStored::NoStore),
        "a request's no-store forbids storing its answer (§5.2.1.5)"
    );
}

#[test]
fn age_follows_the_calculation_of_section_4_2_3() {
    let received = DATE * 1000;
    // No Age, no delay, Date equal to the time received: age 0, growing while stored.
    assert_eq!(rfc::initial_age(None, Some(DATE), received, received), 0);
    assert_eq!(rfc::current_age(0, received, received + 7_500), 7);
    // Age from an upstream cache, plus the response delay.
    assert_eq!(
        rfc::initial_age(Some(20), Some(DATE), received - 2_000, received),
        22
    );
    // A Date 30 s in the past gives an apparent age of 30, larger than Age.
    assert_eq!(
        rfc::initial_age(Some(5), Some(DATE - 30), received, received),
        30
    );
    // A Date in the future is no negative age.
    assert_eq!(
        rfc::initial_age(None, Some(DATE + 100), received, received),
        0
    );
}

#[test]
fn whether_a_stored_answer_serves_a_request() {
    let none = CacheControl::default();
    // (request, stored, lifetime, age, expected)
    let cases = [
        ("fresh", none.clone(), none.clone(), 60, 59, Use::Fresh),
        (
            "stale at its lifetime",
            none.clone(),
            none.clone(),
            60,
            60,
            Use::Revalidate,
        ),
        // §5.2.1.1: max-age=0 on a request revalidates.
        (
            "request max-age=0",
            cc("max-age=0"),
            none.clone(),
            60,
            1,
            Use::Revalidate,
        ),
        (
            "request max-age",
            cc("max-age=10"),
            none.clone(),
            60,
            5,
            Use::Fresh,
        ),
        // §5.2.1.3: min-fresh.
        (
            "min-fresh",
            cc("min-fresh=20"),
            none.clone(),
            60,
            45,
            Use::Revalidate,
        ),
        // §5.2.1.4: a client's no-cache revalidates.
        (
            "request no-cache",
            cc("no-cache"),
            none.clone(),
            60,
            1,
            Use::Revalidate,
        ),
        (
            "stored no-cache",
            none.clone(),
            cc("no-cache"),
            60,
            1,
            Use::Revalidate,
        ),
        // §5.2.1.2: max-stale accepts staleness, within its bound.
        (
            "max-stale",
            cc("max-stale"),
            none.clone(),
            60,
            600,
            Use::StaleAccepted,
        ),
        (
            "max-stale=30 within",
            cc("max-stale=30"),
            none.clone(),
            60,
            80,
            Use::StaleAccepted,
        ),
        (
            "max-stale=30 past",
            cc("max-stale=30"),
            none.clone(),
            60,
            100,
            Use::Revalidate,
        ),
        // §5.2.2.2: must-revalidate forbids serving stale, whatever the client accepts.
        (
            "must-revalidate",
            cc("max-stale"),
            cc("must-revalidate"),
            60,
            61,
            Use::Revalidate,
        ),
        (
            "s-maxage implies proxy-revalidate",
            cc("max-stale"),
            cc("s-maxage=60"),
            60,
            61,
            Use::Revalidate,
        ),
    ];
    for (name, request, stored, lifetime, age, expected) in cases {
        assert_eq!(
            rfc::usable(&request, &stored, lifetime, age),
            expected,
            "{name}"
        );
    }
}

#[test]
fn conditional_requests_compare_as_rfc_9110_says() {
    let tags = |value: &str| vec![value.to_owned()];
    let last_modified = Some(DATE);
    let since = rfc::format_http_date(DATE);
    let before = rfc::format_http_date(DATE - 1);
    // §13.1.2: If-None-Match uses the weak comparison.
    assert!(rfc::not_modified(
        &tags("\"xyzzy\""),
        None,
        Some("\"xyzzy\""),
        None
    ));
    assert!(rfc::not_modified(
        &tags("W/\"xyzzy\""),
        None,
        Some("\"xyzzy\""),
        None
    ));
    assert!(rfc::not_modified(
        &tags("\"a\", \"xyzzy\""),
        None,
        Some("W/\"xyzzy\""),
        None
    ));
    assert!(rfc::not_modified(&tags("*"), None, Some("\"xyzzy\""), None));
    assert!(!rfc::not_modified(
        &tags("\"other\""),
        None,
        Some("\"xyzzy\""),
        None
    ));
    assert!(
        !rfc::not_modified(&tags("xyzzy"), None, Some("\"xyzzy\""), None),
        "an unquoted tag is no tag"
    );
    // §13.1.3: If-None-Match present, If-Modified-Since is ignored.
    assert!(!rfc::not_modified(
        &tags("\"other\""),
        Some(&since),
        Some("\"xyzzy\""),
        last_modified
    ));
    assert!(rfc::not_modified(&[], Some(&since), None, last_modified));
    assert!(!rfc::not_modified(&[], Some(&before), None, last_modified));
    assert!(
        !rfc::not_modified(&[], Some("yesterday"), None, last_modified),
        "an invalid date is ignored"
    );
    // All three date formats of RFC 9110 §5.6.7.
    for date in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(rfc::http_date(date), Some(784_111_777), "{date}");
    }
}

#[test]
fn invalidation_reaches_only_the_same_origin() {
    let cases = [
        ("/orders/7", Some("/orders/7")),
        ("https://shop.example/orders/7?x=1", Some("/orders/7?x=1")),
        ("http://Shop.Example:8080/a", Some("/a")),
        ("//shop.example/b", Some("/b")),
        ("7", Some("/orders/7")),
        ("https://evil.example/orders/7", None),
        ("mailto:a@shop.example", None),
        ("", None),
    ];
    for (value, expected) in cases {
        assert_eq!(
            rfc::same_origin_target(value, "shop.example", "/orders/new").as_deref(),
            expected,
            "{value}"
        );
    }
}

// The filter through the test host.

fn host(config: Value) -> TestHost<Cache> {
    let mut host = TestHost::<Cache>::new(config).expect("config accepted");
    host.set_now_ms(DATE * 1000);
    host
}

fn get(path: &str) -> TestRequest {
    TestRequest::get(path).with_authority("shop.example")
}

fn ok(cache_control: &str, body: &str) -> TestResponse {
    TestResponse::new(200)
        .with_header("cache-control", cache_control)
        .with_header("content-type", "text/plain")
        .with_body(body.as_bytes().to_vec())
}

/// Runs a request through the filter; `upstream` answers if the filter lets it through.
/// Returns what the client gets (status, x-cache-status, body) and whether upstream was asked.
fn exchange(
    host: &mut TestHost<Cache>,
    mut request: TestRequest,
    upstream: impl FnOnce(&TestRequest) -> TestResponse,
) -> (u16, Option<String>, String, bool) {
    match host.on_request(&mut request) {
        Action::Respond(reply) => {
            // The gateway runs the responder's response phase on its own reply too.
            let mut response = TestResponse::new(reply.status);
            for (name, value) in &reply.headers {
                response = response.with_header(name, value);
            }
            let mut response = response.with_body(reply.body.clone());
            assert!(host.on_response(&request, &mut response).is_continue());
            let status = reply.header("x-cache-status").map(str::to_owned);
            (reply.status, status, reply.body_text(), false)
        }
        Action::Continue => {
            let mut response = upstream(&request);
            match host.on_response(&request, &mut response) {
                Action::Respond(reply) => {
                    let status = reply.header("x-cache-status").map(str::to_owned);
                    (reply.status, status, reply.body_text(), true)
                }
                Action::Continue => {
                    let body =
                        String::from_utf8_lossy(&response.body().unwrap_or_default()).into_owned();
                    (
                        response.status(),
                        response.header("x-cache-status"),
                        body,
                        true,
                    )
                }
            }
        }
    }
}

fn hit(status: &str) -> Option<String> {
    Some(status.to_owned())
}

#[test]
fn a_second_get_is_a_hit_with_its_age() {
    let mut host = host(json!({}));
    let first = exchange(&mut host, get("/prices"), |_| ok("max-age=60", "v1"));
    assert_eq!(first, (200, hit("MISS"), "v1".into(), true));
    host.advance(Duration::from_secs(5));
    let mut request = get("/prices");
    let Action::Respond(reply) = host.on_request(&mut request) else {
        panic!("not served from the cache");
    };
    assert_eq!(reply.body_text(), "v1");
    assert_eq!(reply.header("age"), Some("5"));
    assert_eq!(reply.header("x-cache-status"), Some("HIT"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(host.counter("requests_total", &["hit"]), 1.0);
    assert_eq!(host.counter("requests_total", &["miss"]), 1.0);
    assert_eq!(host.counter("stored_bytes_total", &[]), 2.0);
    // Past its lifetime, without a validator, nothing is kept to revalidate: a miss.
    host.advance(Duration::from_secs(60));
    let again = exchange(&mut host, get("/prices"), |_| ok("max-age=60", "v2"));
    assert_eq!(again, (200, hit("MISS"), "v2".into(), true));
    assert_eq!(
        exchange(&mut host, get("/prices"), |_| panic!("upstream")).2,
        "v2"
    );
}

#[test]
fn head_shares_the_entry_of_get_and_stores_nothing_itself() {
    let mut host = host(json!({}));
    let head = exchange(
        &mut host,
        TestRequest::new("HEAD", "/a").with_authority("shop.example"),
        |_| ok("max-age=60", ""),
    );
    assert_eq!(head.1, hit("MISS"));
    assert!(
        host.kv_entries().is_empty(),
        "a HEAD answer has no body to store"
    );
    exchange(&mut host, get("/a"), |_| ok("max-age=60", "body"));
    let head = exchange(
        &mut host,
        TestRequest::new("HEAD", "/a").with_authority("shop.example"),
        |_| panic!("upstream"),
    );
    assert_eq!(head.1, hit("HIT"));
}

#[test]
fn private_no_store_and_cookies_never_reach_another_client() {
    let mut host = host(json!({}));
    for (path, response) in [
        ("/private", ok("private, max-age=60", "alice's")),
        ("/no-store", ok("no-store", "alice's")),
        (
            "/cookie",
            ok("max-age=60", "alice's").with_header("set-cookie", "session=alice"),
        ),
        (
            "/vary-star",
            ok("max-age=60", "alice's").with_header("vary", "*"),
        ),
    ] {
        let first = exchange(&mut host, get(path), |_| response);
        assert_eq!(first.2, "alice's");
        let second = exchange(&mut host, get(path), |_| ok("max-age=60", "bob's"));
        assert_eq!(second, (200, hit("MISS"), "bob's".into(), true), "{path}");
    }
    assert_eq!(host.counter("not_stored_total", &["private"]), 1.0);
    assert_eq!(host.counter("not_stored_total", &["set-cookie"]), 1.0);
}

#[test]
fn stripping_cookies_stores_the_answer_without_them() {
    let mut host = host(json!({ "set_cookie": "strip" }));
    let mut request = get("/page");
    assert!(host.on_request(&mut request).is_continue());
    let mut first = ok("max-age=60", "page").with_header("set-cookie", "session=alice");
    host.on_response(&request, &mut first);
    assert_eq!(
        first.header("set-cookie").as_deref(),
        Some("session=alice"),
        "the client that asked keeps its cookie"
    );
    let Action::Respond(reply) = host.on_request(&mut get("/page")) else {
        panic!("not stored");
    };
    assert_eq!(reply.header("set-cookie"), None);
}

#[test]
fn requests_with_credentials_bypass_unless_the_answer_may_be_shared() {
    let mut host = host(json!({}));
    let with_auth = || get("/me").with_header("authorization", "Bearer alice");
    let first = exchange(&mut host, with_auth(), |_| ok("max-age=60", "alice"));
    assert_eq!(first.1, hit("BYPASS"));
    assert_eq!(
        exchange(&mut host, get("/me"), |_| ok("max-age=60", "anon")).2,
        "anon"
    );
    // An anonymous entry is not served to a request with credentials unless it is public.
    let third = exchange(&mut host, with_auth(), |_| ok("max-age=60", "alice"));
    assert_eq!(third, (200, hit("BYPASS"), "alice".into(), true));
    // `public` may be stored from and served to requests with credentials.
    exchange(
        &mut host,
        get("/logo").with_header("authorization", "Bearer a"),
        |_| ok("public, max-age=60", "logo"),
    );
    let shared = exchange(
        &mut host,
        get("/logo").with_header("authorization", "Bearer b"),
        |_| panic!("upstream"),
    );
    assert_eq!(shared.1, hit("HIT"));
}

#[test]
fn per_user_routes_key_by_a_digest_of_the_credentials() {
    let mut host = host(json!({ "per_user": true }));
    exchange(
        &mut host,
        get("/me").with_header("authorization", "Bearer alice"),
        |_| ok("max-age=60", "alice"),
    );
    let bob = exchange(
        &mut host,
        get("/me").with_header("authorization", "Bearer bob"),
        |_| ok("max-age=60", "bob"),
    );
    assert_eq!(bob.2, "bob");
    let alice = exchange(
        &mut host,
        get("/me").with_header("authorization", "Bearer alice"),
        |_| panic!("upstream"),
    );
    assert_eq!(alice.2, "alice");
    assert!(
        host.kv_entries()
            .iter()
            .all(|(key, _)| !key.contains("alice")),
        "no credentials in keys"
    );
}

#[test]
fn vary_keeps_one_entry_per_variant() {
    let mut host = host(json!({}));
    let encoded = |encoding: &str| get("/v").with_header("accept-encoding", encoding);
    let answer = |body: &str| ok("max-age=60", body).with_header("vary", "Accept-Encoding");
    assert_eq!(
        exchange(&mut host, encoded("gzip"), |_| answer("gz")).1,
        hit("MISS")
    );
    assert_eq!(
        exchange(&mut host, encoded("br"), |_| answer("br")).1,
        hit("MISS")
    );
    assert_eq!(
        exchange(&mut host, encoded("gzip"), |_| panic!("upstream")).2,
        "gz"
    );
    assert_eq!(
        exchange(&mut host, encoded("br"), |_| panic!("upstream")).2,
        "br"
    );
    assert_eq!(
        exchange(&mut host, get("/v"), |_| answer("plain")).1,
        hit("MISS"),
        "absent is a variant of its own"
    );
}

#[test]
fn a_fresh_entry_answers_a_matching_conditional_with_304() {
    let mut host = host(json!({}));
    exchange(&mut host, get("/e"), |_| {
        ok("max-age=60", "body").with_header("etag", "\"v1\"")
    });
    let Action::Respond(reply) =
        host.on_request(&mut get("/e").with_header("if-none-match", "W/\"v1\""))
    else {
        panic!("not served");
    };
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some("\"v1\""));
    let Action::Respond(reply) =
        host.on_request(&mut get("/e").with_header("if-none-match", "\"v0\""))
    else {
        panic!("not served");
    };
    assert_eq!((reply.status, reply.body_text().as_str()), (200, "body"));
}

#[test]
fn an_expired_entry_revalidates_and_a_304_refreshes_it() {
    let mut host = host(json!({}));
    exchange(&mut host, get("/r"), |_| {
        ok("max-age=10", "stored").with_header("etag", "\"v1\"")
    });
    host.advance(Duration::from_secs(11));
    let revalidated = exchange(&mut host, get("/r"), |sent| {
        assert_eq!(sent.header("if-none-match").as_deref(), Some("\"v1\""));
        TestResponse::new(304)
            .with_header("cache-control", "max-age=100")
            .with_header("etag", "\"v1\"")
    });
    assert_eq!(
        revalidated,
        (200, hit("REVALIDATED"), "stored".into(), true)
    );
    // Refreshed with the 304's freshness: fresh for 100 s more.
    host.advance(Duration::from_secs(50));
    let Action::Respond(reply) = host.on_request(&mut get("/r")) else {
        panic!("not refreshed");
    };
    assert_eq!(reply.header("cache-control"), Some("max-age=100"));
    assert_eq!(reply.header("age"), Some("50"));
    // A changed resource answers 200 and replaces the entry.
    host.advance(Duration::from_secs(60));
    let changed = exchange(&mut host, get("/r"), |_| {
        ok("max-age=10", "new").with_header("etag", "\"v2\"")
    });
    assert_eq!(changed, (200, hit("EXPIRED"), "new".into(), true));
    assert_eq!(
        exchange(&mut host, get("/r"), |_| panic!("upstream")).2,
        "new"
    );
}

#[test]
fn a_clients_no_cache_revalidates_and_no_store_bypasses() {
    let mut host = host(json!({}));
    exchange(&mut host, get("/n"), |_| {
        ok("max-age=60", "v1").with_header("last-modified", "Tue, 15 Nov 1994 08:00:00 GMT")
    });
    let revalidated = exchange(
        &mut host,
        get("/n").with_header("cache-control", "no-cache"),
        |sent| {
            assert_eq!(
                sent.header("if-modified-since").as_deref(),
                Some("Tue, 15 Nov 1994 08:00:00 GMT")
            );
            TestResponse::new(304)
        },
    );
    assert_eq!(revalidated.1, hit("REVALIDATED"));
    let bypassed = exchange(
        &mut host,
        get("/n").with_header("cache-control", "no-store"),
        |_| ok("max-age=60", "v2"),
    );
    assert_eq!(bypassed, (200, hit("BYPASS"), "v2".into(), true));
    assert_eq!(
        exchange(&mut host, get("/n"), |_| panic!("upstream")).2,
        "v1",
        "the bypass stored nothing"
    );
}

#[test]
fn a_successful_unsafe_request_invalidates_its_url_and_its_location() {
    let mut host = host(json!({}));
    exchange(&mut host, get("/orders"), |_| ok("max-age=60", "list"));
    exchange(&mut host, get("/orders/7"), |_| ok("max-age=60", "seven"));
    let failed = exchange(
        &mut host,
        TestRequest::post("/orders").with_authority("shop.example"),
        |_| TestResponse::new(500),
    );
    assert_eq!(failed.0, 500);
    assert_eq!(
        exchange(&mut host, get("/orders"), |_| panic!("upstream")).2,
        "list",
        "a failure invalidates nothing"
    );
    exchange(
        &mut host,
        TestRequest::post("/orders").with_authority("shop.example"),
        |_| TestResponse::new(201).with_header("location", "https://shop.example/orders/7"),
    );
    assert_eq!(
        exchange(&mut host, get("/orders"), |_| ok("max-age=60", "list2")).2,
        "list2"
    );
    assert_eq!(
        exchange(&mut host, get("/orders/7"), |_| ok("max-age=60", "seven2")).2,
        "seven2"
    );
    assert_eq!(host.counter("invalidated_total", &[]), 2.0);
}

#[test]
fn invalidation_reaches_every_users_entry_when_keys_carry_more_than_the_url() {
    let mut host = host(json!({ "key": { "headers": ["x-tenant"] } }));
    let tenant = |name: &str| get("/p").with_header("x-tenant", name);
    exchange(&mut host, tenant("a"), |_| ok("max-age=60", "a1"));
    exchange(&mut host, tenant("b"), |_| ok("max-age=60", "b1"));
    assert_eq!(
        exchange(&mut host, tenant("a"), |_| panic!("upstream")).2,
        "a1"
    );
    host.advance(Duration::from_millis(1));
    exchange(
        &mut host,
        TestRequest::new("DELETE", "/p").with_authority("shop.example"),
        |_| TestResponse::new(204),
    );
    host.advance(Duration::from_millis(1));
    assert_eq!(
        exchange(&mut host, tenant("b"), |_| ok("max-age=60", "b2")).2,
        "b2"
    );
    assert_eq!(
        exchange(&mut host, tenant("a"), |_| ok("max-age=60", "a2")).2,
        "a2"
    );
    assert_eq!(
        exchange(&mut host, tenant("a"), |_| panic!("upstream")).2,
        "a2"
    );
}

#[test]
fn stale_if_error_serves_the_stale_entry_for_a_failing_upstream() {
    let mut host = host(json!({ "stale_if_error": "5m" }));
    exchange(&mut host, get("/s"), |_| ok("max-age=10", "old"));
    host.advance(Duration::from_secs(20));
    let stale = exchange(&mut host, get("/s"), |_| TestResponse::new(503));
    assert_eq!(stale, (200, hit("STALE"), "old".into(), true));
    // must-revalidate forbids it.
    exchange(&mut host, get("/m"), |_| {
        ok("max-age=10, must-revalidate", "old")
    });
    host.advance(Duration::from_secs(20));
    assert_eq!(
        exchange(&mut host, get("/m"), |_| TestResponse::new(503)).0,
        503
    );
}

#[test]
fn a_failing_store_sends_requests_upstream_and_warns_once() {
    let mut host = host(json!({}));
    host.kv_fails(KvFailure::Unavailable);
    for _ in 0..3 {
        let answer = exchange(&mut host, get("/x"), |_| ok("max-age=60", "up"));
        assert_eq!((answer.0, answer.2.as_str(), answer.3), (200, "up", true));
    }
    let warnings = host
        .logs()
        .iter()
        .filter(|line| line.message.contains("store failed"))
        .count();
    assert_eq!(warnings, 1);
    host.kv_recovers();
    exchange(&mut host, get("/x"), |_| ok("max-age=60", "up"));
    assert_eq!(
        exchange(&mut host, get("/x"), |_| panic!("upstream")).1,
        hit("HIT")
    );
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let refused = |config: Value| TestHost::<Cache>::new(config).err().expect("refused");
    assert!(refused(json!({ "zone": "has space" })).contains("zone"));
    assert!(refused(json!({ "default_ttl": "2d", "max_ttl": "1d" })).contains("default_ttl"));
    assert!(refused(json!({ "key": { "headers": ["bad name"] } })).contains("key.headers"));
    assert!(refused(json!({ "ttl": "1s" })).contains("ttl"));
}

#[test]
fn the_first_miss_holds_the_lock_until_its_answer_is_stored() {
    let mut host = host(json!({}));
    let key = "default shop.example/hot";
    let mut request = get("/hot");
    assert!(host.on_request(&mut request).is_continue());
    assert!(
        host.lock_held(key),
        "the first miss goes upstream holding the lock"
    );
    let mut response = ok("max-age=60", "hot");
    host.on_response(&request, &mut response);
    assert!(!host.lock_held(key), "released once the answer is stored");
    assert!(host.kv_get(key).is_some());
}

#[test]
fn a_waiter_serves_what_the_holder_stored() {
    let mut host = host(json!({}));
    let key = "default shop.example/hot";
    // Another request holds the lock and stores its answer before it lets go.
    exchange(&mut host, get("/hot"), |_| {
        ok("max-age=60", "from the holder")
    });
    let stored = host.kv_get(key).expect("stored");
    host.kv_set(key, stored, None);
    host.lock_held_elsewhere(key, true);
    // A request that finds the entry does not touch the lock; one that finds nothing waits.
    let served = exchange(&mut host, get("/hot"), |_| panic!("upstream"));
    assert_eq!(served.2, "from the holder");
    let mut cold = get("/cold");
    host.lock_held_elsewhere("default shop.example/cold", false);
    assert!(
        host.on_request(&mut cold).is_continue(),
        "timed out: goes upstream itself"
    );
    assert!(!host.lock_held("default shop.example/cold"));
}

#[test]
fn an_uncacheable_answer_is_remembered_so_nobody_waits_for_it() {
    let mut host = host(json!({ "hit_for_miss": "10s" }));
    let key = "default shop.example/live";
    exchange(&mut host, get("/live"), |_| ok("no-store", "live"));
    assert_eq!(host.kv_get(key).as_deref(), Some(&b"HFM"[..]));
    let mut request = get("/live");
    assert!(host.on_request(&mut request).is_continue());
    assert!(
        !host.lock_held(key),
        "hit-for-miss: straight upstream, no lock"
    );
    // Once the marker expires, the next miss takes the lock again.
    host.advance(Duration::from_secs(11));
    let mut later = get("/live");
    assert!(host.on_request(&mut later).is_continue());
    assert!(host.lock_held(key));
}
