//! A component that exports the filter contract at another version than the gateway provides,
//! so tests can check the gateway refuses it and names both versions.
//!
//! It binds its own inline copy of the contract instead of the SDK's, since the SDK can only
//! build against the version in `wit/`. Only the package version and the `handler` export matter
//! to the check; the rest is as small as a valid world allows.

// The bindings are generated code full of `unsafe` glue, as in the SDK.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod wit {
    wit_bindgen::generate!({
        inline: r#"
            package gateway:filter@0.1.0;

            interface handler {
                init: func(config: string) -> result<_, string>;
            }

            world filter {
                export handler;
            }
        "#,
    });
}

struct WrongVersion;

impl wit::exports::gateway::filter::handler::Guest for WrongVersion {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

// Natively there is nothing to export to; the impl above still type-checks the guest.
#[cfg(target_family = "wasm")]
#[allow(unsafe_code)]
const _: () = {
    wit::export!(WrongVersion with_types_in wit);
};
