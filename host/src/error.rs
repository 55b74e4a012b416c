//! The host's one error type: why the gateway cannot start, reload or run a plugin tool.

use std::path::PathBuf;

/// Everything the control plane and the plugin tools report.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The configuration (or a cases file) cannot be read or is not valid.
    #[error(transparent)]
    Config(#[from] gateway_config::Error),

    /// The configuration is valid but a state cannot be built from it (a filter fails to load
    /// or refuses its config); every problem found is listed.
    #[error("{} cannot be served:\n  - {}", path.display(), problems.join("\n  - "))]
    Unservable {
        path: PathBuf,
        problems: Vec<String>,
    },

    /// The Wasm engine could not be set up, or a filter could not be loaded.
    #[error(transparent)]
    Filter(#[from] gateway_filter::Error),

    /// The key-value stores cannot be set up.
    #[error(transparent)]
    Kv(#[from] gateway_kv::Error),

    /// A runtime for async work cannot start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),

    /// A reload could not run to its end.
    #[error("the reload task failed: {0}")]
    ReloadTask(String),

    /// A plugin crate could not be generated.
    #[error("cannot create plugin `{name}`: {reason}")]
    Scaffold { name: String, reason: String },
}

impl Error {
    /// The separate problems this error reports, for lists such as the reload status.
    pub(crate) fn problems(&self) -> Vec<String> {
        match self {
            Error::Config(error) => error.problems(),
            Error::Unservable { problems, .. } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// `Result` with this crate's [`Error`].
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
