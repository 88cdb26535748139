//! `file:DIR`, the embedded store: one flat state directory, opened without following symlinks.

mod layout;
mod legacy;
mod safe_fs;
mod store;

pub use store::FileStore;
