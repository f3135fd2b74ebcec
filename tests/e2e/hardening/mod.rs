//! The attacks countersign withstands, one module per class. Each test
//! drives the real proxy over real sockets and checks what the upstream,
//! the agent and the record saw. Read these as the list of what an
//! attacker has tried and what happened.
//!
//! - [`target`]: the request the policy judged is the request the upstream
//!   ran (request target, method, body, agent headers).
//! - [`reviews`]: reviews bound to one action and one reviewer identity.
//! - [`limits`]: slow policies, slow or huge bodies and connection floods
//!   cannot stall the proxy or exhaust its memory.
//! - [`secrets`]: credentials and redacted values never reach the record,
//!   the log or the agent.
//! - [`restart`]: a restart trusts only records whose chain verifies.

mod limits;
mod restart;
mod reviews;
mod secrets;
mod target;
