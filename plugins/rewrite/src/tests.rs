//! The filter through the SDK's in-process test host, as the gateway drives it: the configuration
//! is parsed and checked, the filter registers its phases, and each phase edits the request or
//! the response through the host, which refuses what the gateway would refuse.

use gateway_sdk::log::Level;
use gateway_sdk::serde_json::{Value, json};
use gateway_sdk::testing::{LogLine, TestHost, TestRequest, TestResponse};
use gateway_sdk::{Action, Phases, Reads};

use crate::Rewrite;

fn filter(config: &Value) -> TestHost<Rewrite> {
    TestHost::new(config.clone()).unwrap_or_else(|error| panic!("{config}: {error}"))
}

/// The path and query, as the upstream would be asked for them.
fn target(request: &TestRequest) -> String {
    match request.query() {
        Some(query) => format!("{}?{query}", request.path()),
        None => request.path(),
    }
}

/// Headers as `(lower-case name, value)`, in order.
type Headers = &'static [(&'static str, &'static str)];

fn owned(headers: Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn rewrites_requests() {
    // (config, request, target sent upstream, every request header afterwards, in order)
    let cases: Vec<(Value, TestRequest, &str, Headers)> = vec![
        (
            json!({"path": {"strip_prefix": "/users"}}),
            TestRequest::get("/users/42?x=1"),
            "/42?x=1",
            &[("x-request-id", "test-request")],
        ),
        (
            json!({"path": {"strip_prefix": "/users"}}),
            TestRequest::get("/usersx/1"),
            "/usersx/1",
            &[("x-request-id", "test-request")],
        ),
        (
            json!({"path": {"add_prefix": "/v2"}}),
            TestRequest::get("/users"),
            "/v2/users",
            &[("x-request-id", "test-request")],
        ),
        (
            json!({"path": {"strip_prefix": "/shop/", "add_prefix": "/internal/v2"}}),
            TestRequest::get("/shop/items?page=2"),
            "/internal/v2/items?page=2",
            &[("x-request-id", "test-request")],
        ),
        (
            json!({"path": {"replace_prefix": {"from": "/old", "to": "/new/v2"}}}),
            TestRequest::get("/old/items"),
            "/new/v2/items",
            &[("x-request-id", "test-request")],
        ),
        (
            json!({"path": {"regex": {"pattern": "^/api/v1/([^/]+)(/.*)?$", "replacement": "/${1}${2}"}}}),
            TestRequest::get("/api/v1/users/42"),
            "/users/42",
            &[("x-request-id", "test-request")],
        ),
        (
            json!({"query": {"remove": ["token"], "set": {"page": "1"}, "add": {"source": "gateway"}}}),
            TestRequest::get("/search?q=a+b&token=s&page=9"),
            "/search?q=a+b&page=1&source=gateway",
            &[("x-request-id", "test-request")],
        ),
        (
            json!({"query": {"add": {"q": "a b"}}}),
            TestRequest::get("/search"),
            "/search?q=a%20b",
            &[("x-request-id", "test-request")],
        ),
        // An emptied query is removed, `?` and all.
        (
            json!({"query": {"remove": ["debug"]}}),
            TestRequest::get("/x?debug=1"),
            "/x",
            &[("x-request-id", "test-request")],
        ),
        (
            json!({"request_headers": {"remove": ["cookie"], "set": {"x-tenant": "acme"}, "add": {"via": "gateway"}}}),
            TestRequest::get("/")
                .with_header("cookie", "a=b")
                .with_header("x-tenant", "evil")
                .with_header("via", "client"),
            "/",
            &[
                ("x-request-id", "test-request"),
                ("via", "client"),
                ("x-tenant", "acme"),
                ("via", "gateway"),
            ],
        ),
        // Remove, then set in name order (`X-B` sorts before `x-c`), then add.
        (
            json!({"request_headers": {"add": {"x-a": "new"}, "set": {"x-c": "3", "X-B": "2"}, "remove": ["X-A"]}}),
            TestRequest::get("/").with_header("x-a", "old"),
            "/",
            &[
                ("x-request-id", "test-request"),
                ("x-b", "2"),
                ("x-c", "3"),
                ("x-a", "new"),
            ],
        ),
        // Every header-name character and every path character that needs no escaping.
        (
            json!({
                "path": {"add_prefix": "/a-b._~!$&'()*+,;=:@/%2F"},
                "request_headers": {"set": {"!#$%&'*+-.^_`|~09AZ": "tab\tand text"}},
            }),
            TestRequest::get("/x"),
            "/a-b._~!$&'()*+,;=:@/%2F/x",
            &[
                ("x-request-id", "test-request"),
                ("!#$%&'*+-.^_`|~09az", "tab\tand text"),
            ],
        ),
        (
            json!({
                "path": {"strip_prefix": "/api"},
                "query": {"set": {"v": "2"}},
                "request_headers": {"set": {"x-tenant": "acme"}},
            }),
            TestRequest::post("/api/orders?v=1&id=7"),
            "/orders?id=7&v=2",
            &[("x-request-id", "test-request"), ("x-tenant", "acme")],
        ),
    ];
    for (config, mut request, expected_target, expected_headers) in cases {
        let mut host = filter(&config);
        assert_eq!(host.phases(), Phases::REQUEST, "{config}");
        assert_eq!(host.on_request(&mut request), Action::Continue, "{config}");
        assert_eq!(target(&request), expected_target, "{config}");
        assert_eq!(request.headers(), owned(expected_headers), "{config}");
        assert_eq!(host.logs(), [], "{config}");
    }
}

#[test]
fn rewrites_responses() {
    // (config, response headers from upstream, every response header afterwards, in order)
    let cases: &[(Value, Headers, Headers)] = &[
        (
            json!({"response_headers": {"remove": ["server"], "set": {"x-frame-options": "DENY"}}}),
            &[
                ("server", "nginx"),
                ("content-type", "text/plain"),
                ("x-frame-options", "SAMEORIGIN"),
            ],
            &[("content-type", "text/plain"), ("x-frame-options", "DENY")],
        ),
        (
            json!({"response_headers": {"add": {"Vary": "accept-encoding"}}}),
            &[("vary", "origin")],
            &[("vary", "origin"), ("vary", "accept-encoding")],
        ),
        (
            json!({"response_headers": {"add": {"x-a": "new"}, "set": {"x-c": "3", "X-B": "2"}, "remove": ["X-A"]}}),
            &[("x-a", "old")],
            &[("x-b", "2"), ("x-c", "3"), ("x-a", "new")],
        ),
    ];
    for (config, headers, expected_headers) in cases {
        let mut host = filter(config);
        assert_eq!(host.phases(), Phases::RESPONSE, "{config}");
        let request = TestRequest::get("/items");
        let mut response = headers
            .iter()
            .fold(TestResponse::new(200), |response, (name, value)| {
                response.with_header(name, value)
            });
        assert_eq!(
            host.on_response(&request, &mut response),
            Action::Continue,
            "{config}"
        );
        assert_eq!(response.status(), 200, "{config}");
        assert_eq!(response.headers(), owned(expected_headers), "{config}");
        assert_eq!(host.logs(), [], "{config}");
    }
}

#[test]
fn edits_the_request_then_the_response() {
    let config = json!({
        "path": {"replace_prefix": {"from": "/old", "to": "/new"}},
        "response_headers": {"set": {"cache-control": "no-store"}},
    });
    let mut host = filter(&config);
    assert_eq!(host.phases(), Phases::REQUEST | Phases::RESPONSE);
    let mut request = TestRequest::get("/old/items");
    assert_eq!(host.on_request(&mut request), Action::Continue);
    assert_eq!(request.path(), "/new/items");
    let mut response = TestResponse::new(404);
    assert_eq!(host.on_response(&request, &mut response), Action::Continue);
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers(), owned(&[("cache-control", "no-store")]));
}

#[test]
fn registers_only_the_phases_it_uses() {
    // (config, phases)
    let cases: &[(Value, Phases)] = &[
        (json!({}), Phases::empty()),
        (
            json!({"path": {}, "query": {}, "request_headers": {}, "response_headers": {}}),
            Phases::empty(),
        ),
        (json!({"path": {"strip_prefix": "/a"}}), Phases::REQUEST),
        (json!({"path": {"add_prefix": "/a"}}), Phases::REQUEST),
        (
            json!({"path": {"replace_prefix": {"from": "/a", "to": "/b"}}}),
            Phases::REQUEST,
        ),
        (
            json!({"path": {"regex": {"pattern": "a", "replacement": "b"}}}),
            Phases::REQUEST,
        ),
        (json!({"query": {"remove": ["a"]}}), Phases::REQUEST),
        (
            json!({"request_headers": {"add": {"a": "b"}}}),
            Phases::REQUEST,
        ),
        (
            json!({"response_headers": {"remove": ["server"]}}),
            Phases::RESPONSE,
        ),
        (
            json!({"query": {"set": {"a": "b"}}, "response_headers": {"set": {"a": "b"}}}),
            Phases::REQUEST | Phases::RESPONSE,
        ),
    ];
    for (config, phases) in cases {
        assert_eq!(filter(config).phases(), *phases, "{config}");
    }
}

#[test]
fn declares_the_path_and_query_only_when_a_rule_rewrites_them() {
    // (config, what is handed over with each request phase)
    let cases: &[(Value, Reads)] = &[
        (json!({}), Reads::default()),
        (
            json!({"request_headers": {"set": {"x-tenant": "acme"}}}),
            Reads::default(),
        ),
        (
            json!({"path": {"strip_prefix": "/a"}}),
            Reads::default().path(),
        ),
        (
            json!({"query": {"remove": ["a"]}}),
            Reads::default().query(),
        ),
        (
            json!({"path": {"add_prefix": "/v2"}, "query": {"add": {"a": "b"}}}),
            Reads::default().path().query(),
        ),
    ];
    for (config, reads) in cases {
        assert_eq!(filter(config).reads(), reads, "{config}");
    }
}

#[test]
fn a_response_only_config_leaves_the_request_phase_alone() {
    // The response rules name headers the request has too: they must stay.
    let mut host = filter(&json!({
        "response_headers": {"remove": ["server"], "set": {"x-frame-options": "DENY"}},
    }));
    assert!(!host.phases().contains(Phases::REQUEST));
    let mut request = TestRequest::get("/a?b=1")
        .with_header("server", "client")
        .with_header("x-frame-options", "SAMEORIGIN");
    let before = request.headers();
    assert_eq!(host.on_request(&mut request), Action::Continue);
    assert_eq!(target(&request), "/a?b=1");
    assert_eq!(request.headers(), before);
    assert_eq!(host.logs(), []);
}

#[test]
fn answers_an_edit_the_host_refuses_with_a_json_500() {
    // (config, the host's refusal as the filter reports it, for a request to `/x`)
    let cases: &[(Value, &str)] = &[
        (
            json!({"path": {"regex": {"pattern": "^/(.*)$", "replacement": "/has space/$1"}}}),
            "cannot set path `/has space/x`: a path must start with `/` and hold only printable \
             ASCII, without `?` or `#`",
        ),
        // The reason is escaped into the JSON body.
        (
            json!({"path": {"regex": {"pattern": "^/(.*)$", "replacement": "/\"$1\"\n"}}}),
            "cannot set path `/\"x\"\n`: a path must start with `/` and hold only printable ASCII, \
             without `?` or `#`",
        ),
    ];
    for (config, reason) in cases {
        let mut host = filter(config);
        let mut request = TestRequest::get("/x");
        let action = host.on_request(&mut request);
        let reply = action
            .reply()
            .unwrap_or_else(|| panic!("{config}: passed on"));
        assert_eq!(reply.status, 500, "{config}");
        assert_eq!(
            reply.headers,
            owned(&[("content-type", "application/json")]),
            "{config}"
        );
        let error = format!("rewrite failed: {reason}");
        let body = reply.body_text();
        let body: Value = gateway_sdk::serde_json::from_str(&body)
            .unwrap_or_else(|parse| panic!("{config}: {parse}: {body}"));
        assert_eq!(body["error"], error.as_str(), "{config}");
        assert_eq!(body["code"], "FILTER_FAILED", "{config}");
        assert_eq!(body["request_id"], "test-request", "{config}");
        assert!(
            body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{config}"
        );
        assert_eq!(
            host.logs(),
            [LogLine {
                level: Level::Warn,
                message: error
            }],
            "{config}"
        );
    }
}

#[test]
fn rejects_bad_configs_naming_the_key() {
    // (config, what the gateway prints)
    let cases: &[(Value, &str)] = &[
        (
            json!({"paths": {}}),
            "invalid config at `paths`: unknown field `paths`, expected one of `path`, `query`, \
             `request_headers`, `response_headers`",
        ),
        (
            json!({"path": {"strip": "/a"}}),
            "invalid config at `path.strip`: unknown field `strip`, expected one of \
             `strip_prefix`, `add_prefix`, `replace_prefix`, `regex`",
        ),
        (
            json!({"path": {"replace_prefix": {"from": "/a"}}}),
            "invalid config at `path.replace_prefix`: missing field `to`",
        ),
        (
            json!({"path": {"regex": {"pattern": "a", "replacement": "b", "flags": "i"}}}),
            "invalid config at `path.regex.flags`: unknown field `flags`, expected `pattern` or \
             `replacement`",
        ),
        (
            json!({"request_headers": {"set": {"x-a": 1}}}),
            "invalid config at `request_headers.set.x-a`: invalid type: integer `1`, expected a \
             string",
        ),
        (
            json!({"query": {"remove": "debug"}}),
            "invalid config at `query.remove`: invalid type: string \"debug\", expected a sequence",
        ),
        (
            json!({"response_headers": {"delete": []}}),
            "invalid config at `response_headers.delete`: unknown field `delete`, expected one of \
             `set`, `add`, `remove`",
        ),
        (
            json!("/users"),
            "invalid config: invalid type: string \"/users\", expected struct Config",
        ),
        (
            Value::Null,
            "invalid config: invalid type: null, expected struct Config",
        ),
        (
            json!({"path": {"regex": {"pattern": "(", "replacement": ""}}}),
            "path.regex.pattern: invalid regex: regex parse error:\n    (\n    ^\nerror: unclosed group",
        ),
        (
            json!({"path": {"strip_prefix": "users"}}),
            "path.strip_prefix must start with `/`",
        ),
        (
            json!({"path": {"add_prefix": "v2"}}),
            "path.add_prefix must start with `/`",
        ),
        (
            json!({"path": {"add_prefix": ""}}),
            "path.add_prefix must start with `/`",
        ),
        (
            json!({"path": {"replace_prefix": {"from": "old", "to": "/new"}}}),
            "path.replace_prefix.from must start with `/`",
        ),
        (
            json!({"path": {"replace_prefix": {"from": "/old", "to": "new"}}}),
            "path.replace_prefix.to must start with `/`",
        ),
        (
            json!({"path": {"replace_prefix": {"from": "/a", "to": "/b"}, "strip_prefix": "/a"}}),
            "path.replace_prefix cannot be combined with strip_prefix or add_prefix",
        ),
        (
            json!({"path": {"replace_prefix": {"from": "/a", "to": "/b"}, "add_prefix": "/b"}}),
            "path.replace_prefix cannot be combined with strip_prefix or add_prefix",
        ),
        (
            json!({"path": {"add_prefix": "/v 2"}}),
            "path.add_prefix: `/v 2` is not a valid URI path: ` ` must be percent-encoded",
        ),
        (
            json!({"path": {"strip_prefix": "/a?b"}}),
            "path.strip_prefix: `/a?b` is not a valid URI path: `?` must be percent-encoded",
        ),
        (
            json!({"path": {"add_prefix": "/é"}}),
            "path.add_prefix: `/é` is not a valid URI path: `é` must be percent-encoded",
        ),
        (
            json!({"path": {"add_prefix": "/a%2"}}),
            "path.add_prefix: `%` in `/a%2` must start a %XX escape",
        ),
        (
            json!({"request_headers": {"set": {"bad name": "x"}}}),
            "request_headers.set: `bad name` is not a valid header name",
        ),
        (
            json!({"request_headers": {"add": {"": "x"}}}),
            "request_headers.add: `` is not a valid header name",
        ),
        (
            json!({"response_headers": {"remove": ["x:y"]}}),
            "response_headers.remove: `x:y` is not a valid header name",
        ),
        (
            json!({"request_headers": {"set": {"x-a": "line\r\nx-evil: 1"}}}),
            "request_headers.set: the value of `x-a` contains a control character",
        ),
        (
            json!({"response_headers": {"add": {"x-a": "nul\u{0}"}}}),
            "response_headers.add: the value of `x-a` contains a control character",
        ),
        (
            json!({"request_headers": {"set": {"x-a": "bell\u{7}"}}}),
            "request_headers.set: the value of `x-a` contains a control character",
        ),
        (
            json!({"response_headers": {"add": {"x-a": "del\u{7f}"}}}),
            "response_headers.add: the value of `x-a` contains a control character",
        ),
        (
            json!({"query": {"add": {"": "x"}}}),
            "query.add: a parameter name must not be empty",
        ),
        (
            json!({"query": {"set": {"": "x"}}}),
            "query.set: a parameter name must not be empty",
        ),
        (
            json!({"query": {"remove": [""]}}),
            "query.remove: a parameter name must not be empty",
        ),
    ];
    for (config, expected) in cases {
        let error = TestHost::<Rewrite>::new(config.clone())
            .err()
            .unwrap_or_else(|| panic!("{config} accepted"));
        assert_eq!(error, *expected, "{config}");
    }
}
