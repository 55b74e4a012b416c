//! Host calls in native builds: answered by the in-process test host of [`crate::testing`], with
//! the rules the gateway applies (`gateway_rules::edit`, `gateway_rules::kv`), so a filter behaves
//! in its unit tests as it does in the gateway.

use std::cell::RefCell;

use gateway_rules::edit;

use crate::log::Level;
use crate::testing::{self, RequestState, ResponseState};

const REQUEST_SENT: &str =
    "the request was already sent upstream; it cannot be changed in the response phase";

/// A header as the test host stores it, checked with the gateway's rules: the lower-case name
/// and the value as the filter wrote it.
fn checked(name: &str, value: &str) -> Result<(String, String), String> {
    let name = edit::header_name(name).map_err(|error| error.to_string())?;
    edit::header_value(value.to_owned()).map_err(|error| error.to_string())?;
    Ok((name.as_str().to_owned(), value.to_owned()))
}

/// Every value of a header, from storage shared by requests and responses (lower-case names,
/// in arrival order); the test host's own getters read it the same way.
pub(crate) fn header_values(headers: &[(String, String)], name: &str) -> Vec<String> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value.clone())
        .collect()
}

fn names(headers: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in headers {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn set(headers: &mut Vec<(String, String)>, name: &str, value: &str) -> Result<(), String> {
    let (name, value) = checked(name, value)?;
    headers.retain(|(key, _)| *key != name);
    headers.push((name, value));
    Ok(())
}

fn append(headers: &mut Vec<(String, String)>, name: &str, value: &str) -> Result<(), String> {
    headers.push(checked(name, value)?);
    Ok(())
}

fn remove(headers: &mut Vec<(String, String)>, name: &str) {
    let name = name.to_ascii_lowercase();
    headers.retain(|(key, _)| *key != name);
}

/// A request in a test, for the duration of one phase.
pub struct RequestRef<'a> {
    state: &'a RefCell<RequestState>,
    /// Set in the response phase: the request has gone upstream and edits are refused.
    sent: bool,
}

impl<'a> RequestRef<'a> {
    pub fn new(state: &'a RefCell<RequestState>, sent: bool) -> Self {
        RequestRef { state, sent }
    }

    fn edit<T>(
        &mut self,
        edit: impl FnOnce(&mut RequestState) -> Result<T, String>,
    ) -> Result<T, String> {
        if self.sent {
            return Err(REQUEST_SENT.to_owned());
        }
        edit(&mut self.state.borrow_mut())
    }

    pub fn method(&self) -> String {
        self.state.borrow().method.clone()
    }
    pub fn path(&self) -> String {
        self.state.borrow().path.clone()
    }
    pub fn set_path(&mut self, path: &str) -> Result<(), String> {
        self.edit(|state| {
            edit::path(path).map_err(|error| error.to_string())?;
            state.path = path.to_owned();
            Ok(())
        })
    }
    pub fn query(&self) -> Option<String> {
        self.state.borrow().query.clone()
    }
    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), String> {
        self.edit(|state| {
            if let Some(query) = query {
                edit::query(query).map_err(|error| error.to_string())?;
            }
            state.query = query.map(str::to_owned);
            Ok(())
        })
    }
    pub fn authority(&self) -> Option<String> {
        self.state.borrow().authority.clone()
    }
    pub fn client_ip(&self) -> String {
        self.state.borrow().client_ip.clone()
    }
    pub fn route_param(&self, name: &str) -> Option<String> {
        let state = self.state.borrow();
        state
            .params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
    pub fn header(&self, name: &str) -> Option<String> {
        header_values(&self.state.borrow().headers, name)
            .into_iter()
            .next()
    }
    pub fn header_values(&self, name: &str) -> Vec<String> {
        header_values(&self.state.borrow().headers, name)
    }
    pub fn header_names(&self) -> Vec<String> {
        names(&self.state.borrow().headers)
    }
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.edit(|state| set(&mut state.headers, name, value))
    }
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.edit(|state| append(&mut state.headers, name, value))
    }
    pub fn remove_header(&mut self, name: &str) {
        // Refused silently in the response phase, as the gateway does.
        let _ = self.edit(|state| {
            remove(&mut state.headers, name);
            Ok(())
        });
    }
}

/// A response in a test, for the duration of one phase.
pub struct ResponseRef<'a> {
    state: &'a RefCell<ResponseState>,
}

impl<'a> ResponseRef<'a> {
    pub fn new(state: &'a RefCell<ResponseState>) -> Self {
        ResponseRef { state }
    }

    pub fn status(&self) -> u16 {
        self.state.borrow().status
    }
    pub fn set_status(&mut self, status: u16) -> Result<(), String> {
        edit::status(status).map_err(|error| error.to_string())?;
        self.state.borrow_mut().status = status;
        Ok(())
    }
    pub fn header(&self, name: &str) -> Option<String> {
        header_values(&self.state.borrow().headers, name)
            .into_iter()
            .next()
    }
    pub fn header_values(&self, name: &str) -> Vec<String> {
        header_values(&self.state.borrow().headers, name)
    }
    pub fn header_names(&self) -> Vec<String> {
        names(&self.state.borrow().headers)
    }
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        set(&mut self.state.borrow_mut().headers, name, value)
    }
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        append(&mut self.state.borrow_mut().headers, name, value)
    }
    pub fn remove_header(&mut self, name: &str) {
        remove(&mut self.state.borrow_mut().headers, name)
    }
}

pub fn log(level: Level, message: &str) {
    testing::with_host(|host| host.log(level, message))
}

pub fn now_ms() -> u64 {
    testing::with_host(|host| host.now_ms)
}

pub fn monotonic_ns() -> u64 {
    testing::with_host(|host| host.monotonic_ns)
}

pub fn kv_get(key: &str) -> Option<Vec<u8>> {
    testing::with_host(|host| host.kv.get(key, host.kv_now()))
}

pub fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), String> {
    testing::with_host(|host| {
        let now = host.kv_now();
        host.kv
            .set(key, value.to_vec(), ttl_ms, now)
            .map_err(|error| error.to_string())
    })
}

pub fn kv_delete(key: &str) -> bool {
    testing::with_host(|host| {
        let now = host.kv_now();
        host.kv.delete(key, now)
    })
}

pub fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, String> {
    testing::with_host(|host| {
        let now = host.kv_now();
        host.kv
            .increment(key, delta, ttl_ms, now)
            .map_err(|error| error.to_string())
    })
}

pub fn kv_compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: &[u8],
    ttl_ms: Option<u64>,
) -> Result<bool, String> {
    testing::with_host(|host| {
        let now = host.kv_now();
        host.kv
            .compare_and_swap(key, expected, new.to_vec(), ttl_ms, now)
            .map_err(|error| error.to_string())
    })
}
