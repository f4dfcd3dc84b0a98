//! What an operator sees and does, shared by the console (the api's admin port) and the
//! worker's `dead-letters` commands: dead letters paged, checked, replayed and discarded, every
//! action recorded in the audit.

pub mod dead_letters;
pub mod replay;
pub mod stats;
pub mod workers;

pub use replay::{ReplayError, ReplayReport, replay, replay_with_progress};
