//! countersign: a policy sidecar for AI agents. An HTTP reverse proxy that
//! decides every call with Rego, records why, and holds risky calls for
//! named reviewers.
//!
//! # Layout
//!
//! Follow one call through the modules:
//!
//! 1. [`http::serve`] accepts the connection (plain or TLS) on the proxy
//!    listener, within its connection and request-head limits
//!    ([`http::ListenerLimits`]).
//! 2. [`proxy::pipeline::handle`] walks the call: it puts the request target
//!    in its one canonical form ([`proxy::target`]: what routes, what the
//!    policy judges, what is recorded and forwarded), picks the
//!    [`proxy::Route`], checks the method, takes in the body
//!    ([`proxy::receive`]) within `capture.max_body_bytes` and the shared
//!    [`proxy::budget`], and captures it as a [`capture::CapturedRequest`]
//!    (agent, evidence, headers; JSON and form bodies read by
//!    [`proxy::body`], which refuses names a lenient reader takes for one,
//!    compared by [`fold`]). [`identity`] checks what the caller can prove
//!    (a bearer token, the client certificate the TLS handshake brought,
//!    the sidecar's pod) next to what the agent headers declare; a
//!    credential that does not verify is refused with 401.
//!    On a `protocol: mcp` route [`proxy::mcp`] reads the JSON-RPC message
//!    (`input.mcp`), refuses one whose headers disagree with it, and answers
//!    refusals the MCP way (tool errors, JSON-RPC errors).
//! 3. [`policy::input::build`] turns it into the policy input; [`policy::Policy`]
//!    evaluates it (on regorus's interpreter; its bytecode VM only when
//!    asked, to compare) on a thread of
//!    [`policy::pool`], never on the async workers, and
//!    [`policy::decision::check`] holds the result to the contract.
//! 4. The `decided` record is committed through [`audit::store::Store`]
//!    (SQLite or PostgreSQL behind one [`audit::store::backend::Backend`])
//!    before anything is forwarded (write-ahead, group commit). Every record
//!    of the call is first scrubbed of the call's secrets
//!    ([`audit::redact`]: the values capture redacted, the route's credential).
//! 5. [`proxy::forward::Upstream`] forwards an allowed call; the answer is
//!    captured and recorded as `completed` (or `failed`). A held call goes to
//!    [`proxy::hold::wait`] instead, which waits on the store: [`approval`]
//!    notifies reviewers ([`approval::notify`]), takes their signed reviews
//!    in any process of a fleet ([`approval::review`], with
//!    [`approval::keys`] checking signatures and [`approval::identity`]
//!    separation of duties), and forwards it once approved
//!    ([`approval::execute`]: a conditional claim, so once fleet-wide). An
//!    action's state is always folded from its verified records
//!    ([`audit::lifecycle`]); [`approval::sweep`] expires holds, forwards
//!    approved calls nobody claimed and marks interrupted forwards.
//! 6. [`proxy::pipeline::handle`] records what the agent got (`answered`).
//!    Meanwhile [`audit::checkpointer`] signs checkpoints of the record as
//!    an RFC 6962 tree ([`audit::merkle`], [`audit::checkpoint`]) and
//!    publishes them; the first `decided` record of a policy revision
//!    carries that revision's text along ([`audit::revisions`]).
//! 7. [`admin`] serves health, metrics and the actions API (on a thread of
//!    its own), rebuilt from the records by [`audit::view`]; [`cli`] reads
//!    the same records offline, and [`cli::evidence`] verifies them, proves
//!    records, exports evidence bundles ([`audit::bundle`]) and replays
//!    decisions ([`audit::replay`]).
//!
//! [`config`] turns YAML into validated types; [`app`] wires it all and owns
//! shutdown; [`reload`] applies policy, reviewer and certificate changes;
//! [`metrics`] keeps the Prometheus counters.

pub mod admin;
pub mod app;
pub mod approval;
pub mod audit;
pub mod capture;
pub mod cli;
pub mod config;
pub mod fold;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod review_client;
