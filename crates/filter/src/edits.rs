//! Applying the outcome of a call: the filter's edits, context entries and metric updates,
//! checked with the rules the SDK checks them with, and applied all or nothing.
//!
//! The SDK refuses a bad edit where the filter makes it, so a refusal here means the filter
//! went around the SDK or disagrees with it: the call fails, and the filter's failure policy
//! decides. Nothing of a refused outcome is applied, so a filter that fails open leaves the
//! request as it found it.

use bytes::Bytes;
use gateway_rules::context::Context;
use gateway_rules::edit::{self, EditError};
use gateway_rules::metrics;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::bindings::{Edit, MetricUpdate};
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

/// The checks of one outcome: edits ready to apply, and the context as it will be.
struct Plan {
    edits: Vec<Checked>,
    context: Option<Context>,
}

fn plan(
    phase: Phase,
    edits: Vec<Edit>,
    names: &mut HeaderNames,
    context: &Context,
    body_held: bool,
    body_limit: Option<u32>,
) -> Result<Plan, String> {
    let mut plan = Plan {
        edits: Vec::with_capacity(edits.len()),
        context: None,
    };
    let refused = |error: EditError| error.to_string();
    for edit in edits {
        let checked = match edit {
            Edit::SetPath(_) | Edit::SetQuery(_) if phase == Phase::Response => {
                return Err(edit::REQUEST_SENT.to_owned());
            }
            Edit::SetPath(path) => {
                edit::path(&path).map_err(refused)?;
                Checked::Path(path)
            }
            Edit::SetQuery(query) => {
                if let Some(query) = &query {
                    edit::query(query).map_err(refused)?;
                }
                Checked::Query(query)
            }
            Edit::SetHeader((name, value)) => Checked::SetHeader(
                names.name(&name).map_err(refused)?,
                edit::header_value(value).map_err(refused)?,
            ),
            Edit::AppendHeader((name, value)) => Checked::AppendHeader(
                names.name(&name).map_err(refused)?,
                edit::header_value(value).map_err(refused)?,
            ),
            Edit::RemoveHeader(name) => Checked::RemoveHeader(name),
            Edit::SetStatus(_) if phase == Phase::Request => {
                return Err(edit::NO_RESPONSE_YET.to_owned());
            }
            Edit::SetStatus(status) => Checked::Status(edit::status(status).map_err(refused)?),
            Edit::SetBody(body) => {
                edit::body(body.len(), body_held, body_limit.unwrap_or(0)).map_err(refused)?;
                Checked::Body(Bytes::from(body))
            }
            Edit::SetContext((key, value)) => {
                plan.context
                    .get_or_insert_with(|| context.clone())
                    .set(&key, &value)
                    .map_err(|error| error.to_string())?;
                continue;
            }
            Edit::RemoveContext(key) => {
                plan.context
                    .get_or_insert_with(|| context.clone())
                    .remove(&key);
                continue;
            }
        };
        plan.edits.push(checked);
    }
    Ok(plan)
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

fn check_metrics(declared: &Declared, updates: &[MetricUpdate]) -> Result<(), String> {
    for update in updates {
        metrics::update(
            &declared.metric_specs,
            update.metric,
            update.series,
            update.value,
        )
        .map_err(|error| error.to_string())?;
    }
    Ok(())
}

fn record_metrics(declared: &Declared, updates: &[MetricUpdate]) {
    for update in updates {
        declared.metrics[update.metric as usize].record(update.series, update.value);
    }
}

/// Applies a request phase's outcome to the request, or refuses all of it.
pub(crate) fn apply_to_request(
    declared: &Declared,
    names: &mut HeaderNames,
    head: &mut RequestHead,
    edits: Vec<Edit>,
    updates: &[MetricUpdate],
) -> Result<(), String> {
    let held = held_whole(&head.body, declared.request_body);
    let plan = plan(
        Phase::Request,
        edits,
        names,
        &head.context,
        held,
        declared.request_body,
    )?;
    check_metrics(declared, updates)?;
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
    record_metrics(declared, updates);
    Ok(())
}

/// Applies a response phase's outcome to the response (and the request's context), or refuses
/// all of it.
pub(crate) fn apply_to_response(
    declared: &Declared,
    names: &mut HeaderNames,
    request: &mut RequestHead,
    response: &mut ResponseHead,
    edits: Vec<Edit>,
    updates: &[MetricUpdate],
) -> Result<(), String> {
    let held = held_whole(&response.body, declared.response_body);
    let plan = plan(
        Phase::Response,
        edits,
        names,
        &request.context,
        held,
        declared.response_body,
    )?;
    check_metrics(declared, updates)?;
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
    record_metrics(declared, updates);
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

    #[test]
    fn a_refused_edit_leaves_the_whole_outcome_unapplied() {
        let mut names = HeaderNames::default();
        let context = Context::default();
        let edits = vec![
            Edit::SetHeader(("x-ok".into(), "1".into())),
            Edit::SetContext(("auth.subject".into(), "alice".into())),
            Edit::SetHeader(("x-bad".into(), "a\nb".into())),
        ];
        let refused = plan(Phase::Request, edits, &mut names, &context, false, None);
        assert!(refused.is_err());

        let edits = vec![Edit::SetBody(b"x".to_vec())];
        let not_held = plan(Phase::Request, edits, &mut names, &context, false, Some(10));
        assert!(not_held.is_err(), "a body never handed over cannot be replaced");

        let edits = vec![Edit::SetStatus(204)];
        assert!(plan(Phase::Request, edits, &mut names, &context, false, None).is_err());
        let edits = vec![Edit::SetPath("/x".into())];
        assert!(plan(Phase::Response, edits, &mut names, &context, false, None).is_err());
    }

    #[test]
    fn context_entries_past_the_bound_are_refused() {
        let mut names = HeaderNames::default();
        let context = Context::default();
        let edits = (0..=gateway_rules::context::MAX_ENTRIES)
            .map(|index| Edit::SetContext((format!("k{index}"), "v".into())))
            .collect();
        let refused = plan(Phase::Request, edits, &mut names, &context, false, None);
        assert!(refused.is_err_and(|reason| reason.contains("at most 32")));
    }
}
