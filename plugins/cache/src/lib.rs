//! The bundled `cache` filter: a shared HTTP cache that follows RFC 9111, keeping its entries
//! in the gateway's key-value store (its memory, or a Redis that several gateways share).
//!
//! Request phase, for GET and HEAD (HEAD shares GET's entry): look the request's key up; a
//! fresh entry answers at once (`X-Cache-Status: HIT`, `Age`, a 304 when the client's
//! conditional matches). An expired entry with a validator is revalidated: the request goes
//! upstream with `If-None-Match` / `If-Modified-Since`, and the upstream's 304 is turned back
//! into the stored answer (`REVALIDATED`). Anything else goes upstream (`MISS`, `EXPIRED`,
//! `BYPASS`) and its answer is stored if RFC 9111 allows it. Requests with other methods go
//! upstream untouched; a successful unsafe one (POST, PUT, PATCH, DELETE, ...) invalidates the
//! entries of its URL and of the same-origin `Location` / `Content-Location` of its answer
//! (RFC 9111 §4.4).
//!
//! What never reaches another client: an answer marked `private` or `no-store`, an answer
//! that sets a cookie (unless the route strips cookies before storing), an answer to a
//! request with `Authorization` (unless it says `public`, `s-maxage` or `must-revalidate`,
//! or the route keys entries per user). The rules are in [`rfc`], the key layout in [`entry`],
//! every configuration key in [`config::Config`].
//!
//! A store that fails (Redis away) makes requests go upstream uncached: the cache fails open,
//! with one warning per instance until it answers again.

pub mod config;
mod entry;
mod rfc;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::time::Duration;

use gateway_sdk::lock::{self, Outcome};
use gateway_sdk::metrics::Counter;
use gateway_sdk::{Action, Body, Filter, Headers, Reads, Reply, Request, Response, clock, kv};
use sha2::{Digest, Sha256};

use crate::config::{Config, SetCookie};
use crate::entry::{Entry, Stored};
use crate::rfc::{Answer, CacheControl, Use};

/// Context entries the request phase leaves for the response phase.
const STATE: &str = "cache.state";
const KEY: &str = "cache.key";
const SENT_MS: &str = "cache.sent";
/// Set while this request holds the key's single-flight lock.
const LOCKED: &str = "cache.locked";
/// The client's own conditionals, replaced by the cache's while it revalidates.
const CLIENT_INM: &str = "cache.inm";
const CLIENT_IMS: &str = "cache.ims";

/// What the request phase decided, as the response phase reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing stored: store the answer if allowed.
    Miss,
    /// Stored but stale without a validator: fetched again, stored if allowed.
    Expired,
    /// Stored, stale, with a validator: a 304 refreshes the entry.
    Revalidate,
    /// Neither served from nor stored in the cache.
    Bypass,
    /// `Authorization` without a shareable entry: served upstream, stored only if the answer
    /// says it may be shared.
    Authorized,
    /// An unsafe method: invalidate on success.
    Invalidate,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Miss => "miss",
            State::Expired => "expired",
            State::Revalidate => "revalidate",
            State::Bypass => "bypass",
            State::Authorized => "authorized",
            State::Invalidate => "invalidate",
        }
    }

    fn parse(name: &str) -> Option<State> {
        [
            State::Miss,
            State::Expired,
            State::Revalidate,
            State::Bypass,
            State::Authorized,
            State::Invalidate,
        ]
        .into_iter()
        .find(|state| state.name() == name)
    }
}

const STATUSES: &[&str] = &["hit", "miss", "expired", "stale", "bypass", "revalidated"];
const REASONS: &[&str] = &[
    "no-store",
    "private",
    "set-cookie",
    "vary-star",
    "status",
    "authorization",
    "no-freshness",
    "too-large",
];

/// The filter, with its route's configuration.
pub struct Cache {
    config: Config,
    requests: Counter,
    stored: Counter,
    stored_bytes: Counter,
    not_stored: Counter,
    invalidated: Counter,
    store_errors: Counter,
    /// Whether this instance has warned that the store fails, so an outage logs once.
    warned: Cell<bool>,
}

impl Filter for Cache {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        config::check(&config)?;
        Ok(Cache {
            config,
            requests: Counter::with_labels(
                "requests_total",
                "Requests by X-Cache-Status",
                &[("status", STATUSES)],
            ),
            stored: Counter::new("stored_total", "Answers stored"),
            stored_bytes: Counter::new("stored_bytes_total", "Bytes of answers stored"),
            not_stored: Counter::with_labels(
                "not_stored_total",
                "Answers to cacheable requests not stored, by reason",
                &[("reason", REASONS)],
            ),
            invalidated: Counter::new(
                "invalidated_total",
                "Entries invalidated by unsafe requests",
            ),
            store_errors: Counter::new("store_errors_total", "Key-value operations that failed"),
            warned: Cell::new(false),
        })
    }

    fn reads(&self) -> Reads {
        let mut reads = Reads::default()
            .method()
            .path()
            .query()
            .authority()
            // Read on every GET: declared, they come with the call instead of a crossing each.
            .request_header("cache-control")
            .request_header("pragma")
            .request_header("authorization")
            .request_header("if-none-match")
            .request_header("if-modified-since")
            .response_header("cache-control")
            .response_header("expires")
            .response_header("date")
            .response_header("last-modified")
            .response_header("etag")
            .response_header("vary")
            .response_header("set-cookie")
            .response_header("age")
            .context(STATE)
            .context(KEY)
            .context(SENT_MS)
            .context(LOCKED)
            .response_body(self.config.max_entry_size);
        for name in &self.config.key.headers {
            reads = reads.request_header(name);
        }
        for key in &self.config.key.context {
            reads = reads.context(key);
        }
        reads
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let method = request.method();
        if method != "GET" && method != "HEAD" {
            // RFC 9110 §9.2.1: the safe methods change nothing, so leave the entries alone.
            if method != "OPTIONS" && method != "TRACE" {
                let key = self.url_key(request);
                self.remember(request, State::Invalidate, &key);
            }
            return Action::Continue;
        }
        let request_cc = request_cache_control(request);
        let Some(key) = self.key(request) else {
            return self.bypass(request);
        };
        if request_cc.no_store {
            return self.bypass(request);
        }
        let authorized = !self.config.per_user && request.header("authorization").is_some();
        let found = match self.lookup(&key, request) {
            Ok(found) => found,
            Err(error) => {
                self.store_failed(&error);
                return self.bypass(request);
            }
        };
        let entry = match found {
            Found::Entry(entry) => entry,
            Found::Uncacheable => {
                self.remember(request, State::Miss, &key);
                return Action::Continue;
            }
            Found::Nothing if authorized => {
                self.remember(request, State::Authorized, &key);
                return Action::Continue;
            }
            Found::Nothing => return self.miss(request, &key, &request_cc, State::Miss),
        };
        let stored_cc = CacheControl::parse(&entry.header_values("cache-control"));
        if authorized && !(stored_cc.public || stored_cc.s_maxage.is_some()) {
            self.remember(request, State::Authorized, &key);
            return Action::Continue;
        }
        let now = clock::now_ms();
        let age = rfc::current_age(entry.initial_age, entry.response_ms, now);
        match rfc::usable(&request_cc, &stored_cc, entry.lifetime, age) {
            Use::Fresh => self.serve(request, entry, age, "hit"),
            Use::StaleAccepted => self.serve(request, entry, age, "stale"),
            Use::Revalidate => {
                if request_cc.only_if_cached {
                    // RFC 9111 §5.2.1.7: the client wants no upstream request.
                    return Action::Respond(Reply::error(
                        504,
                        "NOT_CACHED",
                        "no fresh stored answer, and the request says only-if-cached",
                        request,
                    ));
                }
                match self.revalidate(request, &entry) {
                    Ok(true) => {
                        self.remember(request, State::Revalidate, &key);
                        Action::Continue
                    }
                    Ok(false) => self.miss(request, &key, &request_cc, State::Expired),
                    Err(error) => {
                        gateway_sdk::log::warn(&format!("cannot revalidate: {error}"));
                        self.remember(request, State::Expired, &key);
                        Action::Continue
                    }
                }
            }
        }
    }

    fn on_response(&self, request: &Request, response: &mut Response) -> Action {
        let Some(state) = request.context(STATE).as_deref().and_then(State::parse) else {
            return Action::Continue;
        };
        let key = request.context(KEY).unwrap_or_default();
        let action = self.respond(request, response, state, &key);
        // After the answer is stored, so the requests waiting for it find it.
        if request.context(LOCKED).is_some() {
            if let Err(error) = lock::release(&key) {
                self.store_failed(&error);
            }
            request.remove_context(LOCKED);
        }
        action
    }
}

impl Cache {
    /// The response phase, for a request the request phase decided on.
    fn respond(
        &self,
        request: &Request,
        response: &mut Response,
        state: State,
        key: &str,
    ) -> Action {
        let key = key.to_owned();
        match state {
            State::Invalidate => {
                if (200..400).contains(&response.status()) {
                    self.invalidate(&key, response);
                }
                Action::Continue
            }
            State::Bypass => {
                self.label(response, "bypass");
                Action::Continue
            }
            State::Revalidate if response.status() == 304 => self.refresh(request, response, &key),
            State::Revalidate | State::Expired if response.status() >= 500 => {
                self.stale_if_error(request, response, &key)
            }
            State::Miss | State::Expired | State::Revalidate | State::Authorized => {
                let status = match state {
                    State::Miss => "miss",
                    State::Authorized => "bypass",
                    _ => "expired",
                };
                if request.method() == "GET" {
                    let stored = self.store(request, response, &key, state == State::Authorized);
                    // A 304 answers the client's own conditional: it says nothing about
                    // whether the resource can be stored.
                    if !stored && response.status() != 304 && request.context(LOCKED).is_some() {
                        self.remember_uncacheable(&key);
                    }
                }
                self.label(response, status);
                Action::Continue
            }
        }
    }
}

/// The request's `Cache-Control`, with `Pragma: no-cache` standing in when it has none
/// (RFC 9111 §5.4).
fn request_cache_control(request: &Request) -> CacheControl {
    let lines = request.header_values("cache-control");
    let mut cc = CacheControl::parse(&lines);
    if lines.is_empty()
        && request
            .header_values("pragma")
            .iter()
            .any(|line| line.to_ascii_lowercase().contains("no-cache"))
    {
        cc.no_cache = true;
    }
    cc
}

impl Cache {
    /// A request with nothing usable stored: with single flight, the first goes upstream
    /// holding the key's lock and the others wait for its answer.
    fn miss(
        &self,
        request: &mut Request,
        key: &str,
        request_cc: &CacheControl,
        state: State,
    ) -> Action {
        if self.config.lock_wait.is_zero() || request.method() != "GET" {
            self.remember(request, state, key);
            return Action::Continue;
        }
        match lock::acquire(key, self.config.lock_lease, self.config.lock_wait) {
            Ok(Outcome::Acquired) => {
                self.remember(request, state, key);
                if let Err(error) = request.set_context(LOCKED, "1") {
                    gateway_sdk::log::warn(&format!("cannot keep the lock state: {error}"));
                }
                return Action::Continue;
            }
            Ok(Outcome::Released) => {
                // The first request's answer, if it could be stored.
                if let Ok(Found::Entry(entry)) = self.lookup(key, request) {
                    let stored_cc = CacheControl::parse(&entry.header_values("cache-control"));
                    let age =
                        rfc::current_age(entry.initial_age, entry.response_ms, clock::now_ms());
                    if rfc::usable(request_cc, &stored_cc, entry.lifetime, age) == Use::Fresh {
                        return self.serve(request, entry, age, "hit");
                    }
                }
            }
            Ok(Outcome::TimedOut) => {}
            Err(error) => self.store_failed(&error),
        }
        self.remember(request, state, key);
        Action::Continue
    }

    /// Marks the key hit-for-miss, unless a storable answer replaced it meanwhile.
    fn remember_uncacheable(&self, key: &str) {
        if self.config.hit_for_miss.is_zero() {
            return;
        }
        if let Err(error) = kv::set(key, entry::HIT_FOR_MISS, Some(self.config.hit_for_miss)) {
            self.store_failed(&error);
        }
    }

    /// The URL key of the request as it arrived.
    fn url_key(&self, request: &Request) -> String {
        let host = request.authority().unwrap_or_default();
        entry::url_key(
            &self.config.zone,
            &host,
            &request.path(),
            request.query().as_deref(),
        )
    }

    /// The request's key: its URL and the configured parts; `None` if too long to store.
    fn key(&self, request: &Request) -> Option<String> {
        let mut key = self.url_key(request);
        if !self.config.key.is_empty() || self.config.per_user {
            key.push_str(" k:");
            for name in &self.config.key.headers {
                key.push('h');
                entry::escape(&request.header_values(name).join(","), &mut key);
                key.push('|');
            }
            for name in &self.config.key.cookies {
                key.push('c');
                entry::escape(&request.cookie(name).unwrap_or_default(), &mut key);
                key.push('|');
            }
            for name in &self.config.key.context {
                key.push('x');
                entry::escape(&request.context(name).unwrap_or_default(), &mut key);
                key.push('|');
            }
            if self.config.per_user {
                // A digest, never the credentials: keys are visible to whoever reads the store.
                let credentials = request.header_values("authorization").join("\n");
                let digest = Sha256::digest(credentials.as_bytes());
                key.push('u');
                for byte in &digest[..16] {
                    key.push_str(&format!("{byte:02x}"));
                }
            }
        }
        (key.len() <= entry::MAX_KEY).then_some(key)
    }

    /// Whether entries carry key parts beyond the URL: invalidation then leaves a tombstone.
    fn keyed_beyond_url(&self) -> bool {
        !self.config.key.is_empty() || self.config.per_user
    }

    /// The entry for the request, following a `Vary` marker to the request's variant.
    fn lookup(&self, key: &str, request: &Request) -> Result<Found, gateway_sdk::Error> {
        let Some(bytes) = kv::get(key)? else {
            return Ok(Found::Nothing);
        };
        let entry = match Stored::decode(&bytes) {
            None => return Ok(Found::Nothing),
            Some(Stored::HitForMiss) => return Ok(Found::Uncacheable),
            Some(Stored::Entry(entry)) => entry,
            Some(Stored::Vary { generation, names }) => {
                let variant = entry::variant_key(key, &generation, &vary_values(request, &names));
                match kv::get(&variant)?.as_deref().and_then(Entry::decode) {
                    Some(entry) => entry,
                    None => return Ok(Found::Nothing),
                }
            }
        };
        if self.keyed_beyond_url() {
            let url = key.split(" k:").next().unwrap_or(key);
            let invalidated = kv::get_string(&entry::tombstone_key(url))?
                .and_then(|text| text.parse::<u64>().ok());
            if invalidated.is_some_and(|at| entry.response_ms <= at) {
                return Ok(Found::Nothing);
            }
        }
        Ok(Found::Entry(entry))
    }

    /// Answers from a stored entry: a 304 when the client's conditional matches it, else the
    /// stored answer.
    fn serve(&self, request: &Request, entry: Entry, age: u64, status: &'static str) -> Action {
        self.requests.inc_with(&[status]);
        let if_none_match = request.header_values("if-none-match");
        let if_modified_since = request.header("if-modified-since");
        let conditional = (200..300).contains(&entry.status)
            && rfc::not_modified(
                &if_none_match,
                if_modified_since.as_deref(),
                entry.header("etag"),
                entry.header("last-modified").and_then(rfc::http_date),
            );
        let mut reply = if conditional {
            // RFC 9110 §15.4.5: what a 200 would have carried that describes the
            // representation's identity and caching.
            let mut reply = Reply::new(304);
            for (name, value) in &entry.headers {
                if matches!(
                    name.as_str(),
                    "cache-control"
                        | "content-location"
                        | "date"
                        | "etag"
                        | "expires"
                        | "vary"
                        | "last-modified"
                ) {
                    reply = reply.with_header(name.clone(), value.clone());
                }
            }
            reply
        } else {
            // Moved, not copied: a hit's body crosses out of the filter once.
            let mut reply = Reply::new(entry.status);
            reply.headers = entry.headers;
            reply.with_body(entry.body)
        };
        reply = reply
            .with_header("age", age.to_string())
            .with_header("x-cache-status", status.to_ascii_uppercase());
        Action::Respond(reply)
    }

    /// Sends the entry's validators upstream in place of the client's; whether it had any.
    fn revalidate(&self, request: &mut Request, entry: &Entry) -> Result<bool, gateway_sdk::Error> {
        let etag = entry.header("etag");
        let last_modified = entry.header("last-modified");
        if etag.is_none() && last_modified.is_none() {
            return Ok(false);
        }
        let client_inm = request.header_values("if-none-match").join(", ");
        let client_ims = request.header("if-modified-since");
        if !client_inm.is_empty() {
            request.set_context(CLIENT_INM, &client_inm)?;
        }
        if let Some(since) = client_ims {
            request.set_context(CLIENT_IMS, &since)?;
        }
        request.remove_header("if-none-match");
        request.remove_header("if-modified-since");
        if let Some(etag) = etag {
            request.set_header("if-none-match", etag)?;
        }
        if let Some(last_modified) = last_modified {
            request.set_header("if-modified-since", last_modified)?;
        }
        Ok(true)
    }

    /// Leaves the decision and the key for the response phase.
    fn remember(&self, request: &Request, state: State, key: &str) {
        let set = request
            .set_context(STATE, state.name())
            .and_then(|()| request.set_context(KEY, key))
            .and_then(|()| request.set_context(SENT_MS, &clock::now_ms().to_string()));
        if let Err(error) = set {
            gateway_sdk::log::warn(&format!("cannot keep the cache state: {error}"));
        }
    }

    fn bypass(&self, request: &Request) -> Action {
        self.remember(request, State::Bypass, "");
        Action::Continue
    }

    fn label(&self, response: &mut Response, status: &'static str) {
        self.requests.inc_with(&[status]);
        let _ = response.set_header("x-cache-status", &status.to_ascii_uppercase());
    }

    /// Counts a failed store operation, and logs the first of a run of them.
    fn store_failed(&self, error: &gateway_sdk::Error) {
        self.store_errors.inc();
        if !self.warned.replace(true) {
            gateway_sdk::log::warn(&format!(
                "the cache's store failed; requests go upstream uncached until it answers: {error}"
            ));
        }
    }

    fn store_answered(&self) {
        if self.warned.replace(false) {
            gateway_sdk::log::info("the cache's store answers again");
        }
    }

    /// Stores the answer if RFC 9111 and the route allow it; whether it was storable.
    fn store(&self, request: &Request, response: &Response, key: &str, authorized: bool) -> bool {
        let now = clock::now_ms();
        let facts = AnswerHeaders::read(response);
        let answer = facts.answer(response.status(), now);
        let request_cc = request_cache_control(request);
        let strip_cookies = self.config.set_cookie == SetCookie::Strip;
        let heuristic = self.config.default_ttl.as_secs();
        let lifetime =
            match rfc::storable(&request_cc, &answer, authorized, strip_cookies, heuristic) {
                Ok(lifetime) => lifetime.min(self.config.max_ttl.as_secs()),
                Err(reason) => {
                    self.not_stored.inc_with(&[reason.label()]);
                    return false;
                }
            };
        let body = match response.body() {
            Some(Body::Complete(body)) => body,
            _ => {
                self.not_stored
                    .inc_with(&[rfc::NotStored::TooLarge.label()]);
                return false;
            }
        };
        let sent_ms = request
            .context(SENT_MS)
            .and_then(|text| text.parse().ok())
            .unwrap_or(now);
        let age_header = facts.age.as_deref().and_then(|age| age.trim().parse().ok());
        let entry = Entry {
            status: response.status(),
            headers: stored_headers(response, strip_cookies),
            response_ms: now,
            initial_age: rfc::initial_age(age_header, answer.date, sent_ms, now),
            lifetime,
            body,
        };
        let cc = answer.cc.clone();
        self.put(request, key, &entry, &answer.vary, &cc);
        true
    }

    /// Writes an entry, and the `Vary` marker that leads to it.
    fn put(&self, request: &Request, key: &str, entry: &Entry, vary: &[String], cc: &CacheControl) {
        let ttl = self.kept_for(entry, cc);
        let result = (|| -> Result<(), gateway_sdk::Error> {
            let target = if vary.is_empty() {
                key.to_owned()
            } else {
                let generation = match kv::get(key)?.as_deref().and_then(Stored::decode) {
                    Some(Stored::Vary { generation, names }) if names == vary => generation,
                    _ => {
                        let generation = clock::now_ms().to_string();
                        let marker = entry::vary_marker(&generation, vary);
                        let marker_ttl = self.config.max_ttl + self.config.keep_stale;
                        kv::set(key, marker, Some(marker_ttl))?;
                        generation
                    }
                };
                entry::variant_key(key, &generation, &vary_values(request, vary))
            };
            kv::set(&target, entry.encode(), Some(ttl))
        })();
        match result {
            Ok(()) => {
                self.store_answered();
                self.stored.inc();
                self.stored_bytes.add(entry.body.len() as u64);
            }
            Err(error) if error.kind() == gateway_sdk::ErrorKind::Refused => {
                // Too large for the store's own limit (kv.max_value_size).
                self.not_stored
                    .inc_with(&[rfc::NotStored::TooLarge.label()]);
            }
            Err(error) => self.store_failed(&error),
        }
    }

    /// How long the store keeps an entry: while fresh, and then while it can still be
    /// revalidated or stand in for a failing upstream.
    fn kept_for(&self, entry: &Entry, cc: &CacheControl) -> Duration {
        let fresh_for = entry.lifetime.saturating_sub(entry.initial_age);
        let validators = entry.header("etag").is_some() || entry.header("last-modified").is_some();
        let mut extra = 0;
        if validators {
            extra = self.config.keep_stale.as_secs();
        }
        let stale_window = cc
            .stale_if_error
            .unwrap_or(self.config.stale_if_error.as_secs());
        extra = extra.max(stale_window);
        Duration::from_secs(fresh_for.saturating_add(extra).max(1))
    }

    /// Turns the upstream's 304 into the stored answer, refreshed with the 304's headers
    /// (RFC 9111 §4.3.4).
    fn refresh(&self, request: &Request, response: &mut Response, key: &str) -> Action {
        let found = match self.lookup(key, request) {
            Ok(Found::Entry(entry)) => Some(entry),
            Ok(_) => None,
            Err(error) => {
                self.store_failed(&error);
                None
            }
        };
        let Some(mut entry) = found else {
            // Gone meanwhile (purged, evicted): the 304 answers the cache's conditional, not
            // the client's, so it cannot go on. The client retries; nothing stale is served.
            self.requests.inc_with(&["bypass"]);
            return Action::Respond(
                Reply::error(
                    502,
                    "CACHE_ENTRY_GONE",
                    "the stored answer being revalidated was removed; retry the request",
                    request,
                )
                .with_header("x-cache-status", "BYPASS"),
            );
        };
        let now = clock::now_ms();
        for name in response.header_names() {
            if rfc::kept_on_update(&name) || rfc::not_stored_header(&name) {
                continue;
            }
            entry.headers.retain(|(key, _)| *key != name);
            for value in response.header_values(&name) {
                entry.headers.push((name.clone(), value));
            }
        }
        let facts = AnswerHeaders::from_entry(&entry);
        let answer = facts.answer(entry.status, now);
        let heuristic = self.config.default_ttl.as_secs();
        entry.lifetime = rfc::explicit_lifetime(&answer)
            .unwrap_or(heuristic)
            .min(self.config.max_ttl.as_secs());
        let sent_ms = request
            .context(SENT_MS)
            .and_then(|text| text.parse().ok())
            .unwrap_or(now);
        let age_header = response
            .header("age")
            .and_then(|age| age.trim().parse().ok());
        entry.initial_age = rfc::initial_age(age_header, answer.date, sent_ms, now);
        entry.response_ms = now;
        let request_cc = request_cache_control(request);
        if !request_cc.no_store && !answer.cc.no_store {
            self.put(request, key, &entry, &answer.vary, &answer.cc);
        }
        // The client's own conditional, evaluated against the refreshed entry.
        let client_inm: Vec<String> = request.context(CLIENT_INM).into_iter().collect();
        let client_ims = request.context(CLIENT_IMS);
        let mut reply = if rfc::not_modified(
            &client_inm,
            client_ims.as_deref(),
            entry.header("etag"),
            entry.header("last-modified").and_then(rfc::http_date),
        ) {
            let mut reply = Reply::new(304);
            reply.headers = entry.headers.clone();
            reply
        } else {
            let mut reply = Reply::new(entry.status);
            reply.headers = entry.headers.clone();
            reply.with_body(entry.body)
        };
        self.requests.inc_with(&["revalidated"]);
        reply = reply
            .with_header("age", entry.initial_age.to_string())
            .with_header("x-cache-status", "REVALIDATED");
        Action::Respond(reply)
    }

    /// Serves the stale entry in place of an upstream's 5xx, where allowed (RFC 5861 §4).
    fn stale_if_error(&self, request: &Request, response: &mut Response, key: &str) -> Action {
        let now = clock::now_ms();
        if let Ok(Found::Entry(entry)) = self.lookup(key, request) {
            let stored_cc = CacheControl::parse(&entry.header_values("cache-control"));
            let age = rfc::current_age(entry.initial_age, entry.response_ms, now);
            let route = self.config.stale_if_error.as_secs();
            if rfc::stale_if_error(&stored_cc, entry.lifetime, age, route) {
                let mut reply = Reply::new(entry.status);
                reply.headers = entry.headers.clone();
                reply = reply
                    .with_body(entry.body)
                    .with_header("age", age.to_string())
                    .with_header("x-cache-status", "STALE");
                self.requests.inc_with(&["stale"]);
                return Action::Respond(reply);
            }
        }
        self.label(response, "expired");
        Action::Continue
    }

    /// Removes the entries of the request's URL and of the answer's same-origin `Location`
    /// and `Content-Location` (RFC 9111 §4.4).
    fn invalidate(&self, key: &str, response: &Response) {
        let Some((zone_host, target)) = key
            .split_once('/')
            .map(|(head, rest)| (head, format!("/{rest}")))
        else {
            return;
        };
        let Some((_, host)) = zone_host.split_once(' ') else {
            return;
        };
        let path = target.split('?').next().unwrap_or(&target).to_owned();
        let mut urls = vec![key.to_owned()];
        for name in ["location", "content-location"] {
            if let Some(value) = response.header(name)
                && let Some(other) = rfc::same_origin_target(&value, host, &path)
            {
                let (path, query) = match other.split_once('?') {
                    Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
                    None => (other, None),
                };
                urls.push(entry::url_key(
                    &self.config.zone,
                    host,
                    &path,
                    query.as_deref(),
                ));
            }
        }
        let now = clock::now_ms();
        for url in urls {
            let result = if self.keyed_beyond_url() {
                let ttl = self.config.max_ttl + self.config.keep_stale;
                kv::set(&entry::tombstone_key(&url), now.to_string(), Some(ttl)).map(|()| true)
            } else {
                kv::delete(&url)
            };
            match result {
                Ok(true) => self.invalidated.inc(),
                Ok(false) => {}
                Err(error) => self.store_failed(&error),
            }
        }
    }
}

/// What a lookup found at a key.
enum Found {
    Entry(Entry),
    Nothing,
    /// Marked hit-for-miss.
    Uncacheable,
}

/// The request's values of the headers an answer varies on.
fn vary_values(request: &Request, names: &[String]) -> Vec<Option<Vec<String>>> {
    names
        .iter()
        .map(|name| {
            let values = request.header_values(name);
            (!values.is_empty()).then_some(values)
        })
        .collect()
}

/// The headers of an answer that decide whether and how long it is stored.
struct AnswerHeaders {
    cache_control: Vec<String>,
    expires: Option<String>,
    date: Option<String>,
    last_modified: Option<String>,
    etag: Option<String>,
    vary: Vec<String>,
    sets_cookie: bool,
    age: Option<String>,
}

impl AnswerHeaders {
    fn read(response: &Response) -> AnswerHeaders {
        AnswerHeaders {
            cache_control: response.header_values("cache-control"),
            expires: response.header("expires"),
            date: response.header("date"),
            last_modified: response.header("last-modified"),
            etag: response.header("etag"),
            vary: response.header_values("vary"),
            sets_cookie: response.header("set-cookie").is_some(),
            age: response.header("age"),
        }
    }

    fn from_entry(entry: &Entry) -> AnswerHeaders {
        let first = |name: &str| entry.header(name).map(str::to_owned);
        AnswerHeaders {
            cache_control: entry.header_values("cache-control"),
            expires: first("expires"),
            date: first("date"),
            last_modified: first("last-modified"),
            etag: first("etag"),
            vary: entry.header_values("vary"),
            sets_cookie: false,
            age: None,
        }
    }

    fn answer(&self, status: u16, now_ms: u64) -> Answer<'_> {
        let mut vary: Vec<String> = self
            .vary
            .iter()
            .flat_map(|line| line.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        vary.sort();
        vary.dedup();
        Answer {
            status,
            cc: CacheControl::parse(&self.cache_control),
            expires: self.expires.as_deref(),
            // Without a Date, the time the answer was received stands in (RFC 9110 §6.6.1).
            date: Some(
                self.date
                    .as_deref()
                    .and_then(rfc::http_date)
                    .unwrap_or(now_ms / 1000),
            ),
            last_modified: self.last_modified.as_deref().and_then(rfc::http_date),
            has_etag: self.etag.is_some(),
            vary,
            sets_cookie: self.sets_cookie,
        }
    }
}

/// The answer's headers as stored: without hop-by-hop ones, and without `Set-Cookie` (only
/// stored at all when the route strips cookies).
fn stored_headers(response: &Response, strip_cookies: bool) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for name in response.header_names() {
        if rfc::not_stored_header(&name) || (name == "set-cookie" && strip_cookies) {
            continue;
        }
        for value in response.header_values(&name) {
            headers.push((name.clone(), value));
        }
    }
    headers
}

// Only a component exports the handler; native builds exist for the unit tests.
gateway_sdk::export_filter!(Cache);
