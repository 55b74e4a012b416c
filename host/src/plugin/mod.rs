//! Tools for plugin authors, behind `gateway plugin ...`:
//! - [`cases`]: run a compiled filter against a YAML list of cases in the real runtime.

pub mod cases;
