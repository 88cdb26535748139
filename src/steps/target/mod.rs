//! The PostgreSQL target database of a steps run: the history table, fencing, SQL steps
//! (transactional and statement by statement), script steps' history rows, durability,
//! INVALID indexes, adoption of other tools' history, repair. Declarations and re-exports only.

mod adopt;
mod apply;
mod conn;
mod error;
mod fence;
mod history;
mod indexes;
mod repair;
mod rows;
mod tables;
mod text;

pub use adopt::Tool;
pub use apply::StepEvent;
pub use conn::{Target, TargetOptions};
pub use error::TargetError;
