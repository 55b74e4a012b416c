//! Checks that need the whole configuration. Each problem is reported with its field path, and
//! all of them are reported together so one run of `gateway validate` shows everything to fix.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{ByteSize, Config};
use crate::filter::MAX_MEMORY_LIMIT;
use crate::routing::pattern;
use crate::upstream::InstanceUrl;

/// Collects problems while walking the configuration.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, path: impl std::fmt::Display, message: impl std::fmt::Display) {
        self.0.push(format!("{path}: {message}"));
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

pub(super) fn check(config: &Config) -> Result<(), Vec<String>> {
    let mut problems = Problems::default();
    check_listeners(config, &mut problems);
    check_limits(config, &mut problems);
    check_filters(config, &mut problems);
    check_services(config, &mut problems);
    check_routes(config, &mut problems);
    if problems.0.is_empty() {
        Ok(())
    } else {
        Err(problems.0)
    }
}

fn check_listeners(config: &Config, problems: &mut Problems) {
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

fn check_limits(config: &Config, problems: &mut Problems) {
    let limits = &config.limits;
    if limits.max_header_bytes < ByteSize(1024) {
        problems.add("limits.max_header_bytes", "must be at least 1KiB");
    }
    if limits.max_headers == 0 {
        problems.add("limits.max_headers", "must be at least 1");
    }
    if limits.max_uri_bytes < ByteSize(64) {
        problems.add("limits.max_uri_bytes", "must be at least 64B");
    }
    for (field, value) in [
        ("header_read_timeout", limits.header_read_timeout),
        ("idle_timeout", limits.idle_timeout),
        ("body_read_timeout", limits.body_read_timeout),
    ] {
        if value.is_zero() {
            problems.add(format_args!("limits.{field}"), "must be more than 0");
        }
    }
}

fn check_filters(config: &Config, problems: &mut Problems) {
    if config.kv.max_entries == 0 {
        problems.add("kv.max_entries", "must be at least 1");
    }
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
        if filter.timeout < Duration::from_millis(1) || filter.timeout > Duration::from_secs(60) {
            problems.add(
                format_args!("filters.{name}.timeout"),
                "must be between 1ms and 60s",
            );
        }
        if filter.memory_limit < ByteSize(1 << 20) || filter.memory_limit > MAX_MEMORY_LIMIT {
            problems.add(
                format_args!("filters.{name}.memory_limit"),
                format_args!("must be between 1MiB and {MAX_MEMORY_LIMIT}"),
            );
        }
    }
}

fn check_services(config: &Config, problems: &mut Problems) {
    for (name, service) in &config.services {
        if service.instances.is_empty() {
            problems.add(
                format_args!("services.{name}.instances"),
                "at least one instance is required",
            );
        }
        for (index, url) in service.instances.iter().enumerate() {
            if let Err(reason) = url.parse::<InstanceUrl>() {
                problems.add(format_args!("services.{name}.instances[{index}]"), reason);
            }
        }
        for (field, value) in [
            ("connect_timeout", service.connect_timeout),
            ("request_timeout", service.request_timeout),
        ] {
            if value.is_zero() {
                problems.add(
                    format_args!("services.{name}.{field}"),
                    "must be more than 0",
                );
            }
        }
    }
}

fn check_routes(config: &Config, problems: &mut Problems) {
    if config.routes.is_empty() {
        problems.add("routes", "at least one route is required");
    }
    let mut names = BTreeSet::new();
    for (index, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{index}]");
        let name = config.route_name(index);
        if !names.insert(name.clone()) {
            problems.add(
                format_args!("{at}.name"),
                format_args!("`{name}` is used by an earlier route"),
            );
        }

        let matcher = &route.matcher;
        // The path pattern's parameters, once it parsed.
        let mut params: Option<Vec<String>> = None;
        match (&matcher.path_prefix, &matcher.path) {
            (Some(_), Some(_)) => problems.add(
                format_args!("{at}.match"),
                "give either `path_prefix` or `path`, not both",
            ),
            (None, None) => {
                problems.add(format_args!("{at}.match"), "give `path_prefix` or `path`")
            }
            (Some(prefix), None) => {
                if !prefix.starts_with('/') {
                    problems.add(
                        format_args!("{at}.match.path_prefix"),
                        "must start with `/`",
                    );
                }
            }
            (None, Some(path)) => match pattern::parse(path) {
                Ok(pattern) => params = Some(pattern.param_names().map(str::to_owned).collect()),
                Err(error) => problems.add(format_args!("{at}.match.path"), error),
            },
        }
        if let Some(host) = &matcher.host {
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
        }
        for (position, method) in matcher.methods.iter().flatten().enumerate() {
            let field = format!("{at}.match.methods[{position}]");
            if http::Method::from_bytes(method.as_bytes()).is_err() {
                problems.add(field, format_args!("`{method}` is not an HTTP method"));
            } else if method.chars().any(|c| c.is_ascii_lowercase()) {
                // `post` is a valid token, but methods are case-sensitive and no client sends it.
                problems.add(
                    field,
                    format_args!(
                        "methods are case-sensitive: write `{}`, not `{method}`",
                        method.to_ascii_uppercase()
                    ),
                );
            }
        }

        match &route.service {
            Some(service) => match service.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) if matcher.path.is_none() => problems.add(
                    format_args!("{at}.service"),
                    format_args!(
                        "`{{{param}}}` takes the service from a path parameter, so the route \
                         needs a `match.path` pattern with `{{{param}}}` in it"
                    ),
                ),
                Some(param) => match &params {
                    // A pattern that did not parse was reported above.
                    None => {}
                    Some(params) if params.iter().any(|p| p == param) => {}
                    Some(params) => problems.add(
                        format_args!("{at}.service"),
                        format_args!(
                            "`{{{param}}}` is not a parameter of `match.path` ({})",
                            if params.is_empty() {
                                "it has none".to_owned()
                            } else {
                                format!("it has: {}", params.join(", "))
                            }
                        ),
                    ),
                },
                None if !config.services.contains_key(service) => problems.add(
                    format_args!("{at}.service"),
                    format_args!(
                        "unknown service `{service}` ({})",
                        known(config.services.keys())
                    ),
                ),
                None => {}
            },
            None if route.filters.is_empty() => problems.add(
                format_args!("{at}.service"),
                "required: a route without filters must forward to a service",
            ),
            None => {}
        }

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
        }
    }
}
