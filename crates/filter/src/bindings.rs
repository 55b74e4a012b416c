//! Host side of the WIT contract: the generated bindings and the capabilities a filter imports.
//!
//! Request and response handles are borrows with a fixed representation: the instance's store
//! holds the one request (and response) of the current call, so a handle needs no table entry.

use std::time::{SystemTime, UNIX_EPOCH};

use gateway_rules::edit::{self, EditError};
use http::HeaderMap;
use http::header::HeaderName;
use wasmtime::component::Resource;

use crate::heads::{FilterReply, RequestHead, ResponseHead};
use crate::instance::{CallHeads, InstanceState};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "filter",
    imports: { default: trappable },
});

pub use exports::gateway::filter::handler::Phases;
pub(crate) use exports::gateway::filter::handler::{Registration, RequestAction, ResponseAction};
use gateway::filter::{clock, http as wit_http, kv, log};

/// The representation of the only request and response handle a call ever sees.
pub(crate) const CURRENT: u32 = 0;

/// An edit refused by the rules the SDK's test host applies too, as the filter reads it.
fn refused(error: EditError) -> String {
    error.to_string()
}

fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}

fn all_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok().map(str::to_owned))
        .collect()
}

fn names(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect()
}

/// Names kept per instance. A filter that sets more distinct names parses the others each time.
const KEPT_HEADER_NAMES: usize = 32;

/// The header names an instance's filter has set, kept for the next requests. A filter sets the
/// same few names on every request, and making a name the `http` crate does not know
/// (`x-served-by`) costs an allocation each time; a kept one is a reference count.
#[derive(Default)]
pub(crate) struct HeaderNames(Vec<HeaderName>);

impl HeaderNames {
    fn name(&mut self, name: &str) -> Result<HeaderName, String> {
        // Kept names are valid and lower-case, so a name equal to one but for case is that name.
        if let Some(kept) = self
            .0
            .iter()
            .find(|kept| kept.as_str().eq_ignore_ascii_case(name))
        {
            return Ok(kept.clone());
        }
        let parsed = edit::header_name(name).map_err(refused)?;
        if self.0.len() < KEPT_HEADER_NAMES {
            self.0.push(parsed.clone());
        }
        Ok(parsed)
    }

    fn set(&mut self, headers: &mut HeaderMap, name: &str, value: String) -> Result<(), String> {
        headers.insert(
            self.name(name)?,
            edit::header_value(value).map_err(refused)?,
        );
        Ok(())
    }

    fn append(&mut self, headers: &mut HeaderMap, name: &str, value: String) -> Result<(), String> {
        headers.append(
            self.name(name)?,
            edit::header_value(value).map_err(refused)?,
        );
        Ok(())
    }
}

/// Why a reply from a filter cannot be sent.
pub(crate) fn convert_reply(reply: wit_http::Reply) -> Result<FilterReply, String> {
    let status = edit::status(reply.status).map_err(|error| format!("reply status {error}"))?;
    let mut headers = HeaderMap::with_capacity(reply.headers.len());
    for (name, value) in reply.headers {
        headers.append(
            edit::header_name(&name).map_err(refused)?,
            edit::header_value(value).map_err(refused)?,
        );
    }
    Ok(FilterReply {
        status,
        headers,
        body: reply.body.into(),
    })
}

const NO_REQUEST: &str = "no request is in flight on this instance";
const NO_RESPONSE: &str = "no response is in flight on this instance";
const REQUEST_SENT: &str =
    "the request was already sent upstream; it cannot be changed in the response phase";

impl wit_http::Host for InstanceState {}

impl wit_http::HostRequest for InstanceState {
    fn method(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<String> {
        Ok(self.heads.request()?.method.as_str().to_owned())
    }

    fn path(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<String> {
        Ok(self.heads.request()?.path.clone())
    }

    fn set_path(
        &mut self,
        _: Resource<wit_http::Request>,
        path: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.heads.request_mut()?.and_then(|request| {
            edit::path(&path).map_err(refused)?;
            request.path = path;
            Ok(())
        }))
    }

    fn query(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<Option<String>> {
        Ok(self.heads.request()?.query.clone())
    }

    fn set_query(
        &mut self,
        _: Resource<wit_http::Request>,
        query: Option<String>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.heads.request_mut()?.and_then(|request| {
            if let Some(query) = &query {
                edit::query(query).map_err(refused)?;
            }
            request.query = query;
            Ok(())
        }))
    }

    fn authority(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<Option<String>> {
        Ok(self.heads.request()?.authority.clone())
    }

    fn client_ip(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<String> {
        Ok(gateway_wire::fields::ip_string(
            self.heads.request()?.client_ip,
        ))
    }

    fn route_param(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.heads.request()?.param(&name).map(str::to_owned))
    }

    fn header(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(first_value(&self.heads.request()?.headers, &name))
    }

    fn header_values(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(all_values(&self.heads.request()?.headers, &name))
    }

    fn header_names(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<Vec<String>> {
        Ok(names(&self.heads.request()?.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self
            .heads
            .request_mut()?
            .and_then(|request| self.names.set(&mut request.headers, &name, value)))
    }

    fn append_header(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self
            .heads
            .request_mut()?
            .and_then(|request| self.names.append(&mut request.headers, &name, value)))
    }

    fn remove_header(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
    ) -> wasmtime::Result<()> {
        // Removing in the response phase is refused like any other edit, but silently: the
        // WIT signature has no error to return, and the request is already gone.
        if let Ok(request) = self.heads.request_mut()? {
            request.headers.remove(name.as_str());
        }
        Ok(())
    }

    fn drop(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl wit_http::HostResponse for InstanceState {
    fn status(&mut self, _: Resource<wit_http::Response>) -> wasmtime::Result<u16> {
        Ok(self.heads.response()?.status.as_u16())
    }

    fn set_status(
        &mut self,
        _: Resource<wit_http::Response>,
        status: u16,
    ) -> wasmtime::Result<Result<(), String>> {
        let response = self.heads.response_mut()?;
        Ok(edit::status(status).map_err(refused).map(|status| {
            response.status = status;
        }))
    }

    fn header(
        &mut self,
        _: Resource<wit_http::Response>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(first_value(&self.heads.response()?.headers, &name))
    }

    fn header_values(
        &mut self,
        _: Resource<wit_http::Response>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(all_values(&self.heads.response()?.headers, &name))
    }

    fn header_names(&mut self, _: Resource<wit_http::Response>) -> wasmtime::Result<Vec<String>> {
        Ok(names(&self.heads.response()?.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<wit_http::Response>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let response = self.heads.response_mut()?;
        Ok(self.names.set(&mut response.headers, &name, value))
    }

    fn append_header(
        &mut self,
        _: Resource<wit_http::Response>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let response = self.heads.response_mut()?;
        Ok(self.names.append(&mut response.headers, &name, value))
    }

    fn remove_header(
        &mut self,
        _: Resource<wit_http::Response>,
        name: String,
    ) -> wasmtime::Result<()> {
        // A name that is not valid is in no map: nothing to remove.
        self.heads.response_mut()?.headers.remove(name.as_str());
        Ok(())
    }

    fn drop(&mut self, _: Resource<wit_http::Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl log::Host for InstanceState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let filter = &*self.filter;
        let request_id = self.heads.request.as_ref().map_or("-", |r| r.request_id());
        match level {
            log::Level::Trace => tracing::trace!(target: "filter", filter, request_id, "{message}"),
            log::Level::Debug => tracing::debug!(target: "filter", filter, request_id, "{message}"),
            log::Level::Info => tracing::info!(target: "filter", filter, request_id, "{message}"),
            log::Level::Warn => tracing::warn!(target: "filter", filter, request_id, "{message}"),
            log::Level::Error => tracing::error!(target: "filter", filter, request_id, "{message}"),
        }
        if level == log::Level::Error {
            self.last_error = Some(message);
        }
        Ok(())
    }
}

impl clock::Host for InstanceState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    fn monotonic_ns(&mut self) -> wasmtime::Result<u64> {
        let elapsed = crate::instance::process_start().elapsed();
        Ok(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl kv::Host for InstanceState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.kv.get(&self.filter, &key))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self
            .kv
            .set(&self.filter, &key, value, ttl_ms)
            .map_err(|error| error.to_string()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        Ok(self.kv.delete(&self.filter, &key))
    }

    fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, String>> {
        Ok(self
            .kv
            .increment(&self.filter, &key, delta, ttl_ms)
            .map_err(|error| error.to_string()))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, String>> {
        Ok(self
            .kv
            .compare_and_swap(&self.filter, &key, expected.as_deref(), new, ttl_ms)
            .map_err(|error| error.to_string()))
    }
}

impl CallHeads {
    fn request(&self) -> wasmtime::Result<&RequestHead> {
        self.request
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!(NO_REQUEST))
    }

    /// The request for an edit: a trap if there is none, a refusal if it was already sent.
    fn request_mut(&mut self) -> wasmtime::Result<Result<&mut RequestHead, String>> {
        let sent = self.response.is_some();
        let request = self
            .request
            .as_mut()
            .ok_or_else(|| wasmtime::format_err!(NO_REQUEST))?;
        Ok(if sent {
            Err(REQUEST_SENT.to_owned())
        } else {
            Ok(request)
        })
    }

    fn response(&self) -> wasmtime::Result<&ResponseHead> {
        self.response
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!(NO_RESPONSE))
    }

    fn response_mut(&mut self) -> wasmtime::Result<&mut ResponseHead> {
        self.response
            .as_mut()
            .ok_or_else(|| wasmtime::format_err!(NO_RESPONSE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_header_names_are_reused_whatever_their_case() {
        let mut names = HeaderNames::default();
        let mut headers = HeaderMap::new();
        names
            .set(&mut headers, "X-Served-By", "a".to_owned())
            .expect("a valid name");
        names
            .append(&mut headers, "x-served-by", "b".to_owned())
            .expect("a valid name");
        names
            .set(&mut headers, "content-type", "text/plain".to_owned())
            .expect("a valid name");
        assert_eq!(names.0.len(), 2, "one kept name per distinct name");
        let values: Vec<_> = headers.get_all("x-served-by").iter().collect();
        assert_eq!(values, ["a", "b"]);

        assert!(names.set(&mut headers, "bad name", "x".to_owned()).is_err());
        assert!(
            names
                .set(&mut headers, "x-ok", "bad\nvalue".to_owned())
                .is_err()
        );
        assert_eq!(
            names.0.len(),
            3,
            "a refused value still leaves a valid name kept"
        );

        // Past the bound, names still work; they are only not kept.
        for index in 0..2 * KEPT_HEADER_NAMES {
            let name = format!("x-name-{index}");
            names
                .set(&mut headers, &name, index.to_string())
                .expect("a valid name");
            assert_eq!(headers[name.as_str()], index.to_string().as_str());
        }
        assert_eq!(names.0.len(), KEPT_HEADER_NAMES);
    }
}
