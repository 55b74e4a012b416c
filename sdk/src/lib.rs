//! Write filters for the gateway in Rust.
//!
//! A filter is a type that implements [`Filter`], exported with [`export_filter!`] and built for
//! `wasm32-wasip2`. The gateway creates instances of it, hands each one its per-route
//! configuration once, and then calls it for requests and responses:
//!
//! ```no_run
//! use gateway_sdk::{Action, Filter, Headers, Phases, Request};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     header: String,
//! }
//!
//! struct Stamp {
//!     header: String,
//! }
//!
//! impl Filter for Stamp {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(Stamp { header: config.header })
//!     }
//!
//!     fn phases(&self) -> Phases {
//!         Phases::REQUEST
//!     }
//!
//!     fn on_request(&self, request: &mut Request) -> Action {
//!         match request.set_header(&self.header, "stamped") {
//!             Ok(()) => Action::Continue,
//!             Err(error) => Action::Respond(gateway_sdk::Reply::text(500, error.to_string())),
//!         }
//!     }
//! }
//!
//! gateway_sdk::export_filter!(Stamp);
//! ```
//!
//! Each call crosses into the filter once. What the filter reads comes two ways: what it
//! declares in [`Filter::reads`] is handed over with the call, and anything else is asked for
//! when it is read, one crossing out of the filter each. The handles hide which: a filter reads
//! `request.path()` either way, and declares what it reads on every request to make it cheap.
//! Edits are checked at once with the gateway's rules, so a refusal comes back as `Err` where
//! the filter made it, and go back with the call's result; reads see the call's own edits.
//!
//! The rest of what a filter can do, in brief (each item has its own example):
//!
//! ```
//! use gateway_sdk::metrics::Counter;
//! use gateway_sdk::{Action, Filter, Headers, Reads, Reply, Request};
//!
//! struct Audit {
//!     refused: Counter,
//! }
//!
//! impl Filter for Audit {
//!     type Config = gateway_sdk::serde_json::Value;
//!
//!     fn new(_config: Self::Config) -> Result<Self, String> {
//!         // Metrics are declared when the instance is created, every label value up front.
//!         Ok(Audit {
//!             refused: Counter::with_labels("refused_total", "Refusals", &[("why", &["size"])]),
//!         })
//!     }
//!
//!     fn reads(&self) -> Reads {
//!         // Handed over with every call: the body up to 4 KiB and one context entry.
//!         Reads::default().request_body(4096).context("auth.subject")
//!     }
//!
//!     fn on_request(&self, request: &mut Request) -> Action {
//!         if request.body().is_some_and(|body| body.is_too_large()) {
//!             self.refused.inc_with(&["size"]);
//!             return Action::Respond(Reply::error(413, "TOO_LARGE", "the body is too large", request));
//!         }
//!         // Context entries carry facts along the chain, to later filters and response phases.
//!         let subject = request.context("auth.subject").unwrap_or_default();
//!         let _ = request.set_context("audit.subject", &subject);
//!         Action::Continue
//!     }
//! }
//!
//! # use gateway_sdk::testing::{TestHost, TestRequest};
//! # let mut host = TestHost::<Audit>::new(gateway_sdk::serde_json::json!({})).expect("accepted");
//! # let mut request = TestRequest::post("/").with_body(vec![0; 5000]);
//! # assert_eq!(host.on_request(&mut request).reply().map(|r| r.status), Some(413));
//! # assert_eq!(host.counter("refused_total", &["size"]), 1.0);
//! ```
//!
//! The public surface: [`Filter`] and [`export_filter!`]; what a filter declares it reads,
//! [`Reads`]; the handles [`Request`] and [`Response`], whose headers are read and edited
//! through the [`Headers`] trait they share, and the [`Body`] they may hold; the answers
//! [`Action`] and [`Reply`]; the capabilities [`log`], [`clock`], [`kv`], [`lock`], [`outbound`] and
//! [`metrics`]; the one [`Error`] of edits, `kv` and `outbound`, whose [`ErrorKind`] tells a
//! refusal from a store or service that could not answer; and, in native builds, `testing`.
//! `Headers` is sealed: only the SDK's handles implement it, so a method can join it without
//! breaking filters. `ErrorKind` is `#[non_exhaustive]`, so a capability can add a kind.
#![deny(missing_docs)]

// The generated bindings name their runtime by the absolute path `gateway_sdk::...`, which has to
// resolve both here and in the filter crates that expand `export_filter!`.
extern crate self as gateway_sdk;

#[cfg(target_family = "wasm")]
#[path = "backend/wasm.rs"]
mod backend;
#[cfg(not(target_family = "wasm"))]
#[path = "backend/native.rs"]
mod backend;
pub mod clock;
mod config;
mod error;
mod http;
mod instance;
pub mod kv;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod outbound;
mod reads;
#[cfg(target_family = "wasm")]
#[doc(hidden)]
pub mod runtime;
#[cfg(not(target_family = "wasm"))]
pub mod testing;

pub use error::{Error, ErrorKind};
pub use http::{Body, Headers, Reply, Request, Response};
pub use reads::Reads;
pub use serde;
pub use serde_json;
pub use wit_bindgen;

/// Generated bindings of the gateway's WIT package. Not part of the public API: use the types
/// this crate exports instead.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "gateway_sdk::wit",
        runtime_path: "gateway_sdk::wit_bindgen::rt",
        bitflags_path: "gateway_sdk::wit_bindgen::rt::bitflags",
    });
}

/// The phases a filter takes part in.
///
/// The gateway never calls a phase a filter leaves out, which saves a call into Wasm per request.
///
/// ```
/// use gateway_sdk::Phases;
///
/// let both = Phases::REQUEST | Phases::RESPONSE;
/// assert!(both.contains(Phases::RESPONSE));
/// ```
pub type Phases = wit::exports::gateway::filter::handler::Phases;

/// What to do after a phase.
///
/// ```
/// use gateway_sdk::{Action, Reply};
///
/// let go_on = Action::Continue;
/// let answer = Action::Respond(Reply::text(403, "not here"));
/// # let _ = (go_on, answer);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Go on with the edits made through the handles.
    Continue,
    /// Answer with this reply. In the request phase, later filters and the upstream are skipped
    /// and the response phase of the filters that already ran sees this reply. In the response
    /// phase, the reply replaces the response on its way to the client.
    Respond(Reply),
}

impl Action {
    /// Whether this passes the request or response on.
    ///
    /// ```
    /// assert!(gateway_sdk::Action::Continue.is_continue());
    /// ```
    pub fn is_continue(&self) -> bool {
        matches!(self, Action::Continue)
    }

    /// The reply, if this answers.
    ///
    /// ```
    /// use gateway_sdk::{Action, Reply};
    ///
    /// let action = Action::Respond(Reply::new(204));
    /// assert_eq!(action.reply().map(|r| r.status), Some(204));
    /// ```
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Action::Continue => None,
            Action::Respond(reply) => Some(reply),
        }
    }
}

/// A gateway filter.
///
/// The gateway keeps a pool of instances of each filter per route. Each instance is created with
/// [`Filter::new`] from that route's configuration and then serves many requests one at a time,
/// so a filter must not keep per-request state in `self` between phases: what one phase tells a
/// later one goes in the request context ([`Request::set_context`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a gateway filter: it does not implement `gateway_sdk::Filter`",
    label = "not a gateway filter",
    note = "add `impl gateway_sdk::Filter for {Self}`; `export_filter!` takes the type that has it"
)]
pub trait Filter: Sized + 'static {
    /// The filter's configuration, deserialized from the route's `config` in the gateway's YAML.
    /// Add `#[serde(deny_unknown_fields)]` so a typo is rejected instead of ignored.
    type Config: serde::de::DeserializeOwned;

    /// Runs once per instance, before it serves any request, with the route's configuration.
    ///
    /// Create the filter's [`metrics`] here. Returning `Err` rejects the configuration: at
    /// start-up the gateway refuses to serve and prints the route, the filter and this message. A configuration that does not deserialize
    /// into [`Filter::Config`] never gets here; it is rejected with the path of the bad field.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The phases this instance takes part in. Runs once, right after [`Filter::new`].
    ///
    /// The default takes part in both. Leave out what you do not use: the gateway skips the call.
    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::RESPONSE
    }

    /// What the filter reads, handed in with each call instead of fetched one crossing at a
    /// time. Runs once, right after [`Filter::new`].
    ///
    /// Declare what the filter reads on every call; anything else is still readable, asked for
    /// when read. Declaring changes what a call costs, never what a read returns. The default
    /// declares nothing (everything is read lazily), and no body is read.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, Reads};
    /// # struct Auth;
    /// # impl Filter for Auth {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Auth) }
    /// fn reads(&self) -> Reads {
    ///     Reads::default().path().request_header("authorization")
    /// }
    /// # }
    /// ```
    fn reads(&self) -> Reads {
        Reads::default()
    }

    /// Runs for each request, in chain order, before the upstream is chosen.
    ///
    /// Edit the request through the handle and return [`Action::Continue`] to pass it on, or
    /// return [`Action::Respond`] to answer now. The default passes the request on unchanged.
    fn on_request(&self, request: &mut Request) -> Action {
        let _ = request;
        Action::Continue
    }

    /// Runs for each response, in reverse chain order, if this filter's request phase ran.
    ///
    /// `request` shows the request as it was sent upstream; it cannot be changed any more, but
    /// its context entries can.
    /// Edit the response through its handle and return [`Action::Continue`], or return
    /// [`Action::Respond`] to replace it. The default passes the response on unchanged.
    fn on_response(&self, request: &Request, response: &mut Response) -> Action {
        let _ = (request, response);
        Action::Continue
    }
}

/// Exports a type implementing [`Filter`] as the component's filter.
///
/// Use it once per crate, at the top level. It exports only when building for Wasm, so the
/// same crate also builds natively for unit tests; it checks on every target that the type
/// implements [`Filter`], so a mistake fails `cargo test` too and not only the Wasm build.
///
/// ```no_run
/// # use gateway_sdk::Filter;
/// use gateway_sdk::serde_json::Value;
///
/// struct Noop;
///
/// impl Filter for Noop {
///     type Config = Value;
///     fn new(_config: Value) -> Result<Self, String> {
///         Ok(Noop)
///     }
/// }
///
/// gateway_sdk::export_filter!(Noop);
/// ```
#[macro_export]
macro_rules! export_filter {
    ($filter:ty $(,)?) => {
        // Outside the Wasm-only export, so the native build refuses a type that is no filter.
        const _: fn() = || {
            fn must_implement_filter<F: $crate::Filter>() {}
            must_implement_filter::<$filter>();
        };

        #[cfg(target_family = "wasm")]
        const _: () = {
            struct GatewayFilterExport;

            impl $crate::wit::exports::gateway::filter::handler::Guest for GatewayFilterExport {
                fn init(
                    config: ::std::string::String,
                    environment: $crate::wit::exports::gateway::filter::handler::Environment,
                ) -> ::std::result::Result<
                    $crate::wit::exports::gateway::filter::handler::Registration,
                    ::std::string::String,
                > {
                    $crate::runtime::init::<$filter>(&config, environment)
                }

                fn on_request(
                    request: &$crate::wit::gateway::filter::http::Request,
                    input: ::std::option::Option<::std::vec::Vec<u8>>,
                ) -> $crate::wit::exports::gateway::filter::handler::Outcome {
                    $crate::runtime::on_request::<$filter>(request, input)
                }

                fn on_response(
                    request: &$crate::wit::gateway::filter::http::Request,
                    response: &$crate::wit::gateway::filter::http::Response,
                    status: u16,
                    input: ::std::option::Option<::std::vec::Vec<u8>>,
                ) -> $crate::wit::exports::gateway::filter::handler::Outcome {
                    $crate::runtime::on_response::<$filter>(request, response, status, input)
                }
            }

    $crate::wit::__export_filter_world!(GatewayFilterExport with_types_in $crate::wit);
        };
    };
    // Anything else (a value, a string, nothing) gets this instead of "no rules expected".
    ($($not_a_type:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "`export_filter!` takes the type that implements `gateway_sdk::Filter`, as in ",
            "`export_filter!(MyFilter)`; got `",
            ::core::stringify!($($not_a_type)*),
            "`"
        ));
    };
}
