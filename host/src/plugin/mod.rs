//! Tools for plugin authors, behind `gateway plugin ...`:
//! - [`cases`]: run a compiled filter against a YAML list of cases in the real runtime;
//! - [`scaffold`]: write a new filter crate that builds and passes its tests as generated.

pub mod cases;
pub mod scaffold;
