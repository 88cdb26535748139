//! Command-line entry: parse, validate, set up logging, call the library, map errors to exit
//! codes. Declares and re-exports only; the glue lives in the submodules.

mod args;
mod entry;
mod failure;
mod k8s_tooling;
mod limits;
mod parse;
mod render;
mod report;
mod settings;
mod steps;
mod usage;
mod verify;

pub use entry::main;
/// For the fuzz targets in `fuzz/`: not a stable API.
#[doc(hidden)]
pub use render::{render_record, render_records};
