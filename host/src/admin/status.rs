//! `GET /admin/status`, `GET /admin/routes` and `GET /admin/filters`: what serves now, read
//! from the serving state and the reloader; and the seeds' `GET /api/v1/gateway/status`.
//!
//! Each answer is built per request from the live state: nothing here is cached, so an answer
//! never lags a reload.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use gateway_filter::Phases;
use gateway_proxy::ServingState;

use super::{Admin, websocket_status};
use crate::reload::Reloader;

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The gateway at a glance: what runs, since when, and how much of it.
pub(crate) fn status(admin: &Admin) -> Value {
    let state = admin.reloader.live().current();
    let reload = admin.reloader.status();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(admin.started_at),
        "uptime_seconds": admin.started.elapsed().as_secs(),
        "generation": reload.generation,
        "workers": admin.workers,
        "listeners": admin.listeners.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "admin": admin.address.to_string(),
        "admin_token_required": admin.token.is_some(),
        "routes": state.routes().count(),
        "services": state.services().count(),
        "filters": state.filters.len(),
        "last_reload": reload.last,
        "websocket": websocket_status(),
    })
}

/// The seeds' status answer: the same figures, under the names their clients read.
pub(crate) fn gateway_status(admin: &Admin) -> Value {
    let mut answer = status(admin);
    if let Value::Object(fields) = &mut answer {
        fields.insert("status".to_owned(), json!("healthy"));
        fields.insert(
            "timestamp".to_owned(),
            json!(rfc3339(std::time::SystemTime::now())),
        );
    }
    answer
}

fn phases(phases: Phases) -> Vec<&'static str> {
    let mut names = Vec::new();
    if phases.contains(Phases::REQUEST) {
        names.push("request");
    }
    if phases.contains(Phases::RESPONSE) {
        names.push("response");
    }
    names
}

/// A phase's calls since start; the failures are what `on_failure` had to handle.
fn phase_totals(totals: gateway_metrics::PhaseTotals) -> Value {
    json!({
        "calls": totals.calls,
        "replies": totals.replies,
        "failures": {
            "trap": totals.traps,
            "timeout": totals.timeouts,
            "memory_limit": totals.memory_limits,
            "other": totals.other_failures,
        },
        "mean_micros": totals.mean_micros,
    })
}

/// Every route, in the order they are tried, with its filter chain.
pub(crate) fn routes(state: &ServingState) -> Value {
    let routes: Vec<Value> = state
        .routes()
        .map(|route| {
            let filters: Vec<Value> = route
                .filters
                .iter()
                .map(|pool| {
                    json!({
                        "name": pool.name(),
                        "sha256": pool.filter().hash.to_string(),
                        "phases": phases(pool.phases()),
                        "on_failure": format!("{:?}", pool.policy).to_lowercase(),
                        "idle_instances": pool.idle_instances(),
                    })
                })
                .collect();
            json!({
                "name": route.name,
                "host": route.host,
                "path": route.path,
                "methods": route.methods.map(|methods| {
                    methods.iter().map(ToString::to_string).collect::<Vec<_>>()
                }),
                "service": route.service,
                "filters": filters,
            })
        })
        .collect();
    json!({ "routes": routes })
}

/// Every filter component serving, with the routes that run it and their pools.
pub(crate) fn filters(reloader: &Reloader) -> Value {
    let state = reloader.live().current();
    let mut used_by: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for route in state.routes() {
        for pool in route.filters {
            used_by.entry(pool.name()).or_default().push(json!({
                "route": route.name,
                "phases": phases(pool.phases()),
                "idle_instances": pool.idle_instances(),
            }));
        }
    }
    let filters: Vec<Value> = reloader
        .status()
        .filters
        .into_iter()
        .map(|filter| {
            let routes = used_by.remove(filter.name.as_str()).unwrap_or_default();
            let [request, response] = gateway_metrics::filter_totals(&filter.name);
            json!({
                "name": filter.name,
                "module": filter.module,
                "sha256": filter.sha256,
                "compiled_from": filter.compiled_from,
                "routes": routes,
                "calls": {
                    "request": phase_totals(request),
                    "response": phase_totals(response),
                },
            })
        })
        .collect();
    json!({ "filters": filters })
}
