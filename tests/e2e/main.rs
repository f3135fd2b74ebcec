//! countersign's integration tests: one binary, real listeners on port 0,
//! real HTTP clients, real SQLite files, and the real `countersign` binary
//! where the command line or the process's own output is what is tested.

mod cli;
mod evidence;
mod hardening;
mod holds;
mod proxy;
mod support;
mod tls;
