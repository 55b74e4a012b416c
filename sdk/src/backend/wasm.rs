//! Host calls inside a real gateway: straight through the generated bindings.

use crate::log::Level;
use crate::wit::gateway::filter::{clock, http as host, kv, log};

/// A borrowed request handle for the duration of one call.
pub struct RequestRef<'a>(&'a host::Request);

impl<'a> RequestRef<'a> {
    pub fn new(handle: &'a host::Request) -> Self {
        RequestRef(handle)
    }

    pub fn method(&self) -> String {
        self.0.method()
    }
    pub fn path(&self) -> String {
        self.0.path()
    }
    pub fn set_path(&mut self, path: &str) -> Result<(), String> {
        self.0.set_path(path)
    }
    pub fn query(&self) -> Option<String> {
        self.0.query()
    }
    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), String> {
        self.0.set_query(query)
    }
    pub fn authority(&self) -> Option<String> {
        self.0.authority()
    }
    pub fn client_ip(&self) -> String {
        self.0.client_ip()
    }
    pub fn route_param(&self, name: &str) -> Option<String> {
        self.0.route_param(name)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0.header_values(name)
    }
    pub fn header_names(&self) -> Vec<String> {
        self.0.header_names()
    }
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.0.set_header(name, value)
    }
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.0.append_header(name, value)
    }
    pub fn remove_header(&mut self, name: &str) {
        self.0.remove_header(name)
    }
}

/// A borrowed response handle for the duration of one call.
pub struct ResponseRef<'a>(&'a host::Response);

impl<'a> ResponseRef<'a> {
    pub fn new(handle: &'a host::Response) -> Self {
        ResponseRef(handle)
    }

    pub fn status(&self) -> u16 {
        self.0.status()
    }
    pub fn set_status(&mut self, status: u16) -> Result<(), String> {
        self.0.set_status(status)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0.header_values(name)
    }
    pub fn header_names(&self) -> Vec<String> {
        self.0.header_names()
    }
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.0.set_header(name, value)
    }
    pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.0.append_header(name, value)
    }
    pub fn remove_header(&mut self, name: &str) {
        self.0.remove_header(name)
    }
}

pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => log::Level::Trace,
        Level::Debug => log::Level::Debug,
        Level::Info => log::Level::Info,
        Level::Warn => log::Level::Warn,
        Level::Error => log::Level::Error,
    };
    log::log(level, message)
}

pub fn now_ms() -> u64 {
    clock::now_ms()
}

pub fn monotonic_ns() -> u64 {
    clock::monotonic_ns()
}

pub fn kv_get(key: &str) -> Option<Vec<u8>> {
    kv::get(key)
}

pub fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), String> {
    kv::set(key, value, ttl_ms)
}

pub fn kv_delete(key: &str) -> bool {
    kv::delete(key)
}

pub fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, String> {
    kv::increment(key, delta, ttl_ms)
}

pub fn kv_compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: &[u8],
    ttl_ms: Option<u64>,
) -> Result<bool, String> {
    kv::compare_and_swap(key, expected, new, ttl_ms)
}
