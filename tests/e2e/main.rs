//! countersign's integration tests: one binary, real listeners on port 0,
//! real HTTP clients, real SQLite files, and the real `countersign` binary
//! where the command line or the process's own output is what is tested.

mod cli;
mod evidence;
mod fleet;
mod hardening;
mod holds;
mod identity;
mod mcp;
mod opa;
mod pg;
mod proxy;
mod store_backends;
mod store_postgres;
mod support;
mod tls;
