//! Applying the outcome of a call: the filter's edits, context entries and metric updates,
//! checked with the rules the SDK checks them with, and applied all or nothing.
//!
//! The SDK refuses a bad edit where the filter makes it, so a refusal here means the filter
//! went around the SDK or disagrees with it: the call fails, and the filter's failure policy
//! decides. Nothing of a refused outcome is applied, so a filter that fails open leaves the
//! request as it found it.

use bytes::Bytes;
use gateway_rules::changes::{Change, changes};
use gateway_rules::context::Context;
use gateway_rules::edit::{self, EditError};
use gateway_rules::metrics;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::declared::{Declared, held_whole};
use crate::heads::{HeldBody, RequestHead, ResponseHead};

/// Names kept per instance. A filter that sets more distinct names parses the others each time.
const KEPT_HEADER_NAMES: usize = 32;

/// The header names an instance's filter has set, kept for the next requests. A filter sets the
/// same few names on every request, and making a name the `http` crate does not know
/// (`x-served-by`) costs an allocation each time; a kept one is a reference count.
#[derive(Default)]
pub(crate) struct HeaderNames(Vec<HeaderName>);

impl HeaderNames {
    fn name(&mut self, name: &str) -> Result<HeaderName, EditError> {
        // Kept names are valid and lower-case, so a name equal to one but for case is that name.
        if let Some(kept) = self
            .0
            .iter()
            .find(|kept| kept.as_str().eq_ignore_ascii_case(name))
        {
            return Ok(kept.clone());
        }
        let parsed = edit::header_name(name)?;
        if self.0.len() < KEPT_HEADER_NAMES {
            self.0.push(parsed.clone());
        }
        Ok(parsed)
    }
}

/// An edit that passed its checks.
enum Checked {
    Path(String),
    Query(Option<String>),
    SetHeader(HeaderName, HeaderValue),
    AppendHeader(HeaderName, HeaderValue),
    RemoveHeader(String),
    Status(StatusCode),
    Body(Bytes),
}

/// Which message a phase edits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Request,
    Response,
}

/// The checks of one outcome: edits ready to apply, the context as it will be, and the metric
/// updates to record.
struct Plan {
    edits: Vec<Checked>,
    context: Option<Context>,
    metrics: Vec<(u32, u32, f64)>,
}

fn plan(
    phase: Phase,
    encoded: &[u8],
    names: &mut HeaderNames,
    context: &Context,
    declared: &Declared,
    body: &HeldBody,
) -> Result<Plan, String> {
    let body_limit = match phase {
        Phase::Request => declared.request_body,
        Phase::Response => declared.response_body,
    };
    let body_held = held_whole(body, body_limit);
    let mut plan = Plan {
        edits: Vec::new(),
        context: None,
        metrics: Vec::new(),
    };
    let refused = |error: EditError| error.to_string();
    for change in changes(encoded) {
        let checked = match change.map_err(|error| error.to_string())? {
            Change::SetPath(_) | Change::SetQuery(_) if phase == Phase::Response => {
                return Err(edit::REQUEST_SENT.to_owned());
            }
            Change::SetPath(path) => {
                edit::path(path).map_err(refused)?;
                Checked::Path(path.to_owned())
            }
            Change::SetQuery(query) => {
                if let Some(query) = query {
                    edit::query(query).map_err(refused)?;
                }
                Checked::Query(query.map(str::to_owned))
            }
            Change::SetHeader(name, value) => {
                Checked::SetHeader(names.name(name).map_err(refused)?, header_value(value)?)
            }
            Change::AppendHeader(name, value) => {
                Checked::AppendHeader(names.name(name).map_err(refused)?, header_value(value)?)
            }
            Change::RemoveHeader(name) => Checked::RemoveHeader(name.to_owned()),
            Change::SetStatus(_) if phase == Phase::Request => {
                return Err(edit::NO_RESPONSE_YET.to_owned());
            }
            Change::SetStatus(status) => Checked::Status(edit::status(status).map_err(refused)?),
            Change::SetBody(body) => {
                edit::body(body.len(), body_held, body_limit.unwrap_or(0)).map_err(refused)?;
                Checked::Body(Bytes::copy_from_slice(body))
            }
            Change::SetContext(key, value) => {
                plan.context
                    .get_or_insert_with(|| context.clone())
                    .set(key, value)
                    .map_err(|error| error.to_string())?;
                continue;
            }
            Change::RemoveContext(key) => {
                plan.context
                    .get_or_insert_with(|| context.clone())
                    .remove(key);
                continue;
            }
            Change::Metric {
                metric,
                series,
                value,
            } => {
                metrics::update(&declared.metric_specs, metric, series, value)
                    .map_err(|error| error.to_string())?;
                plan.metrics.push((metric, series, value));
                continue;
            }
        };
        plan.edits.push(checked);
    }
    Ok(plan)
}

fn header_value(value: &str) -> Result<HeaderValue, String> {
    edit::header_value(value.to_owned()).map_err(|error| error.to_string())
}

fn apply_header(headers: &mut HeaderMap, edit: Checked) -> Option<Checked> {
    match edit {
        Checked::SetHeader(name, value) => {
            headers.insert(name, value);
        }
        Checked::AppendHeader(name, value) => {
            headers.append(name, value);
        }
        Checked::RemoveHeader(name) => {
            // A name that is not valid is in no map: nothing to remove.
            headers.remove(name.as_str());
        }
        other => return Some(other),
    }
    None
}

/// Framing follows a replaced body, so that later filters read its length and nothing sends a
/// stale one.
fn frame_by_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

fn record_metrics(declared: &Declared, updates: &[(u32, u32, f64)]) {
    for &(metric, series, value) in updates {
        declared.metrics[metric as usize].record(series, value);
    }
}

/// Applies a request phase's outcome to the request, or refuses all of it.
pub(crate) fn apply_to_request(
    declared: &Declared,
    names: &mut HeaderNames,
    head: &mut RequestHead,
    changes: &[u8],
) -> Result<(), String> {
    let plan = plan(
        Phase::Request,
        changes,
        names,
        &head.context,
        declared,
        &head.body,
    )?;
    for edit in plan.edits {
        match apply_header(&mut head.headers, edit) {
            Some(Checked::Path(path)) => head.path = path,
            Some(Checked::Query(query)) => head.query = query,
            Some(Checked::Body(body)) => {
                frame_by_length(&mut head.headers, body.len());
                head.body = HeldBody::Complete(body);
            }
            _ => {}
        }
    }
    if let Some(context) = plan.context {
        head.context = context;
    }
    record_metrics(declared, &plan.metrics);
    Ok(())
}

/// Applies a response phase's outcome to the response (and the request's context), or refuses
/// all of it.
pub(crate) fn apply_to_response(
    declared: &Declared,
    names: &mut HeaderNames,
    request: &mut RequestHead,
    response: &mut ResponseHead,
    changes: &[u8],
) -> Result<(), String> {
    let plan = plan(
        Phase::Response,
        changes,
        names,
        &request.context,
        declared,
        &response.body,
    )?;
    for edit in plan.edits {
        match apply_header(&mut response.headers, edit) {
            Some(Checked::Status(status)) => response.status = status,
            Some(Checked::Body(body)) => {
                frame_by_length(&mut response.headers, body.len());
                response.body = HeldBody::Complete(body);
            }
            _ => {}
        }
    }
    if let Some(context) = plan.context {
        request.context = context;
    }
    record_metrics(declared, &plan.metrics);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_header_names_are_reused_whatever_their_case() {
        let mut names = HeaderNames::default();
        let first = names.name("X-Served-By").expect("a valid name");
        let again = names.name("x-served-by").expect("a valid name");
        assert_eq!(first, again);
        names.name("content-type").expect("a valid name");
        assert_eq!(names.0.len(), 2, "one kept name per distinct name");
        assert!(names.name("bad name").is_err());

        // Past the bound, names still work; they are only not kept.
        for index in 0..2 * KEPT_HEADER_NAMES {
            let name = format!("x-name-{index}");
            assert_eq!(names.name(&name).expect("a valid name").as_str(), name);
        }
        assert_eq!(names.0.len(), KEPT_HEADER_NAMES);
    }

    fn declared() -> Declared {
        let registration = crate::bindings::Registration {
            phases: crate::bindings::Phases::all(),
            request_fields: crate::bindings::RequestFields::empty(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            context_keys: Vec::new(),
            request_body: Some(10),
            response_body: None,
            metrics: Vec::new(),
        };
        Declared::new(registration, &"f".into(), &Default::default()).expect("a valid registration")
    }

    fn encoded(changes: &[Change<'_>]) -> Vec<u8> {
        let mut writer = gateway_rules::changes::Writer::default();
        for change in changes {
            writer.push(change);
        }
        writer.finish()
    }

    fn planned(phase: Phase, changes: &[Change<'_>], held: bool) -> Result<Plan, String> {
        let mut names = HeaderNames::default();
        let declared = declared();
        // Handed whole: a body within the declared limit of 10 bytes.
        let body = if held {
            HeldBody::Complete(Bytes::from_static(b"held"))
        } else {
            HeldBody::Streaming
        };
        plan(
            phase,
            &encoded(changes),
            &mut names,
            &Context::default(),
            &declared,
            &body,
        )
    }

    #[test]
    fn a_refused_edit_leaves_the_whole_outcome_unapplied() {
        let refused = planned(
            Phase::Request,
            &[
                Change::SetHeader("x-ok", "1"),
                Change::SetContext("auth.subject", "alice"),
                Change::SetHeader("x-bad", "a\nb"),
            ],
            false,
        );
        assert!(refused.is_err());
        let mut head = RequestHead::default();
        let mut names = HeaderNames::default();
        let bad = encoded(&[
            Change::SetHeader("x-ok", "1"),
            Change::Metric {
                metric: 0,
                series: 0,
                value: 1.0,
            },
        ]);
        assert!(apply_to_request(&declared(), &mut names, &mut head, &bad).is_err());
        assert!(
            head.headers.is_empty(),
            "nothing of a refused outcome applies"
        );

        assert!(
            planned(Phase::Request, &[Change::SetBody(b"x")], false).is_err(),
            "a body never handed over cannot be replaced"
        );
        assert!(planned(Phase::Request, &[Change::SetBody(&[0; 11])], true).is_err());
        assert!(planned(Phase::Request, &[Change::SetBody(&[0; 10])], true).is_ok());
        assert!(planned(Phase::Request, &[Change::SetStatus(204)], false).is_err());
        assert!(planned(Phase::Response, &[Change::SetPath("/x")], false).is_err());
        assert!(
            changes(&[42, 0, 0, 0, 0])
                .next()
                .is_some_and(|change| change.is_err()),
            "an unreadable outcome is refused too"
        );
    }

    #[test]
    fn context_entries_past_the_bound_are_refused() {
        let keys: Vec<String> = (0..=gateway_rules::context::MAX_ENTRIES)
            .map(|index| format!("k{index}"))
            .collect();
        let changes: Vec<Change> = keys
            .iter()
            .map(|key| Change::SetContext(key, "v"))
            .collect();
        let refused = planned(Phase::Request, &changes, false);
        assert!(refused.is_err_and(|reason| reason.contains("at most 32")));
    }
}
