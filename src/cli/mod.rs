//! Command-line entry: parse, validate, set up logging, call the library, map errors to exit
//! codes. Declares and re-exports only; the glue lives in the submodules.

mod args;
mod entry;
mod failure;
mod k8s_tooling;
mod report;
mod settings;

pub use entry::main;
