//! The workflow log: append-only, hash-chained records of what each action
//! was, why it was decided, and what came of it. Kept apart from the system
//! log (`tracing`), which says what the process did.

pub mod lifecycle;
pub mod record;
pub mod redact;
pub mod store;
pub mod view;
