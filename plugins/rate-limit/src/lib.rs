//! The bundled `rate-limit` filter: limits requests by client address, API key, authenticated
//! subject or consumer, header, route parameter or route, with a token bucket, a fixed window
//! or a sliding window, counted in the gateway's key-value store (its memory, or a Redis that
//! several gateways share, where every decision is one atomic operation).
//!
//! Request phase: finds the limits that apply (the first matching rule's, or the default ones,
//! with the consumer's overrides), decides each in order, and answers 429 `RATE_LIMITED` with
//! `Retry-After` at the first that refuses, giving back what the earlier ones took. An allowed
//! request carries the numbers of its limits in the context entry `rate_limit.headers.<scope>`,
//! and the
//! response phase writes them as headers. The `algorithm` module says what each algorithm
//! allows at a window's edge, [`key`] covers keys and trusted proxies, `policy` store keys and
//! reloads, and [`config::Config`] every setting.
//!
//! When the store cannot answer, each limit does as its `on_store_error` says: `open` (the
//! default) lets the request through uncounted, `closed` answers 503
//! `RATE_LIMIT_UNAVAILABLE`. Either way the metric `store_errors_total` counts it, and each
//! instance logs one warning when the store fails and one line when it answers again.

mod algorithm;
pub mod config;
pub mod key;
mod policy;
#[cfg(test)]
mod tests;

use std::cell::Cell;

use gateway_sdk::metrics::Counter;
use gateway_sdk::{Action, Filter, Headers, Phases, Reads, Reply, Request, Response, clock, log};

use crate::algorithm::{Decision, StoreFailure, Taken};
use crate::config::{Algorithm, Config, HeadersConfig, OnStoreError};
use crate::key::{ClientIp, KeyPart, KeySource};
use crate::policy::{Limit, Policy};

/// The start of the context entry that carries an allowed request's headers to the response
/// phase, one `name: value` per line; the scope follows, so that two rate-limit filters in one
/// chain keep their own.
const HEADERS_ENTRY: &str = "rate_limit.headers.";

/// How often, at most, one instance logs that shadow limits would have refused requests.
const SHADOW_LOG_EVERY_MS: u64 = 10_000;

/// The outcomes counted by `requests_total`, in declaration order.
const OUTCOMES: [&str; 3] = ["allowed", "limited", "shadow_limited"];

/// The filter, with its configuration compiled once per instance.
pub struct RateLimit {
    policy: Policy,
    client_ip: ClientIp,
    api_key_header: String,
    headers: HeadersConfig,
    /// `rate_limit.headers.<scope>`.
    headers_entry: String,
    reads: Reads,
    requests: Counter,
    store_errors: Counter,
    /// Whether this instance last found the store failing, so an outage is logged once.
    store_down: Cell<bool>,
    /// When this instance last logged a shadow refusal, and how many it has not logged since.
    shadow_logged: Cell<(Option<u64>, u64)>,
}

/// What the limits of one request decided.
enum Verdict<'a> {
    /// Every limit allowed it (or could not decide and fails open); the decisions to show.
    Allowed(Vec<(&'a Limit, Decision)>),
    /// This limit refused it.
    Limited(&'a Limit, Decision, Vec<(&'a Limit, Decision)>),
    /// The store failed for a limit that fails closed.
    Unavailable,
}

impl Filter for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let policy = Policy::compile(&config)?;
        let client_ip = ClientIp {
            trusted: config.trusted_proxies.clone(),
            ipv6_prefix: config.ipv6_prefix,
        };
        let names = policy.names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let scope: &[&str] = &[&policy.scope];
        let requests = Counter::with_labels(
            "requests_total",
            "Requests decided by each limit: allowed, limited, or over a shadow limit",
            &[("scope", scope), ("policy", &names), ("outcome", &OUTCOMES)],
        );
        let store_errors = Counter::with_labels(
            "store_errors_total",
            "Decisions the store could not make, by what the request got",
            &[
                ("scope", scope),
                ("policy", &names),
                ("action", &["open", "closed"]),
            ],
        );
        let headers_entry = format!("{HEADERS_ENTRY}{}", policy.scope);
        let reads = reads(&policy, &config).context(&headers_entry);
        Ok(RateLimit {
            policy,
            client_ip,
            api_key_header: config.api_key_header.to_ascii_lowercase(),
            headers: config.headers,
            headers_entry,
            reads,
            requests,
            store_errors,
            store_down: Cell::new(false),
            shadow_logged: Cell::new((None, 0)),
        })
    }

    fn phases(&self) -> Phases {
        if self.headers.legacy || self.headers.ietf {
            Phases::REQUEST | Phases::RESPONSE
        } else {
            Phases::REQUEST
        }
    }

    fn reads(&self) -> Reads {
        self.reads.clone()
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let consumer = if self.policy.consumers.is_empty() {
            None
        } else {
            request.context(key::CONSUMER)
        };
        let limits =
            self.policy
                .applicable(&request.method(), &request.path(), consumer.as_deref());
        if limits.is_empty() {
            return Action::Continue;
        }
        match self.decide(request, &limits) {
            Verdict::Allowed(shown) => {
                let lines = self.header_lines(&shown, None);
                if !lines.is_empty() {
                    let encoded: Vec<String> = lines
                        .iter()
                        .map(|(name, value)| format!("{name}: {value}"))
                        .collect();
                    let _ = request.set_context(&self.headers_entry, &encoded.join("\n"));
                }
                Action::Continue
            }
            Verdict::Limited(limit, decision, shown) => {
                let retry_after = decision.retry_after_ms.div_ceil(1000).max(1);
                let mut reply = Reply::error(429, "RATE_LIMITED", "too many requests", request)
                    .with_header("retry-after", retry_after.to_string());
                for (name, value) in self.header_lines(&shown, Some((limit, decision))) {
                    reply = reply.with_header(name, value);
                }
                Action::Respond(reply)
            }
            Verdict::Unavailable => Action::Respond(
                Reply::error(
                    503,
                    "RATE_LIMIT_UNAVAILABLE",
                    "the rate limit cannot be checked right now",
                    request,
                )
                .with_header("retry-after", "1"),
            ),
        }
    }

    fn on_response(&self, request: &Request, response: &mut Response) -> Action {
        if let Some(lines) = request.context(&self.headers_entry) {
            for line in lines.lines() {
                if let Some((name, value)) = line.split_once(": ") {
                    let _ = response.set_header(name, value);
                }
            }
        }
        Action::Continue
    }
}

/// What is handed over with each call: what the limits read on every request.
fn reads(policy: &Policy, config: &Config) -> Reads {
    let mut reads = Reads::default().method().path();
    if policy.uses(|part| *part == KeyPart::Ip) {
        reads = reads.client_ip();
        if !config.trusted_proxies.is_empty() {
            reads = reads.request_header("x-forwarded-for");
        }
    }
    if policy.uses(|part| *part == KeyPart::ApiKey) {
        reads = reads.request_header(&config.api_key_header);
    }
    if policy.uses(|part| *part == KeyPart::Subject) {
        reads = reads.context(key::SUBJECT);
    }
    if policy.uses(|part| *part == KeyPart::Consumer) || !policy.consumers.is_empty() {
        reads = reads.context(key::CONSUMER);
    }
    for name in policy.header_parts() {
        reads = reads.request_header(&name);
    }
    reads
}

impl RateLimit {
    /// Decides every limit in order; stops at the first refusal and gives back what the
    /// earlier ones took.
    fn decide<'a>(&self, request: &Request, limits: &[&'a Limit]) -> Verdict<'a> {
        let now_ms = clock::now_ms();
        let source = KeySource::new(request, &self.client_ip, &self.api_key_header);
        let mut taken: Vec<Taken> = Vec::new();
        let mut shown = Vec::new();
        for &limit in limits {
            let value = source
                .key(&limit.key)
                .or_else(|| source.key(&limit.fallback))
                .or_else(|| source.key(&key::KeySpec::route()))
                .unwrap_or_default();
            let base = format!("{}:{value}", limit.prefix);
            match limit.shape.decide(&base, now_ms) {
                Ok((decision, took)) => {
                    self.store_answers();
                    taken.extend(took);
                    if decision.allowed {
                        shown.push((limit, decision));
                    } else if limit.shadow {
                        self.count(limit, "shadow_limited");
                        self.log_shadow(limit, now_ms);
                    } else {
                        for took in &taken {
                            took.give_back();
                        }
                        self.count(limit, "limited");
                        // What the earlier limits took is back: they show it.
                        let shown = shown
                            .into_iter()
                            .filter(|(limit, _)| !limit.shadow)
                            .map(|(limit, mut decision)| {
                                decision.remaining = (decision.remaining + 1).min(quota(limit));
                                (limit, decision)
                            })
                            .collect();
                        return Verdict::Limited(limit, decision, shown);
                    }
                }
                Err(failure) => {
                    self.store_fails(&failure);
                    // A shadow limit never refuses, not even for want of a store.
                    match limit.on_store_error {
                        OnStoreError::Closed if !limit.shadow => {
                            self.count_store_error(limit, "closed");
                            for took in &taken {
                                took.give_back();
                            }
                            return Verdict::Unavailable;
                        }
                        _ => self.count_store_error(limit, "open"),
                    }
                }
            }
        }
        for (limit, _) in &shown {
            self.count(limit, "allowed");
        }
        // A shadow limit is invisible to clients: its numbers are not shown.
        shown.retain(|(limit, _)| !limit.shadow);
        Verdict::Allowed(shown)
    }

    fn count(&self, limit: &Limit, outcome: &str) {
        self.requests
            .inc_with(&[&self.policy.scope, &limit.name, outcome]);
    }

    fn count_store_error(&self, limit: &Limit, action: &str) {
        self.store_errors
            .inc_with(&[&self.policy.scope, &limit.name, action]);
    }

    fn store_fails(&self, failure: &StoreFailure) {
        if !self.store_down.replace(true) {
            log::warn(&format!(
                "rate limit `{}`: the store cannot decide ({failure}); limits with \
                 on_store_error: open let requests through uncounted, closed ones answer 503, \
                 until it answers again (logged once)",
                self.policy.scope
            ));
        }
    }

    fn store_answers(&self) {
        if self.store_down.replace(false) {
            log::info(&format!(
                "rate limit `{}`: the store answers again",
                self.policy.scope
            ));
        }
    }

    /// Logs that a shadow limit would have refused, at most once per
    /// [`SHADOW_LOG_EVERY_MS`] per instance, with how many went unlogged.
    fn log_shadow(&self, limit: &Limit, now_ms: u64) {
        let (last, unlogged) = self.shadow_logged.get();
        if last.is_some_and(|last| now_ms.saturating_sub(last) < SHADOW_LOG_EVERY_MS) {
            self.shadow_logged.set((last, unlogged + 1));
            return;
        }
        let since = if unlogged > 0 {
            format!(" ({unlogged} more since the last line)")
        } else {
            String::new()
        };
        log::info(&format!(
            "rate limit `{}`: shadow limit `{}` would have refused a request{since}",
            self.policy.scope, limit.name
        ));
        self.shadow_logged.set((Some(now_ms), 0));
    }

    /// The headers an answer carries: the legacy ones for the limit with the fewest requests
    /// left (the one that refused, if one did), and one IETF item per limit.
    fn header_lines(
        &self,
        shown: &[(&Limit, Decision)],
        refused: Option<(&Limit, Decision)>,
    ) -> Vec<(&'static str, String)> {
        let all: Vec<(&Limit, Decision)> = shown.iter().copied().chain(refused).collect();
        let mut lines = Vec::new();
        let tightest = refused.or_else(|| {
            all.iter()
                .copied()
                .min_by_key(|(_, decision)| decision.remaining)
        });
        let Some((tight, decision)) = tightest else {
            return lines;
        };
        if self.headers.legacy {
            lines.push(("x-ratelimit-limit", quota(tight).to_string()));
            lines.push(("x-ratelimit-remaining", decision.remaining.to_string()));
            lines.push(("x-ratelimit-reset", seconds(decision.reset_ms).to_string()));
        }
        if self.headers.ietf {
            let policies: Vec<String> = all
                .iter()
                .map(|(limit, _)| {
                    format!(
                        "\"{}\";q={};w={}",
                        limit.name,
                        quota(limit),
                        limit.window_s()
                    )
                })
                .collect();
            let states: Vec<String> = all
                .iter()
                .map(|(limit, decision)| {
                    format!(
                        "\"{}\";r={};t={}",
                        limit.name,
                        decision.remaining,
                        seconds(decision.reset_ms)
                    )
                })
                .collect();
            lines.push(("ratelimit-policy", policies.join(", ")));
            lines.push(("ratelimit", states.join(", ")));
        }
        lines
    }
}

/// The quota a limit announces: the requests of a window, or the bucket's size.
fn quota(limit: &Limit) -> u64 {
    match limit.shape.algorithm {
        Algorithm::TokenBucket => limit.shape.burst,
        Algorithm::FixedWindow | Algorithm::SlidingWindow => limit.shape.rate,
    }
}

/// Milliseconds as whole seconds, rounded up: a client that waits this long is not early.
fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

// Only a component exports the handler; native builds exist for the unit tests.
gateway_sdk::export_filter!(RateLimit);
