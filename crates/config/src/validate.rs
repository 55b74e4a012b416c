//! Checking a parsed file and turning it into a [`Config`]. Each problem is reported with its
//! field path, and all of them are reported together so one run of `gateway validate` shows
//! everything to fix.
//!
//! Every number is bounded both ways: a limit that is too small breaks ordinary traffic, and
//! one that is too large lets a client make the gateway allocate or wait without end (the head
//! parser, say, keeps spans as `u32`).

use std::collections::BTreeSet;
use std::time::Duration;

use http::Method;

use crate::file::{ConfigFile, DebugTraceFile, KvBackendKind, RouteFile, ServiceFile};
use crate::upstream::{BalancerKind, HashKey, HealthCheck, Retries};
use crate::{
    Admin, AdminToken, ByteSize, Config, DebugTrace, InstanceUrl, MAX_MEMORY_LIMIT, PathMatch,
    Route, Service, ServiceRef, ServiceTemplate,
};
use gateway_routing::pattern::{self, PathPattern};

/// The bounds on the edge limits and the kv settings.
const HEADER_BYTES: (ByteSize, ByteSize) = (ByteSize(1024), ByteSize(1 << 20));
const HEADER_LINES: (usize, usize) = (1, 10_000);
const URI_BYTES: (ByteSize, ByteSize) = (ByteSize(64), ByteSize(1 << 20));
const CLIENT_TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
const KV_ENTRIES: (usize, usize) = (1, 100_000_000);
const KV_VALUE: (ByteSize, ByteSize) = (ByteSize(1), ByteSize(64 << 20));
/// The memory store's bytes: at least one largest value, at most a sane share of a machine.
const KV_MEMORY: (ByteSize, ByteSize) = (ByteSize(1 << 10), ByteSize(64 << 30));
const FILTER_TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(60));
const FILTER_MEMORY: (ByteSize, ByteSize) = (ByteSize(1 << 20), MAX_MEMORY_LIMIT);
const OUTBOUND_RESPONSE: (ByteSize, ByteSize) = (ByteSize(1), ByteSize(64 << 20));
const REDIS_TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(60));
const REDIS_CONNECTIONS: (usize, usize) = (1, 64);
const UPSTREAM_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(3600));
/// The bounds on WebSocket sizes (a frame header's worth to 1 GiB) and timeouts.
const WEBSOCKET_SIZE: (ByteSize, ByteSize) = (ByteSize(16), ByteSize(1 << 30));
const HUB_QUEUE: (usize, usize) = (1, 65_536);
const WEBSOCKET_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(86_400));
/// The bounds on a service's balancing and protection.
const MAX_INSTANCES: usize = 256;
const WEIGHT: (u32, u32) = (1, 100);
const FAILURE_COUNT: (u32, u32) = (1, 1000);
const RETRY_ATTEMPTS: (u32, u32) = (0, 5);
/// The registry's sweep: often enough for a dead instance to leave quickly, not so often that
/// gateways keep Redis busy; and a TTL that several heartbeats fit in.
const REGISTRY_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));
const REGISTRY_TTL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// The bounds on the access log: a buffer that holds at least a few lines, and a wait short
/// enough that `tail -f` still reads as live.
const ACCESS_LOG_BUFFER: (ByteSize, ByteSize) = (ByteSize(4 << 10), ByteSize(16 << 20));
const ACCESS_LOG_FLUSH: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(60));
const ACCESS_LOG_PENDING: (usize, usize) = (1, 1024);

/// Collects problems while walking the configuration.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, path: impl std::fmt::Display, message: impl std::fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }

    /// Like [`Problems::bounded`], but a value under the lower bound is told only that bound,
    /// as it always was (`must be at least 1KiB`).
    fn at_least<T: PartialOrd + std::fmt::Debug>(
        &mut self,
        path: impl std::fmt::Display,
        value: T,
        bounds: (T, T),
        describe: impl Fn(&T) -> String,
    ) {
        if value < bounds.0 {
            self.add(
                path,
                format_args!("must be at least {}", describe(&bounds.0)),
            );
        } else {
            self.bounded(path, value, bounds, describe);
        }
    }

    /// Adds a problem unless `value` lies within `bounds`.
    fn bounded<T: PartialOrd + std::fmt::Debug>(
        &mut self,
        path: impl std::fmt::Display,
        value: T,
        (low, high): (T, T),
        describe: impl Fn(&T) -> String,
    ) {
        if value < low || value > high {
            self.add(
                path,
                format_args!("must be between {} and {}", describe(&low), describe(&high)),
            );
        }
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none are defined".to_owned()
    } else {
        format!("known: {}", names.join(", "))
    }
}

/// `1ms`, `60s`: how the bounds were always written.
fn duration(value: &Duration) -> String {
    if value.subsec_millis() == 0 {
        format!("{}s", value.as_secs())
    } else {
        format!("{}ms", value.as_millis())
    }
}

fn size(value: &ByteSize) -> String {
    value.to_string()
}

fn count(value: &usize) -> String {
    value.to_string()
}

/// The configuration `file` describes, or every problem that stops it.
pub(crate) fn check(file: ConfigFile) -> Result<Config, Vec<String>> {
    let mut problems = Problems::default();
    check_listeners(&file, &mut problems);
    check_limits(&file, &mut problems);
    check_websocket(&file, &mut problems);
    check_access_log(&file, &mut problems);
    check_otlp(&file, &mut problems);
    let admin = file
        .admin
        .clone()
        .map(|admin| check_admin(admin, &mut problems));
    check_filters(&file, &mut problems);
    let instances = if file.registry.is_some() {
        Instances::Optional
    } else {
        Instances::Required
    };
    let services = file
        .services
        .iter()
        .filter_map(|(name, service)| {
            let service = check_service(
                &format!("services.{name}"),
                service,
                instances,
                &mut problems,
            )?;
            Some((name.clone(), service))
        })
        .collect();
    let (service_defaults, service_templates) = check_registry(&file, &mut problems);
    let mut names = BTreeSet::new();
    let routes = file
        .routes
        .iter()
        .enumerate()
        .filter_map(|(index, route)| check_route(&file, index, route, &mut names, &mut problems))
        .collect();
    if file.routes.is_empty() {
        problems.add("routes", "at least one route is required");
    }
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(Config {
        listeners: file.listeners,
        admin,
        watch: file.watch,
        cache_dir: file.cache_dir,
        limits: file.limits,
        kv: file.kv,
        plugin_dir: file.plugin_dir,
        filters: file.filters,
        services,
        routes,
        access_log: file.access_log,
        tracing: file.tracing,
        metrics: file.metrics,
        websocket: file.websocket,
        registry: file.registry,
        service_defaults,
        service_templates,
    })
}

/// Checks the registry and the policies of the services it brings.
fn check_registry(file: &ConfigFile, problems: &mut Problems) -> (Service, Vec<ServiceTemplate>) {
    if let Some(registry) = &file.registry {
        if registry.redis && file.kv.redis.is_none() {
            problems.add(
                "registry.redis",
                "needs kv.redis, the server the registry lives on",
            );
        }
        problems.bounded(
            "registry.resync_interval",
            registry.resync_interval,
            REGISTRY_INTERVAL,
            duration,
        );
        problems.bounded("registry.ttl", registry.ttl, REGISTRY_TTL, duration);
    }
    let defaults = file.service_defaults.as_ref().map_or_else(
        || Some(Service::with_instances(Vec::new())),
        |defaults| check_service("service_defaults", defaults, Instances::Refused, problems),
    );
    let templates = file
        .service_templates
        .iter()
        .enumerate()
        .filter_map(|(index, template)| {
            let at = format!("service_templates[{index}]");
            let plain = !template.pattern.is_empty()
                && template.pattern.bytes().all(|byte| {
                    byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-*".contains(&byte)
                });
            if !plain {
                problems.add(
                    format_args!("{at}.match"),
                    "a service name of a-z, 0-9 and `-`, with `*` for any run of them",
                );
            }
            let service = check_service(
                &format!("{at}.service"),
                &template.service,
                Instances::Refused,
                problems,
            )?;
            plain.then(|| ServiceTemplate {
                pattern: template.pattern.clone(),
                service,
            })
        })
        .collect();
    (
        defaults.unwrap_or_else(|| Service::with_instances(Vec::new())),
        templates,
    )
}

/// Reads the admin token, and refuses an admin API reachable from other machines without one.
fn check_admin(mut admin: Admin, problems: &mut Problems) -> Admin {
    let read = match (&admin.token_env, &admin.token_file) {
        (Some(_), Some(_)) => {
            problems.add(
                "admin.token_env",
                "give `token_env` or `token_file`, not both",
            );
            return admin;
        }
        (Some(name), None) => Some((
            "admin.token_env",
            std::env::var(name)
                .map_err(|_| format!("the environment variable `{name}` is not set or not UTF-8")),
        )),
        (None, Some(path)) => Some((
            "admin.token_file",
            std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display())),
        )),
        (None, None) => None,
    };
    match read {
        Some((field, text)) => match text.and_then(|text| AdminToken::new(&text)) {
            Ok(token) => admin.token = Some(token),
            Err(reason) => problems.add(field, reason),
        },
        None if !admin.address.ip().is_loopback() => problems.add(
            "admin.token_env",
            format_args!(
                "the admin address {} is reachable from other machines: set `token_env` or \
                 `token_file` so that admin requests must carry a bearer token",
                admin.address
            ),
        ),
        None => {}
    }
    admin
}

fn check_otlp(config: &ConfigFile, problems: &mut Problems) {
    let Some(otlp) = &config.tracing.otlp else {
        return;
    };
    if !config.tracing.propagate {
        problems.add(
            "tracing.otlp",
            "needs tracing.propagate: the exported spans are the propagated trace's",
        );
    }
    if otlp
        .endpoint
        .parse::<http::Uri>()
        .ok()
        .is_none_or(|uri| uri.scheme_str() != Some("http") || uri.authority().is_none())
    {
        problems.add(
            "tracing.otlp.endpoint",
            "an http:// URL such as http://127.0.0.1:4318/v1/traces",
        );
    }
    if !(0.0..=1.0).contains(&otlp.sample_ratio) {
        problems.add("tracing.otlp.sample_ratio", "must be between 0 and 1");
    }
    if otlp.service_name.is_empty() || otlp.service_name.chars().any(char::is_control) {
        problems.add(
            "tracing.otlp.service_name",
            "a name without control characters",
        );
    }
    problems.bounded(
        "tracing.otlp.timeout",
        otlp.timeout,
        (Duration::from_millis(10), Duration::from_secs(60)),
        duration,
    );
    problems.bounded(
        "tracing.otlp.max_queued",
        otlp.max_queued,
        (1, 1_000_000),
        count,
    );
}

fn check_access_log(config: &ConfigFile, problems: &mut Problems) {
    let log = &config.access_log;
    problems.bounded("access_log.buffer", log.buffer, ACCESS_LOG_BUFFER, size);
    problems.bounded(
        "access_log.flush_interval",
        log.flush_interval,
        ACCESS_LOG_FLUSH,
        duration,
    );
    problems.bounded(
        "access_log.max_pending_buffers",
        log.max_pending_buffers,
        ACCESS_LOG_PENDING,
        count,
    );
}

fn check_listeners(config: &ConfigFile, problems: &mut Problems) {
    if config.listeners.is_empty() {
        problems.add("listeners", "at least one listener is required");
    }
    let mut seen = BTreeSet::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        if listener.address.port() != 0 && !seen.insert(listener.address) {
            problems.add(
                format_args!("listeners[{index}].address"),
                format_args!("{} is listed twice", listener.address),
            );
        }
    }
    if let Some(admin) = &config.admin
        && admin.address.port() != 0
        && seen.contains(&admin.address)
    {
        problems.add(
            "admin.address",
            format_args!("{} is also a traffic listener", admin.address),
        );
    }
}

fn check_limits(config: &ConfigFile, problems: &mut Problems) {
    let limits = &config.limits;
    problems.at_least(
        "limits.max_header_bytes",
        limits.max_header_bytes,
        HEADER_BYTES,
        size,
    );
    problems.at_least(
        "limits.max_headers",
        limits.max_headers,
        HEADER_LINES,
        count,
    );
    problems.at_least(
        "limits.max_uri_bytes",
        limits.max_uri_bytes,
        URI_BYTES,
        size,
    );
    problems.bounded(
        "limits.body_min_rate",
        limits.body_min_rate,
        (ByteSize(0), ByteSize(1 << 30)),
        size,
    );
    for (field, value) in [
        ("header_read_timeout", limits.header_read_timeout),
        ("idle_timeout", limits.idle_timeout),
        ("body_read_timeout", limits.body_read_timeout),
        ("send_timeout", limits.send_timeout),
    ] {
        if value.is_zero() {
            problems.add(format_args!("limits.{field}"), "must be more than 0");
        } else {
            problems.bounded(
                format_args!("limits.{field}"),
                value,
                CLIENT_TIMEOUT,
                duration,
            );
        }
    }
}

fn check_websocket(config: &ConfigFile, problems: &mut Problems) {
    let websocket = &config.websocket;
    problems.bounded(
        "websocket.max_frame_size",
        websocket.max_frame_size,
        WEBSOCKET_SIZE,
        size,
    );
    problems.bounded(
        "websocket.max_message_size",
        websocket.max_message_size,
        WEBSOCKET_SIZE,
        size,
    );
    if websocket.max_frame_size > websocket.max_message_size {
        problems.add(
            "websocket.max_frame_size",
            "must not be larger than websocket.max_message_size",
        );
    }
    if let Some(hub) = &websocket.hub {
        if !hub.path.starts_with('/') {
            problems.add("websocket.hub.path", "must start with /");
        }
        problems.bounded("websocket.hub.queue", hub.queue, HUB_QUEUE, count);
        if hub.redis && config.kv.redis.is_none() {
            problems.add(
                "websocket.hub.redis",
                "needs kv.redis, the server to publish through",
            );
        }
    }
    let timeouts = [
        ("idle_timeout", Some(websocket.idle_timeout)),
        ("ping_interval", websocket.ping_interval),
        ("ping_timeout", Some(websocket.ping_timeout)),
    ];
    for (field, value) in timeouts {
        let Some(value) = value else { continue };
        if value.is_zero() {
            problems.add(format_args!("websocket.{field}"), "must be more than 0");
        } else {
            problems.bounded(
                format_args!("websocket.{field}"),
                value,
                WEBSOCKET_TIMEOUT,
                duration,
            );
        }
    }
}

fn check_filters(config: &ConfigFile, problems: &mut Problems) {
    problems.at_least("kv.max_entries", config.kv.max_entries, KV_ENTRIES, count);
    problems.bounded(
        "kv.max_value_size",
        config.kv.max_value_size,
        KV_VALUE,
        size,
    );
    problems.bounded("kv.max_memory", config.kv.max_memory, KV_MEMORY, size);
    if config.kv.max_memory < config.kv.max_value_size {
        problems.add(
            "kv.max_memory",
            "must be at least kv.max_value_size, or the largest value could never be stored",
        );
    }
    check_redis(config, problems);
    for (name, filter) in &config.filters {
        // Names appear in logs, metrics and key-value namespaces: keep them plain.
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            problems.add(
                format_args!("filters.{name}"),
                "a filter name may hold only letters, digits, `-`, `_` and `.`",
            );
        }
        let path = config.plugin_dir.join(&filter.module);
        if !path.is_file() {
            problems.add(
                format_args!("filters.{name}.module"),
                format_args!("no file at {}", path.display()),
            );
        }
        if filter.max_uses == 0 {
            problems.add(
                format_args!("filters.{name}.max_uses"),
                "must be at least 1",
            );
        }
        problems.bounded(
            format_args!("filters.{name}.timeout"),
            filter.timeout,
            FILTER_TIMEOUT,
            duration,
        );
        problems.bounded(
            format_args!("filters.{name}.memory_limit"),
            filter.memory_limit,
            FILTER_MEMORY,
            size,
        );
        problems.bounded(
            format_args!("filters.{name}.max_outbound_response"),
            filter.max_outbound_response,
            OUTBOUND_RESPONSE,
            size,
        );
        let backend = filter.kv.unwrap_or(config.kv.backend);
        if let (KvBackendKind::Redis, Some(redis)) = (backend, &config.kv.redis)
            && redis.operation_timeout >= filter.timeout
        {
            problems.add(
                format_args!("filters.{name}.timeout"),
                format_args!(
                    "{} is not longer than kv.redis.operation_timeout ({}): a wait on Redis would end the call before the filter could act on a timeout",
                    duration(&filter.timeout),
                    duration(&redis.operation_timeout)
                ),
            );
        }
        if filter.kv == Some(KvBackendKind::Redis) && config.kv.redis.is_none() {
            problems.add(
                format_args!("filters.{name}.kv"),
                "`redis` needs kv.redis (its url)",
            );
        }
    }
}

fn check_redis(config: &ConfigFile, problems: &mut Problems) {
    let Some(redis) = &config.kv.redis else {
        if config.kv.backend == KvBackendKind::Redis {
            problems.add("kv.redis", "required when kv.backend is `redis`");
        }
        return;
    };
    if !(redis.url.starts_with("redis://") || redis.url.starts_with("redis+unix://")) {
        problems.add(
            "kv.redis.url",
            "must start with redis:// (TLS, rediss://, is not supported)",
        );
    }
    problems.bounded(
        "kv.redis.operation_timeout",
        redis.operation_timeout,
        REDIS_TIMEOUT,
        duration,
    );
    problems.bounded(
        "kv.redis.connect_timeout",
        redis.connect_timeout,
        REDIS_TIMEOUT,
        duration,
    );
    problems.bounded(
        "kv.redis.connections",
        redis.connections,
        REDIS_CONNECTIONS,
        count,
    );
    let plain = !redis.key_prefix.is_empty()
        && redis
            .key_prefix
            .chars()
            .all(|c| c.is_ascii_graphic() && c != ':');
    if !plain {
        problems.add(
            "kv.redis.key_prefix",
            "must be printable ASCII without spaces or `:` (the separator of the key layout)",
        );
    }
}

/// What a service's `instances` may hold.
#[derive(Clone, Copy, PartialEq)]
enum Instances {
    /// At least one: nothing else would bring any.
    Required,
    /// Any number: a registry may bring more.
    Optional,
    /// None: policies for services the registry brings, with their instances.
    Refused,
}

/// Checks a service's instances and policies; `at` is its field path.
fn check_service(
    at: &str,
    service: &ServiceFile,
    rule: Instances,
    problems: &mut Problems,
) -> Option<Service> {
    let before = problems.0.len();
    match rule {
        Instances::Required if service.instances.is_empty() => problems.add(
            format_args!("{at}.instances"),
            "at least one instance is required (or a `registry` that brings them)",
        ),
        Instances::Refused if !service.instances.is_empty() => problems.add(
            format_args!("{at}.instances"),
            "the instances of these services come from the registry or the admin API",
        ),
        _ => {}
    }
    if service.instances.len() > MAX_INSTANCES {
        problems.add(
            format_args!("{at}.instances"),
            format_args!("at most {MAX_INSTANCES} instances are supported"),
        );
    }
    let mut instances = Vec::with_capacity(service.instances.len());
    for (index, instance) in service.instances.iter().enumerate() {
        match instance.url().parse::<InstanceUrl>() {
            Ok(url) => instances.push(url),
            Err(reason) => problems.add(format_args!("{at}.instances[{index}]"), reason),
        }
        problems.bounded(
            format_args!("{at}.instances[{index}].weight"),
            instance.weight(),
            WEIGHT,
            |weight| weight.to_string(),
        );
    }
    for (field, value) in [
        ("connect_timeout", service.connect_timeout),
        ("request_timeout", service.request_timeout),
        ("read_timeout", service.read_timeout),
    ] {
        if value.is_zero() {
            problems.add(format_args!("{at}.{field}"), "must be more than 0");
        } else {
            problems.bounded(
                format_args!("{at}.{field}"),
                value,
                UPSTREAM_TIMEOUT,
                duration,
            );
        }
    }
    match (service.balancer, &service.hash_key) {
        (BalancerKind::Hash, None) => problems.add(
            format_args!("{at}.hash_key"),
            "required by the `hash` balancer",
        ),
        (
            BalancerKind::Hash,
            Some(HashKey::Header { header } | HashKey::Cookie { cookie: header }),
        ) if http::HeaderName::from_bytes(header.as_bytes()).is_err() => problems.add(
            format_args!("{at}.hash_key"),
            format_args!("`{header}` is not a valid header or cookie name"),
        ),
        (BalancerKind::Hash, Some(_)) | (_, None) => {}
        (_, Some(_)) => problems.add(
            format_args!("{at}.hash_key"),
            "only the `hash` balancer reads it",
        ),
    }
    if let Some(check) = &service.health_check {
        check_health_check(at, check, problems);
    }
    if let Some(outlier) = &service.outlier_detection {
        let at = format!("{at}.outlier_detection");
        problems.bounded(
            format_args!("{at}.consecutive_failures"),
            outlier.consecutive_failures,
            FAILURE_COUNT,
            u32_text,
        );
        for (field, value) in [
            ("base_ejection_time", outlier.base_ejection_time),
            ("max_ejection_time", outlier.max_ejection_time),
        ] {
            problems.bounded(
                format_args!("{at}.{field}"),
                value,
                UPSTREAM_TIMEOUT,
                duration,
            );
        }
        if outlier.max_ejection_time < outlier.base_ejection_time {
            problems.add(
                format_args!("{at}.max_ejection_time"),
                "must not be shorter than base_ejection_time",
            );
        }
        problems.bounded(
            format_args!("{at}.max_ejection_percent"),
            outlier.max_ejection_percent,
            (1, 100),
            u32_text,
        );
    }
    if let Some(breaker) = &service.circuit_breaker {
        let at = format!("{at}.circuit_breaker");
        problems.bounded(
            format_args!("{at}.failure_threshold"),
            breaker.failure_threshold,
            FAILURE_COUNT,
            u32_text,
        );
        problems.bounded(
            format_args!("{at}.open_duration"),
            breaker.open_duration,
            UPSTREAM_TIMEOUT,
            duration,
        );
        problems.bounded(
            format_args!("{at}.half_open_requests"),
            breaker.half_open_requests,
            FAILURE_COUNT,
            u32_text,
        );
        check_statuses(
            &format!("{at}.failure_statuses"),
            &breaker.failure_statuses,
            problems,
        );
    }
    let retries = &service.retries;
    problems.bounded(
        format_args!("{at}.retries.attempts"),
        retries.attempts,
        RETRY_ATTEMPTS,
        u32_text,
    );
    if let Some(try_timeout) = retries.try_timeout {
        problems.bounded(
            format_args!("{at}.retries.try_timeout"),
            try_timeout,
            UPSTREAM_TIMEOUT,
            duration,
        );
        if try_timeout > service.request_timeout {
            problems.add(
                format_args!("{at}.retries.try_timeout"),
                "must not be longer than request_timeout, which bounds all tries together",
            );
        }
    }
    problems.bounded(
        format_args!("{at}.retries.budget_percent"),
        retries.budget_percent,
        (0, 1000),
        u32_text,
    );
    problems.bounded(
        format_args!("{at}.retries.budget_min_per_second"),
        retries.budget_min_per_second,
        (0, 100_000),
        u32_text,
    );
    for (field, value) in [
        ("max_concurrent_requests", service.max_concurrent_requests),
        (
            "max_concurrent_requests_per_instance",
            service.max_concurrent_requests_per_instance,
        ),
    ] {
        if let Some(value) = value {
            problems.bounded(
                format_args!("{at}.{field}"),
                value,
                (1, 1_000_000),
                u32_text,
            );
        }
    }
    (problems.0.len() == before).then(|| Service {
        instances,
        weights: service.instances.iter().map(|i| i.weight()).collect(),
        connect_timeout: service.connect_timeout,
        request_timeout: service.request_timeout,
        read_timeout: service.read_timeout,
        balancer: service.balancer,
        hash_key: service.hash_key.clone(),
        health_check: service.health_check.clone(),
        outlier_detection: service.outlier_detection.clone(),
        circuit_breaker: service.circuit_breaker.clone(),
        retries: Retries {
            try_timeout: Some(retries.try_timeout.unwrap_or(service.request_timeout)),
            ..retries.clone()
        },
        panic_mode: service.panic_mode,
        max_concurrent_requests: service.max_concurrent_requests,
        max_concurrent_requests_per_instance: service.max_concurrent_requests_per_instance,
    })
}

fn check_health_check(service: &str, check: &HealthCheck, problems: &mut Problems) {
    let at = format!("{service}.health_check");
    if !check.path.starts_with('/') || check.path.parse::<http::uri::PathAndQuery>().is_err() {
        problems.add(
            format_args!("{at}.path"),
            "must be a path starting with `/`",
        );
    }
    for (field, value) in [("interval", check.interval), ("timeout", check.timeout)] {
        problems.bounded(
            format_args!("{at}.{field}"),
            value,
            UPSTREAM_TIMEOUT,
            duration,
        );
    }
    if check.timeout > check.interval {
        problems.add(
            format_args!("{at}.timeout"),
            "must not be longer than interval",
        );
    }
    check_statuses(
        &format!("{at}.expected_statuses"),
        &check.expected_statuses,
        problems,
    );
    for (field, value) in [
        ("healthy_threshold", check.healthy_threshold),
        ("unhealthy_threshold", check.unhealthy_threshold),
    ] {
        problems.bounded(format_args!("{at}.{field}"), value, (1, 100), u32_text);
    }
}

fn check_statuses(at: &str, statuses: &[u16], problems: &mut Problems) {
    if statuses.is_empty() {
        problems.add(at, "give at least one status");
    }
    for status in statuses {
        if !(100..=599).contains(status) {
            problems.add(at, format_args!("{status} is not an HTTP status"));
        }
    }
}

fn u32_text(value: &u32) -> String {
    value.to_string()
}

/// The route, if it has no problems; every problem it has goes to `problems`.
fn check_route(
    config: &ConfigFile,
    index: usize,
    route: &RouteFile,
    names: &mut BTreeSet<String>,
    problems: &mut Problems,
) -> Option<Route> {
    let before = problems.0.len();
    let at = format!("routes[{index}]");
    let name = route
        .name
        .clone()
        .unwrap_or_else(|| format!("route-{index}"));
    if !names.insert(name.clone()) {
        problems.add(
            format_args!("{at}.name"),
            format_args!("`{name}` is used by an earlier route"),
        );
    }

    let matcher = &route.matcher;
    let path = match (&matcher.path_prefix, &matcher.path) {
        (Some(_), Some(_)) => {
            problems.add(
                format_args!("{at}.match"),
                "give either `path_prefix` or `path`, not both",
            );
            None
        }
        (None, None) => {
            problems.add(format_args!("{at}.match"), "give `path_prefix` or `path`");
            None
        }
        (Some(prefix), None) => {
            if prefix.starts_with('/') {
                Some(PathMatch::Prefix(prefix.clone()))
            } else {
                problems.add(
                    format_args!("{at}.match.path_prefix"),
                    "must start with `/`",
                );
                None
            }
        }
        (None, Some(path)) => match pattern::parse(path) {
            Ok(pattern) => Some(PathMatch::Pattern(pattern)),
            Err(error) => {
                problems.add(format_args!("{at}.match.path"), error);
                None
            }
        },
    };
    let host = matcher.host.as_ref().and_then(|host| {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let valid = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            problems.add(
                format_args!("{at}.match.host"),
                format_args!("`{host}` is not a host name (ports are not part of it)"),
            );
        }
        valid.then(|| host.to_ascii_lowercase())
    });
    let methods = matcher.methods.as_ref().map(|methods| {
        methods
            .iter()
            .enumerate()
            .filter_map(|(position, method)| {
                check_method(&format!("{at}.match.methods[{position}]"), method, problems)
            })
            .collect()
    });
    let pattern = match &path {
        Some(PathMatch::Pattern(pattern)) => Some(pattern),
        _ => None,
    };
    let service = check_service_ref(config, &at, route, pattern, problems);
    for (position, filter) in route.filters.iter().enumerate() {
        if !config.filters.contains_key(&filter.filter) {
            problems.add(
                format_args!("{at}.filters[{position}].filter"),
                format_args!(
                    "unknown filter `{}` ({})",
                    filter.filter,
                    known(config.filters.keys())
                ),
            );
        }
        for (grant, service) in filter.allow_services.iter().enumerate() {
            if !config.services.contains_key(service) {
                problems.add(
                    format_args!("{at}.filters[{position}].allow_services[{grant}]"),
                    format_args!(
                        "unknown service `{service}` ({})",
                        known(config.services.keys())
                    ),
                );
            }
        }
    }
    let debug_trace = route
        .debug_trace
        .as_ref()
        .map(|trace| check_debug_trace(&format!("{at}.debug_trace"), trace, problems));
    if problems.0.len() != before {
        return None;
    }
    Some(Route {
        name,
        path: path?,
        host,
        methods,
        service,
        filters: route.filters.clone(),
        allow_dot_segment_params: route.allow_dot_segment_params,
        debug_trace,
    })
}

fn check_debug_trace(at: &str, trace: &DebugTraceFile, problems: &mut Problems) -> DebugTrace {
    if trace.allow.is_empty() {
        problems.add(
            format_args!("{at}.allow"),
            "name the clients that may see traces (addresses or CIDR ranges)",
        );
    }
    let allow = trace
        .allow
        .iter()
        .enumerate()
        .filter_map(|(index, range)| {
            let parsed = range.parse::<ipnet::IpNet>().ok().or_else(|| {
                range
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            });
            if parsed.is_none() {
                problems.add(
                    format_args!("{at}.allow[{index}]"),
                    format_args!("`{range}` is not an IP address or CIDR range"),
                );
            }
            parsed
        })
        .collect();
    let when_header = trace.when_header.as_ref().and_then(|name| {
        let parsed = http::HeaderName::from_bytes(name.as_bytes()).ok();
        if parsed.is_none() {
            problems.add(
                format_args!("{at}.when_header"),
                format_args!("`{name}` is not a header name"),
            );
        }
        parsed
    });
    DebugTrace {
        allow,
        when_header,
        access_log: trace.access_log,
    }
}

fn check_method(field: &str, method: &str, problems: &mut Problems) -> Option<Method> {
    let Ok(parsed) = Method::from_bytes(method.as_bytes()) else {
        problems.add(field, format_args!("`{method}` is not an HTTP method"));
        return None;
    };
    if method.chars().any(|c| c.is_ascii_lowercase()) {
        // `post` is a valid token, but methods are case-sensitive and no client sends it.
        problems.add(
            field,
            format_args!(
                "methods are case-sensitive: write `{}`, not `{method}`",
                method.to_ascii_uppercase()
            ),
        );
        return None;
    }
    Some(parsed)
}

/// The route's service; `pattern` is its path pattern, when it has one that parsed.
fn check_service_ref(
    config: &ConfigFile,
    at: &str,
    route: &RouteFile,
    pattern: Option<&PathPattern>,
    problems: &mut Problems,
) -> Option<ServiceRef> {
    let Some(service) = &route.service else {
        if route.filters.is_empty() {
            problems.add(
                format_args!("{at}.service"),
                "required: a route without filters must forward to a service",
            );
        }
        return None;
    };
    let Some(param) = service.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        if !config.services.contains_key(service) {
            problems.add(
                format_args!("{at}.service"),
                format_args!(
                    "unknown service `{service}` ({})",
                    known(config.services.keys())
                ),
            );
        }
        return Some(ServiceRef::Named(service.clone()));
    };
    if route.matcher.path.is_none() {
        problems.add(
            format_args!("{at}.service"),
            format_args!(
                "`{{{param}}}` takes the service from a path parameter, so the route \
                 needs a `match.path` pattern with `{{{param}}}` in it"
            ),
        );
    } else if let Some(pattern) = pattern {
        // A pattern that did not parse was reported with the match.
        let params: Vec<&str> = pattern.param_names().collect();
        if !params.contains(&param) {
            problems.add(
                format_args!("{at}.service"),
                format_args!(
                    "`{{{param}}}` is not a parameter of `match.path` ({})",
                    if params.is_empty() {
                        "it has none".to_owned()
                    } else {
                        format!("it has: {}", params.join(", "))
                    }
                ),
            );
        }
    }
    Some(ServiceRef::FromParam(param.to_owned()))
}
