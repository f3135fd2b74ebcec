//! The YAML config: parsed into raw structs (unknown keys are errors), then
//! validated once into the types the rest of the program uses. Every error
//! names the file and the field, and says what would be accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A config that could not be loaded; the message is meant for a human.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The config file (or the file it points at) that is wrong.
    pub file: String,
    /// One sentence: the field and what is wrong with it.
    pub message: String,
}

// ---------------------------------------------------------------------------
// Raw shape, exactly as docs/reference.md#configuration lists the keys.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    admin: RawAdmin,
    tls: Option<RawTls>,
    routes: Vec<RawRoute>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    hold: RawHold,
    #[serde(default)]
    reviewers: BTreeMap<String, RawReviewer>,
    #[serde(default)]
    notify: Vec<RawNotify>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    decision_log: Option<RawDecisionLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecisionLog {
    path: String,
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    listen: String,
    token_env: Option<String>,
    token_file: Option<String>,
    public_url: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            token_env: None,
            token_file: None,
            public_url: None,
        }
    }
}

fn default_admin_listen() -> String {
    "0.0.0.0:9901".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(rename = "match")]
    match_: RawMatch,
    upstream: String,
    upstream_ca: Option<String>,
    upstream_auth: Option<RawUpstreamAuth>,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    methods: Option<Vec<String>>,
    identity: Option<RawRouteIdentity>,
    protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteIdentity {
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    path_prefix: Option<String>,
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamAuth {
    header: String,
    value_env: Option<String>,
    value_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "default_policy_dir")]
    dir: String,
    #[serde(default = "default_entrypoint")]
    entrypoint: String,
    #[serde(default = "default_input")]
    input: String,
    #[serde(default = "default_policy_timeout")]
    timeout: String,
    #[serde(default = "default_engine")]
    engine: String,
    /// Absent: one per available core.
    workers: Option<usize>,
    #[serde(default = "default_policy_queue")]
    queue: usize,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            dir: default_policy_dir(),
            entrypoint: default_entrypoint(),
            input: default_input(),
            timeout: default_policy_timeout(),
            engine: default_engine(),
            workers: None,
            queue: default_policy_queue(),
        }
    }
}

fn default_policy_queue() -> usize {
    256
}

fn default_policy_dir() -> String {
    "policies".into()
}
fn default_entrypoint() -> String {
    "data.countersign.decision".into()
}
fn default_input() -> String {
    "native".into()
}
fn default_engine() -> String {
    "auto".into()
}
fn default_policy_timeout() -> String {
    "100ms".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    #[serde(default = "default_headers_allow")]
    headers_allow: Vec<String>,
    #[serde(default = "default_response_headers")]
    response_headers: Vec<String>,
    #[serde(default = "default_max_body")]
    max_body_bytes: u64,
    #[serde(default = "default_max_response")]
    max_response_bytes: u64,
    #[serde(default = "default_max_recorded_body")]
    max_recorded_body_bytes: u64,
    #[serde(default = "default_redact_query")]
    redact_query: Vec<String>,
    #[serde(default = "default_body_timeout")]
    body_timeout: String,
    #[serde(default)]
    agent_headers: RawAgentHeaders,
}

impl Default for RawCapture {
    fn default() -> Self {
        RawCapture {
            headers_allow: default_headers_allow(),
            response_headers: default_response_headers(),
            max_body_bytes: default_max_body(),
            max_response_bytes: default_max_response(),
            max_recorded_body_bytes: default_max_recorded_body(),
            redact_query: default_redact_query(),
            body_timeout: default_body_timeout(),
            agent_headers: RawAgentHeaders::default(),
        }
    }
}

fn default_headers_allow() -> Vec<String> {
    [
        "content-type",
        "content-length",
        "user-agent",
        "idempotency-key",
        "accept",
    ]
    .map(String::from)
    .to_vec()
}
fn default_response_headers() -> Vec<String> {
    ["content-type", "content-length", "location", "etag"]
        .map(String::from)
        .to_vec()
}
fn default_max_body() -> u64 {
    1024 * 1024
}
fn default_max_response() -> u64 {
    64 * 1024
}
fn default_max_recorded_body() -> u64 {
    64 * 1024
}
/// Query parameter names whose values are secrets in common APIs (API keys,
/// OAuth tokens, passwords, signed-URL signatures and credentials).
fn default_redact_query() -> Vec<String> {
    [
        "access_token",
        "api-key",
        "api_key",
        "apikey",
        "auth",
        "client_secret",
        "id_token",
        "key",
        "passwd",
        "password",
        "refresh_token",
        "secret",
        "sig",
        "signature",
        "token",
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-credential",
        "x-goog-signature",
    ]
    .map(String::from)
    .to_vec()
}
fn default_body_timeout() -> String {
    "30s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentHeaders {
    #[serde(default = "default_h_id")]
    id: String,
    #[serde(default = "default_h_obo")]
    on_behalf_of: String,
    #[serde(default = "default_h_intent")]
    intent: String,
    #[serde(default = "default_h_evidence")]
    evidence_prefix: String,
}

impl Default for RawAgentHeaders {
    fn default() -> Self {
        RawAgentHeaders {
            id: default_h_id(),
            on_behalf_of: default_h_obo(),
            intent: default_h_intent(),
            evidence_prefix: default_h_evidence(),
        }
    }
}

fn default_h_id() -> String {
    "x-agent-id".into()
}
fn default_h_obo() -> String {
    "x-agent-on-behalf-of".into()
}
fn default_h_intent() -> String {
    "x-agent-intent".into()
}
fn default_h_evidence() -> String {
    "x-evidence-".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHold {
    #[serde(default = "default_wait")]
    wait: String,
    #[serde(default = "default_on_wait_timeout")]
    on_wait_timeout: String,
    #[serde(default = "default_expiry")]
    default_expiry: String,
    #[serde(default = "default_max_expiry")]
    max_expiry: String,
    #[serde(default = "default_progress_interval")]
    progress_interval: String,
}

impl Default for RawHold {
    fn default() -> Self {
        RawHold {
            wait: default_wait(),
            on_wait_timeout: default_on_wait_timeout(),
            default_expiry: default_expiry(),
            max_expiry: default_max_expiry(),
            progress_interval: default_progress_interval(),
        }
    }
}

fn default_wait() -> String {
    "25s".into()
}
fn default_progress_interval() -> String {
    "10s".into()
}
fn default_on_wait_timeout() -> String {
    "accept".into()
}
fn default_expiry() -> String {
    "1h".into()
}
fn default_max_expiry() -> String {
    "7d".into()
}

/// `hold.max_expiry` when the config does not set it (also what `policy
/// eval`, which has no config, checks decisions against).
pub const DEFAULT_MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReviewer {
    key_env: Option<String>,
    key_file: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    url: String,
    secret_env: Option<String>,
    secret_file: Option<String>,
    attempts: Option<u32>,
    backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default = "default_store")]
    store: String,
    #[serde(default = "default_busy_timeout")]
    busy_timeout: String,
    password_env: Option<String>,
    password_file: Option<String>,
    ca_file: Option<String>,
    #[serde(default)]
    result_durability: Option<String>,
    #[serde(default)]
    lease: Option<String>,
    #[serde(default)]
    index_lag: Option<String>,
    #[serde(default)]
    checkpoint: Option<RawCheckpoint>,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            store: default_store(),
            busy_timeout: default_busy_timeout(),
            password_env: None,
            password_file: None,
            ca_file: None,
            result_durability: None,
            lease: None,
            index_lag: None,
            checkpoint: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    key_file: String,
    interval: Option<String>,
    #[serde(default)]
    publish: Vec<String>,
    origin: Option<String>,
}

fn default_store() -> String {
    "sqlite://countersign-audit.db".into()
}
fn default_busy_timeout() -> String {
    "5s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_admin_max_connections")]
    admin_max_connections: usize,
    #[serde(default = "default_max_buffered_body_bytes")]
    max_buffered_body_bytes: u64,
    #[serde(default = "default_header_read_timeout")]
    header_read_timeout: String,
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: usize,
    #[serde(default = "default_max_headers")]
    max_headers: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: default_max_connections(),
            admin_max_connections: default_admin_max_connections(),
            max_buffered_body_bytes: default_max_buffered_body_bytes(),
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
        }
    }
}

fn default_max_connections() -> usize {
    1024
}
fn default_admin_max_connections() -> usize {
    64
}
fn default_max_buffered_body_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_header_read_timeout() -> String {
    "10s".into()
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_max_headers() -> usize {
    100
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    jwt: Option<RawJwt>,
    mtls: Option<RawMtls>,
    pod: Option<RawPod>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    jwks_file: Option<String>,
    jwks_url: Option<String>,
    jwks_ca: Option<String>,
    issuer: String,
    audience: String,
    leeway: Option<String>,
    refresh: Option<String>,
    header: Option<String>,
    #[serde(default)]
    claims: RawClaims,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaims {
    #[serde(default = "default_subject_claim")]
    subject: String,
    #[serde(default = "default_actor_claim")]
    actor: String,
}

impl Default for RawClaims {
    fn default() -> Self {
        RawClaims {
            subject: default_subject_claim(),
            actor: default_actor_claim(),
        }
    }
}

fn default_subject_claim() -> String {
    "sub".into()
}
fn default_actor_claim() -> String {
    "act.sub".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMtls {
    client_ca: String,
    subject: Option<String>,
    #[serde(default = "default_true")]
    required: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    subject_env: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    level: Option<String>,
}

// ---------------------------------------------------------------------------
// Validated types.

/// The validated config. Paths are absolute (relative ones are taken from
/// the config file's directory, so a config can ship beside its policies).
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from.
    pub file: PathBuf,
    /// Proxy listener address.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin: AdminConfig,
    /// Listener TLS, when set.
    pub tls: Option<TlsConfig>,
    /// Routes in match order (first match wins).
    pub routes: Vec<RouteConfig>,
    /// Where the policies are and how they are asked.
    pub policy: PolicyConfig,
    /// Where the policy runs: `policy.workers` and `policy.queue`.
    pub policy_pool: PolicyPoolConfig,
    /// What is captured from requests and responses.
    pub capture: CaptureConfig,
    /// How held calls wait.
    pub hold: HoldConfig,
    /// Reviewers by name.
    pub reviewers: BTreeMap<String, ReviewerConfig>,
    /// Notification hooks.
    pub notify: Vec<NotifyConfig>,
    /// The record store.
    pub audit: AuditConfig,
    /// The system log.
    pub log: LogConfig,
    /// What one process accepts at once: connections, buffered bytes, header sizes.
    pub limits: LimitsConfig,
    /// How callers prove who they are (none of it configured: identity is
    /// only what the agent headers declare).
    pub identity: IdentityConfig,
    /// Where every decision is also written as an OPA decision-log line.
    pub decision_log: Option<DecisionLogSink>,
}

/// `decision_log.path`: where the OPA decision-log JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionLogSink {
    /// `-`: standard output (the system log is on standard error).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// Admin listener settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin listener address.
    pub listen: SocketAddr,
    /// Where the bearer token comes from.
    pub token: Option<SecretSource>,
    /// The admin listener's URL as reviewers reach it (for review links in
    /// notices); `http://<listen>` when not set.
    pub public_url: Option<String>,
}

/// Listener certificate and key files (PEM).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Where a secret comes from. Secrets are never written in the YAML itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable's name.
    Env(String),
    /// A file whose content (trimmed) is the secret.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret now; the error names where it was looked for.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                _ => Err(format!("environment variable {name} is not set or empty")),
            },
            // Refused when empty, like an empty variable: an admin token
            // file left empty would otherwise match a request without one.
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                Ok(_) => Err(format!("{} is empty", path.display())),
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            },
        }
    }
}

/// One route: which calls it matches and where they go.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Stable name, given to the policy and the record.
    pub name: String,
    /// Path prefix to match (`/` matches everything).
    pub path_prefix: String,
    /// Host to match (without port), lower-case; any host when absent.
    pub host: Option<String>,
    /// Upstream base URL (`http://` or `https://`).
    pub upstream: String,
    /// Extra CA bundle for a private upstream CA.
    pub upstream_ca: Option<PathBuf>,
    /// Credential countersign adds when forwarding.
    pub upstream_auth: Option<UpstreamAuth>,
    /// Whole-exchange timeout for the upstream (until response headers).
    pub timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// The methods this route takes; `None` means the standard ones
    /// ([`crate::proxy::STANDARD_METHODS`]).
    pub methods: Option<Vec<String>>,
    /// Calls without a verified identity are refused with 401.
    pub identity_required: bool,
    /// What the route's calls speak: plain HTTP, or MCP (docs/mcp.md).
    pub protocol: Protocol,
}

/// The protocol a route speaks (`routes[].protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Plain HTTP: the policy judges requests, refusals are HTTP statuses.
    #[default]
    Http,
    /// The MCP Streamable HTTP transport: the policy also sees the JSON-RPC
    /// message (`input.mcp`), refusals are JSON-RPC answers.
    Mcp,
}

/// A header countersign sets on forwarded calls; agents never hold it.
#[derive(Debug, Clone)]
pub struct UpstreamAuth {
    /// Lower-case header name.
    pub header: String,
    /// Where its value comes from.
    pub value: SecretSource,
}

/// Which input shape the policy expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputShape {
    /// The input document of docs/reference.md#the-policy-input.
    Native,
    /// The native document plus opa-envoy-plugin's `attributes`, `parsed_path`, ...
    Envoy,
}

/// Which regorus evaluator runs the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// The interpreter: regorus 0.14's VM answers differently from it in
    /// ways that can allow (docs/reference.md, "Engine").
    Auto,
    /// The bytecode VM (load fails if the policy does not compile to it);
    /// for comparing the engines, not for serving.
    Vm,
    /// The tree-walking interpreter only.
    Interpreter,
}

/// Policy settings.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Directory of `.rego` files.
    pub dir: PathBuf,
    /// Rule evaluated per call.
    pub entrypoint: String,
    /// Input shape.
    pub input: InputShape,
    /// Evaluation time limit; over it the call fails closed.
    pub timeout: Duration,
    /// Evaluator.
    pub engine: EngineChoice,
}

/// The threads that evaluate the policy, off the async workers that serve
/// connections.
#[derive(Debug, Clone)]
pub struct PolicyPoolConfig {
    /// Evaluation threads (`policy.workers`; one per available core by default).
    pub workers: usize,
    /// Evaluations waiting for a free thread (`policy.queue`); when it is
    /// full the call is refused at once with 503 (`policy_overloaded`).
    pub queue: usize,
}

/// Bounds on what one process takes on at once, so a flood of connections
/// or slow bodies is refused instead of exhausting memory or file handles.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Open connections on the proxy listener; beyond it new connections
    /// wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Open connections on the admin listener, counted apart so a proxy
    /// flood never locks out health checks and reviewers.
    pub admin_max_connections: usize,
    /// Request body bytes buffered across all calls; a call whose body does
    /// not fit is refused with 503 (`overloaded`).
    pub max_buffered_body_bytes: u64,
    /// Time a client has to send a request's headers (and, with TLS, to
    /// finish the handshake); also how long an idle keep-alive connection
    /// is kept.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; larger
    /// gets 431. Also bounds each connection's read buffer.
    pub max_header_bytes: usize,
    /// Most header lines in one request; more gets 431.
    pub max_headers: usize,
}

/// How callers prove who they are ([`crate::identity`]).
#[derive(Debug, Clone, Default)]
pub struct IdentityConfig {
    /// Bearer tokens (JWT).
    pub jwt: Option<JwtConfig>,
    /// Client certificates on the proxy listener.
    pub mtls: Option<MtlsConfig>,
    /// Sidecar mode: the pod's own identity, from the environment.
    pub pod: Option<PodConfig>,
}

impl IdentityConfig {
    /// Whether any way of verifying an identity is configured.
    pub fn any(&self) -> bool {
        self.jwt.is_some() || self.mtls.is_some() || self.pod.is_some()
    }
}

/// Where the keys that sign bearer tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file, reloaded when it changes.
    File(PathBuf),
    /// A JWKS URL, fetched at start and every `refresh`.
    Url {
        /// `https://...` (or `http://` on loopback).
        url: String,
        /// A private CA for the URL's certificate.
        ca: Option<PathBuf>,
    },
}

/// Bearer-token verification settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The signing keys.
    pub jwks: JwksSource,
    /// The one `iss` accepted.
    pub issuer: String,
    /// The `aud` a token must name.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// How often a JWKS URL is fetched again.
    pub refresh: Duration,
    /// The request header carrying `Bearer <token>` (lower-case).
    pub header: String,
    /// The claim naming who the token is for (a dotted path).
    pub subject_claim: String,
    /// The claim naming the agent acting for the subject (RFC 8693 `act.sub`).
    pub actor_claim: String,
}

/// Which of a client certificate's names is the verified identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSubject {
    /// The URI SAN (a SPIFFE ID, for instance).
    UriSan,
    /// The DNS SAN.
    DnsSan,
    /// The subject's common name.
    Cn,
}

/// Client-certificate settings for the proxy listener.
#[derive(Debug, Clone)]
pub struct MtlsConfig {
    /// The CA bundle client certificates must chain to (PEM), reloaded when it changes.
    pub client_ca: PathBuf,
    /// Which name identifies the client.
    pub subject: CertSubject,
    /// Every call must come with a certificate that verifies (else 401).
    pub required: bool,
}

/// Sidecar mode: the identity of the pod the sidecar serves.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// The environment variable that holds it (filled from the downward API).
    pub subject_env: String,
}

/// Agent header names (lower-case).
#[derive(Debug, Clone)]
pub struct AgentHeaders {
    /// Acting agent.
    pub id: String,
    /// Person or team the agent acts for.
    pub on_behalf_of: String,
    /// Stated purpose.
    pub intent: String,
    /// Prefix of evidence headers.
    pub evidence_prefix: String,
}

impl AgentHeaders {
    /// Whether `name` (lower-case) is an agent or evidence header: captured
    /// for the policy and the record, never forwarded.
    pub fn is_agent_header(&self, name: &str) -> bool {
        name == self.id
            || name == self.on_behalf_of
            || name == self.intent
            || name.starts_with(&self.evidence_prefix)
    }
}

/// Capture settings.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Request headers whose values enter the record (lower-case).
    pub headers_allow: BTreeSet<String>,
    /// Response headers kept in the record (lower-case).
    pub response_headers: BTreeSet<String>,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// Response bytes kept in the record (the full SHA-256 is always kept).
    pub max_response_bytes: u64,
    /// Request body bytes kept in the record's `request.body` (the full
    /// SHA-256 and size are always kept; a held action's forward keeps the
    /// whole body, as it must).
    pub max_recorded_body_bytes: u64,
    /// Query parameter names whose values the record keeps as
    /// `[redacted]` (the policy and the upstream still get the real
    /// values), each as the base of the field frameworks read
    /// ([`crate::fold::field`]): see [`CaptureConfig::redacts_query`].
    pub redact_query: BTreeSet<String>,
    /// Time allowed to receive a request body.
    pub body_timeout: Duration,
    /// Agent header names.
    pub agent_headers: AgentHeaders,
}

impl CaptureConfig {
    /// Whether a query parameter's values are kept out of the record: its
    /// name fills the same variable as a `redact_query` name in some
    /// framework (`api.key`, `+api_key`, `API_KEY` and `api_key[]` are all
    /// PHP's `api_key`).
    pub fn redacts_query(&self, name: &str) -> bool {
        self.redact_query.contains(&crate::fold::field(name).base)
    }
}

/// What the proxy does when a held call is not decided within `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWaitTimeout {
    /// Answer 202 and keep the action.
    Accept,
    /// Answer 504 and cancel the action.
    Cancel,
}

/// Hold settings.
#[derive(Debug, Clone)]
pub struct HoldConfig {
    /// How long the agent's request waits for a decision.
    pub wait: Duration,
    /// What happens after that.
    pub on_wait_timeout: OnWaitTimeout,
    /// Expiry when the decision gives none.
    pub default_expiry: Duration,
    /// The longest `expires_in` a decision may ask for; longer breaks the
    /// contract (the call fails closed).
    pub max_expiry: Duration,
    /// How often a held MCP call that sent a progress token gets a
    /// `notifications/progress` while it waits (docs/mcp.md).
    pub progress_interval: Duration,
}

/// A reviewer.
#[derive(Debug, Clone)]
pub struct ReviewerConfig {
    /// Where their Standard Webhooks key is: a shared `whsec_` secret or an
    /// Ed25519 `whpk_` public key (never the `whsk_` secret).
    pub key: SecretSource,
    /// Groups they belong to.
    pub groups: Vec<String>,
    /// Other names they go by (e.g. `alice@corp`): an agent acting as or
    /// for any of them is theirs, and they may not approve it.
    pub aliases: Vec<String>,
}

/// A notification hook.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// URL to POST to.
    pub url: String,
    /// Its signing secret.
    pub secret: SecretSource,
    /// Delivery attempts before giving up (default 5).
    pub attempts: u32,
    /// Delay before the first retry; it doubles after each (default 1s).
    pub backoff: Duration,
}

/// Where the record lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// One SQLite file (one process).
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by a fleet; the DSN holds no password.
    Postgres {
        /// `postgres://user@host:port/db?sslmode=...`
        dsn: String,
    },
}

/// When the result record of an allowed call is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultDurability {
    /// Committed right after the agent has its answer (group commit, fast).
    AfterResponse,
    /// Committed before the agent gets its answer (one more commit of latency).
    BeforeResponse,
}

/// Record store settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The store.
    pub store: StoreUrl,
    /// How long a SQLite commit waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// PostgreSQL password source.
    pub password: Option<SecretSource>,
    /// A private CA for the PostgreSQL server's certificate.
    pub ca_file: Option<PathBuf>,
    /// When result records are durable.
    pub result_durability: ResultDurability,
    /// How long past its own timeouts a process answers for a call it
    /// forwards before another process may mark it interrupted (shared
    /// stores only).
    pub lease: Duration,
    /// How long the SQLite writer may keep the action index's rows back
    /// to write them with a later commit (zero: with every commit).
    pub index_lag: Duration,
    /// Signed checkpoints of the record, when configured.
    pub checkpoint: Option<CheckpointConfig>,
}

/// `audit.checkpoint`: how often the record's tree head is signed, with
/// which key, and where copies go.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The signed-note signer key (`PRIVATE+KEY+...`, from `countersign keygen`).
    pub key_file: PathBuf,
    /// How often a checkpoint is made when the record grew.
    pub interval: Duration,
    /// Where each checkpoint is also written.
    pub publish: Vec<CheckpointSink>,
    /// The log's name on the checkpoint's first line; the key's name when unset.
    pub origin: Option<String>,
}

/// An outside copy of every checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSink {
    /// `dir:///path`: one file per checkpoint in this directory.
    Dir(PathBuf),
    /// `https://...`: POSTed as a signed Standard Webhook, retried.
    Url(String),
}

/// Shortest `audit.checkpoint.interval`.
pub const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// System log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// System log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `countersign=debug`.
    pub level: String,
}

impl Config {
    /// Loads and validates `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: shown.clone(),
            message: format!("cannot read the config file: {e}"),
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, file, &base)
    }

    /// Parses and validates YAML text; relative paths are taken from `base`.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let shown = file.display().to_string();
        let err = |message: String| ConfigError {
            file: shown.clone(),
            message,
        };
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| err(format!("{e}")))?;
        let v = Validator { base };
        v.config(raw, file).map_err(err)
    }
}

/// What the `audit` commands need: the record store and the reviewers'
/// keys (to check signed reviews), and nothing else. Loading it does not
/// look at the policies, routes or listeners, so a copied config whose
/// policy directory is absent still reads its record.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// The config file (or the database file given alone), for messages.
    pub file: PathBuf,
    /// Record store settings.
    pub audit: AuditConfig,
    /// Reviewers by name; empty when a database file is read alone.
    pub reviewers: BTreeMap<String, ReviewerConfig>,
}

/// Only the `audit` and `reviewers` keys of a config file; every other key
/// is left unread (the full load checks them).
#[derive(Debug, Deserialize)]
struct RawRecordConfig {
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    reviewers: BTreeMap<String, RawReviewer>,
}

impl RecordConfig {
    /// Loads the `audit` and `reviewers` sections of `file`.
    pub fn load(file: &Path) -> Result<RecordConfig, ConfigError> {
        let shown = file.display().to_string();
        let err = |message: String| ConfigError {
            file: shown.clone(),
            message,
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| err(format!("cannot read the config file: {e}")))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let raw: RawRecordConfig = serde_yaml::from_str(&text).map_err(|e| err(format!("{e}")))?;
        let v = Validator { base: &base };
        Ok(RecordConfig {
            file: file.to_path_buf(),
            audit: v.audit(raw.audit).map_err(err)?,
            reviewers: v.reviewers(raw.reviewers).map_err(err)?,
        })
    }

    /// A SQLite record file read alone (`--db FILE`): no reviewers' keys,
    /// no checkpoint key.
    pub fn sqlite_file(db: &Path) -> RecordConfig {
        let v = Validator {
            base: Path::new(""),
        };
        let mut audit = v
            .audit(RawAudit::default())
            .expect("the default audit settings are valid");
        audit.store = StoreUrl::Sqlite(db.to_path_buf());
        RecordConfig {
            file: db.to_path_buf(),
            audit,
            reviewers: BTreeMap::new(),
        }
    }
}

struct Validator<'a> {
    base: &'a Path,
}

/// No setting needs more than this; a longer one is a typo, and refusing it
/// keeps every sum of a time and a configured duration from overflowing.
const LONGEST_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn duration(field: &str, text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{field}: `{text}` is not a duration ({e}); write it like 250ms, 25s, 30m or 1h")
    })?;
    if d > LONGEST_DURATION {
        return Err(format!(
            "{field}: `{text}` is longer than 10 years; write a shorter duration"
        ));
    }
    Ok(d)
}

fn secret(field: &str, env: Option<String>, file: Option<PathBuf>) -> Result<SecretSource, String> {
    match (env, file) {
        (Some(e), None) if !e.is_empty() => Ok(SecretSource::Env(e)),
        (None, Some(f)) => Ok(SecretSource::File(f)),
        (Some(_), Some(_)) => Err(format!(
            "{field}: give either an environment variable or a file, not both"
        )),
        _ => Err(format!(
            "{field}: a secret source is required (an environment variable or a file)"
        )),
    }
}

fn addr(field: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{field}: `{text}` is not a listen address; write it like 0.0.0.0:8080")
    })
}

impl Validator<'_> {
    fn checkpoint(&self, c: RawCheckpoint) -> Result<CheckpointConfig, String> {
        let interval = duration(
            "audit.checkpoint.interval",
            c.interval.as_deref().unwrap_or("10s"),
        )?;
        if interval < MIN_CHECKPOINT_INTERVAL || interval > Duration::from_secs(86_400) {
            return Err(format!(
                "audit.checkpoint.interval: `{}` must be from 100ms to 24h",
                c.interval.unwrap_or_default()
            ));
        }
        if c.key_file.trim().is_empty() {
            return Err("audit.checkpoint.key_file: name the file of the signing key (countersign keygen --out PREFIX writes PREFIX.key)".into());
        }
        if let Some(o) = &c.origin {
            if o.trim().is_empty() || o.chars().any(char::is_control) {
                return Err(format!(
                    "audit.checkpoint.origin: `{o}` must be one non-empty line, e.g. countersign.example.com/audit"
                ));
            }
        }
        let mut publish = Vec::new();
        for (i, p) in c.publish.iter().enumerate() {
            let sink = if let Some(dir) = p.strip_prefix("dir://").filter(|d| !d.is_empty()) {
                CheckpointSink::Dir(self.path(dir))
            } else if (p.starts_with("https://") || p.starts_with("http://"))
                && reqwest::Url::parse(p).is_ok()
            {
                CheckpointSink::Url(p.clone())
            } else {
                return Err(format!(
                    "audit.checkpoint.publish[{i}]: `{p}` is neither dir:///a/directory nor an http(s):// URL"
                ));
            };
            publish.push(sink);
        }
        Ok(CheckpointConfig {
            key_file: self.path(&c.key_file),
            interval,
            publish,
            origin: c.origin,
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// `reviewers`: each reviewer's key source, groups and aliases.
    fn reviewers(
        &self,
        raw: BTreeMap<String, RawReviewer>,
    ) -> Result<BTreeMap<String, ReviewerConfig>, String> {
        let mut reviewers = BTreeMap::new();
        for (name, r) in raw {
            let key = secret(
                &format!("reviewers.{name}"),
                r.key_env,
                r.key_file.map(|p| self.path(&p)),
            )?;
            for (i, alias) in r.aliases.iter().enumerate() {
                if crate::approval::identity::normalise(alias).is_empty() {
                    return Err(format!(
                        "reviewers.{name}.aliases[{i}]: an alias must be a non-empty name (it is `{alias}`)"
                    ));
                }
            }
            reviewers.insert(
                name,
                ReviewerConfig {
                    key,
                    groups: r.groups,
                    aliases: r.aliases,
                },
            );
        }
        Ok(reviewers)
    }

    /// `audit`: the record store and its checkpoints.
    fn audit(&self, a: RawAudit) -> Result<AuditConfig, String> {
        let store = if let Some(p) = a.store.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
            StoreUrl::Sqlite(self.path(p))
        } else if a.store.starts_with("postgres://") || a.store.starts_with("postgresql://") {
            crate::audit::store::postgres::check_dsn(&a.store)
                .map_err(|e| format!("audit.store: {e}"))?;
            StoreUrl::Postgres { dsn: a.store }
        } else {
            return Err(format!(
                "audit.store: `{}` is not a store URL; write sqlite:///var/lib/countersign/audit.db or postgres://user@host:5432/db?sslmode=verify-full",
                a.store
            ));
        };
        let password =
            match (
                &store,
                a.password_env.is_some() || a.password_file.is_some(),
            ) {
                (StoreUrl::Postgres { .. }, true) => Some(secret(
                    "audit.password_env/password_file",
                    a.password_env,
                    a.password_file.map(|f| self.path(&f)),
                )?),
                (StoreUrl::Postgres { .. }, false) => None,
                (StoreUrl::Sqlite(_), true) => return Err(
                    "audit.password_env/password_file: only a postgres:// store takes a password"
                        .into(),
                ),
                (StoreUrl::Sqlite(_), false) => None,
            };
        let audit = AuditConfig {
            store,
            busy_timeout: duration("audit.busy_timeout", &a.busy_timeout)?,
            password,
            ca_file: a.ca_file.map(|f| self.path(&f)),
            result_durability: match a.result_durability.as_deref().unwrap_or("after_response") {
                "after_response" => ResultDurability::AfterResponse,
                "before_response" => ResultDurability::BeforeResponse,
                other => {
                    return Err(format!(
                        "audit.result_durability: `{other}` is not one of after_response, before_response"
                    ))
                }
            },
            lease: duration("audit.lease", a.lease.as_deref().unwrap_or("30s"))?,
            index_lag: duration(
                "audit.index_lag",
                a.index_lag.as_deref().unwrap_or("100ms"),
            )?,
            checkpoint: match a.checkpoint {
                Some(c) => Some(self.checkpoint(c)?),
                None => None,
            },
        };
        // The sweep reads the index every second and has the rows kept
        // back written first: a longer lag would not be kept.
        if audit.index_lag > Duration::from_secs(1) {
            return Err(format!(
                "audit.index_lag: `{}` is longer than the 1s allowed (the expiry sweep writes the rows kept back every second)",
                a.index_lag.unwrap_or_default()
            ));
        }
        // SQLite takes the wait in milliseconds as a 32-bit number.
        if audit.busy_timeout > Duration::from_secs(3600) {
            return Err(format!(
                "audit.busy_timeout: `{}` is longer than the 1h allowed",
                a.busy_timeout
            ));
        }
        Ok(audit)
    }

    fn config(&self, raw: RawConfig, file: &Path) -> Result<Config, String> {
        let listen = addr("listen", &raw.listen)?;
        let admin = AdminConfig {
            listen: addr("admin.listen", &raw.admin.listen)?,
            token: match (raw.admin.token_env, raw.admin.token_file) {
                (None, None) => None,
                (e, f) => Some(secret("admin", e, f.map(|f| self.path(&f)))?),
            },
            public_url: match raw.admin.public_url {
                Some(u) if reqwest::Url::parse(&u).is_err() => {
                    return Err(format!("admin.public_url: `{u}` is not a URL"))
                }
                u => u.map(|u| u.trim_end_matches('/').to_string()),
            },
        };
        let tls = raw.tls.map(|t| TlsConfig {
            cert: self.path(&t.cert),
            key: self.path(&t.key),
        });
        if raw.routes.is_empty() {
            return Err("routes: at least one route is required".into());
        }
        let mut names = BTreeSet::new();
        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let f = format!("routes[{i}]");
            if r.name.trim().is_empty() {
                return Err(format!("{f}.name: a route needs a name"));
            }
            if !names.insert(r.name.clone()) {
                return Err(format!(
                    "{f}.name: `{}` is used by an earlier route; names must be unique",
                    r.name
                ));
            }
            let path_prefix = r.match_.path_prefix.unwrap_or_else(|| "/".into());
            if !path_prefix.starts_with('/') {
                return Err(format!(
                    "{f}.match.path_prefix: `{path_prefix}` must start with /"
                ));
            }
            // Routes match canonical targets, so a prefix in any other
            // spelling would never match.
            match crate::proxy::target::Target::canonical(&path_prefix, None) {
                Ok(t) if t.path() == path_prefix => {}
                Ok(t) => {
                    return Err(format!(
                    "{f}.match.path_prefix: `{path_prefix}` is not in canonical form; write `{}`",
                    t.path()
                ))
                }
                Err(e) => return Err(format!("{f}.match.path_prefix: `{path_prefix}`: {e}")),
            }
            let upstream = r.upstream.trim_end_matches('/').to_string();
            let scheme_ok = upstream.starts_with("http://") || upstream.starts_with("https://");
            let parsed = reqwest::Url::parse(&upstream);
            if !scheme_ok || parsed.is_err() {
                return Err(format!(
                    "{f}.upstream: `{}` is not an http:// or https:// URL",
                    r.upstream
                ));
            }
            if parsed.is_ok_and(|u| u.query().is_some() || u.fragment().is_some()) {
                return Err(format!(
                    "{f}.upstream: `{}` has a query or fragment; the upstream is a base URL that request paths are appended to",
                    r.upstream
                ));
            }
            let methods = match r.methods {
                None => None,
                Some(list) => Some(route_methods(&f, list)?),
            };
            let upstream_auth = match r.upstream_auth {
                None => None,
                Some(a) => {
                    let header = a.header.to_ascii_lowercase();
                    if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                        return Err(format!(
                            "{f}.upstream_auth.header: `{}` is not a header name",
                            a.header
                        ));
                    }
                    let value = secret(
                        &format!("{f}.upstream_auth"),
                        a.value_env,
                        a.value_file.map(|p| self.path(&p)),
                    )?;
                    Some(UpstreamAuth { header, value })
                }
            };
            routes.push(RouteConfig {
                name: r.name,
                path_prefix,
                host: r.match_.host.map(|h| h.to_ascii_lowercase()),
                upstream,
                upstream_ca: r.upstream_ca.map(|p| self.path(&p)),
                upstream_auth,
                timeout: duration(
                    &format!("{f}.timeout"),
                    r.timeout.as_deref().unwrap_or("30s"),
                )?,
                connect_timeout: duration(
                    &format!("{f}.connect_timeout"),
                    r.connect_timeout.as_deref().unwrap_or("5s"),
                )?,
                methods,
                identity_required: r.identity.is_some_and(|i| i.required),
                protocol: match r.protocol.as_deref() {
                    None | Some("http") => Protocol::Http,
                    Some("mcp") => Protocol::Mcp,
                    Some(other) => {
                        return Err(format!("{f}.protocol: `{other}` is not one of http, mcp"))
                    }
                },
            });
        }

        let input = match raw.policy.input.as_str() {
            "native" => InputShape::Native,
            "envoy" => InputShape::Envoy,
            other => {
                return Err(format!(
                    "policy.input: `{other}` is not one of native, envoy"
                ))
            }
        };
        if !raw.policy.entrypoint.starts_with("data.") {
            return Err(format!(
                "policy.entrypoint: `{}` must be a rule path starting with data.",
                raw.policy.entrypoint
            ));
        }
        let policy_dir = self.path(&raw.policy.dir);
        if !policy_dir.is_dir() && !crate::policy::bundle::is_bundle(&policy_dir) {
            return Err(format!(
                "policy.dir: {} is neither a directory of policies nor an OPA bundle (.tar.gz)",
                policy_dir.display()
            ));
        }
        let policy = PolicyConfig {
            dir: policy_dir,
            entrypoint: raw.policy.entrypoint,
            input,
            timeout: duration("policy.timeout", &raw.policy.timeout)?,
            engine: match raw.policy.engine.as_str() {
                "auto" => EngineChoice::Auto,
                "vm" => EngineChoice::Vm,
                "interpreter" => EngineChoice::Interpreter,
                other => {
                    return Err(format!(
                        "policy.engine: `{other}` is not one of auto, vm, interpreter"
                    ))
                }
            },
        };

        let policy_pool = PolicyPoolConfig {
            workers: match raw.policy.workers {
                None => std::thread::available_parallelism().map_or(2, |n| n.get()),
                Some(n) if (1..=MAX_POLICY_WORKERS).contains(&n) => n,
                Some(n) => {
                    return Err(format!(
                        "policy.workers: {n} must be from 1 to {MAX_POLICY_WORKERS}"
                    ))
                }
            },
            queue: match raw.policy.queue {
                n if (1..=MAX_POLICY_QUEUE).contains(&n) => n,
                n => {
                    return Err(format!(
                        "policy.queue: {n} must be from 1 to {MAX_POLICY_QUEUE}"
                    ))
                }
            },
        };

        let c = raw.capture;
        if c.max_body_bytes == 0 {
            return Err("capture.max_body_bytes must be greater than zero".into());
        }
        let lower = |v: Vec<String>| {
            v.into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect::<BTreeSet<_>>()
        };
        let ah = c.agent_headers;
        let capture = CaptureConfig {
            headers_allow: lower(c.headers_allow),
            response_headers: lower(c.response_headers),
            max_body_bytes: c.max_body_bytes,
            max_response_bytes: c.max_response_bytes,
            max_recorded_body_bytes: c.max_recorded_body_bytes,
            redact_query: c
                .redact_query
                .iter()
                .map(|n| crate::fold::field(n).base)
                .collect(),
            body_timeout: duration("capture.body_timeout", &c.body_timeout)?,
            agent_headers: AgentHeaders {
                id: ah.id.to_ascii_lowercase(),
                on_behalf_of: ah.on_behalf_of.to_ascii_lowercase(),
                intent: ah.intent.to_ascii_lowercase(),
                evidence_prefix: ah.evidence_prefix.to_ascii_lowercase(),
            },
        };
        if capture.agent_headers.evidence_prefix.is_empty() {
            return Err("capture.agent_headers.evidence_prefix must not be empty".into());
        }

        let hold = HoldConfig {
            wait: duration("hold.wait", &raw.hold.wait)?,
            on_wait_timeout: match raw.hold.on_wait_timeout.as_str() {
                "accept" => OnWaitTimeout::Accept,
                "cancel" => OnWaitTimeout::Cancel,
                other => {
                    return Err(format!(
                        "hold.on_wait_timeout: `{other}` is not one of accept, cancel"
                    ))
                }
            },
            default_expiry: duration("hold.default_expiry", &raw.hold.default_expiry)?,
            max_expiry: duration("hold.max_expiry", &raw.hold.max_expiry)?,
            progress_interval: duration("hold.progress_interval", &raw.hold.progress_interval)?,
        };
        if hold.progress_interval.is_zero() {
            return Err("hold.progress_interval must be more than 0".into());
        }
        if hold.max_expiry.is_zero() {
            return Err("hold.max_expiry must be greater than zero".into());
        }
        if hold.default_expiry.is_zero() || hold.default_expiry > hold.max_expiry {
            return Err(format!(
                "hold.default_expiry: {} must be greater than zero and at most hold.max_expiry ({})",
                raw.hold.default_expiry, raw.hold.max_expiry
            ));
        }

        let reviewers = self.reviewers(raw.reviewers)?;
        let mut notify = Vec::new();
        for (i, n) in raw.notify.into_iter().enumerate() {
            if reqwest::Url::parse(&n.url).is_err() {
                return Err(format!("notify[{i}].url: `{}` is not a URL", n.url));
            }
            let secret = secret(
                &format!("notify[{i}]"),
                n.secret_env,
                n.secret_file.map(|p| self.path(&p)),
            )?;
            let attempts = n.attempts.unwrap_or(5);
            if !(1..=20).contains(&attempts) {
                return Err(format!(
                    "notify[{i}].attempts: {attempts} must be from 1 to 20"
                ));
            }
            let backoff = duration(
                &format!("notify[{i}].backoff"),
                n.backoff.as_deref().unwrap_or("1s"),
            )?;
            notify.push(NotifyConfig {
                url: n.url,
                secret,
                attempts,
                backoff,
            });
        }

        let audit = self.audit(raw.audit)?;

        let log = LogConfig {
            format: match raw.log.format.as_deref().unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return Err(format!("log.format: `{other}` is not one of text, json")),
            },
            level: raw.log.level.unwrap_or_else(|| "info".into()),
        };

        let decision_log = match raw.decision_log {
            None => None,
            Some(l) if l.path == "-" => Some(DecisionLogSink::Stdout),
            Some(l) if l.path.trim().is_empty() => {
                return Err("decision_log.path: name a file, or `-` for standard output".into())
            }
            Some(l) => Some(DecisionLogSink::File(self.path(&l.path))),
        };
        let limits = validate_limits(raw.limits, &capture)?;
        let identity = self.identity(raw.identity, listen, tls.is_some(), &capture)?;
        for (i, r) in routes.iter().enumerate() {
            if r.identity_required && !identity.any() {
                return Err(format!(
                    "routes[{i}].identity.required: no identity is configured, so no call could ever be taken; configure identity.jwt, identity.mtls or identity.pod"
                ));
            }
        }

        Ok(Config {
            file: file.to_path_buf(),
            listen,
            admin,
            tls,
            routes,
            policy,
            policy_pool,
            capture,
            hold,
            reviewers,
            notify,
            audit,
            log,
            limits,
            identity,
            decision_log,
        })
    }
}

const LONGEST_LEEWAY: Duration = Duration::from_secs(300);

impl Validator<'_> {
    /// The `identity` section, checked against the listener it applies to.
    fn identity(
        &self,
        raw: RawIdentity,
        listen: SocketAddr,
        tls: bool,
        capture: &CaptureConfig,
    ) -> Result<IdentityConfig, String> {
        let jwt = match raw.jwt {
            None => None,
            Some(j) => Some(self.jwt(j, capture)?),
        };
        let mtls = match raw.mtls {
            None => None,
            Some(m) => {
                if !tls {
                    return Err("identity.mtls: client certificates need the proxy listener to serve TLS; set tls.cert and tls.key".into());
                }
                let subject = match m.subject.as_deref().unwrap_or("uri_san") {
                    "uri_san" => CertSubject::UriSan,
                    "dns_san" => CertSubject::DnsSan,
                    "cn" => CertSubject::Cn,
                    other => {
                        return Err(format!(
                            "identity.mtls.subject: `{other}` is not one of uri_san, dns_san, cn"
                        ))
                    }
                };
                Some(MtlsConfig {
                    client_ca: self.path(&m.client_ca),
                    subject,
                    required: m.required,
                })
            }
        };
        let pod = match raw.pod {
            None => None,
            Some(p) => {
                if !listen.ip().is_loopback() {
                    return Err(format!(
                        "identity.pod: the pod's identity may only be asserted for calls from inside the pod, but listen is {listen}; set listen to 127.0.0.1:<port> (sidecar mode) or remove identity.pod"
                    ));
                }
                if p.subject_env.trim().is_empty() {
                    return Err("identity.pod.subject_env: name the environment variable that holds the pod's identity".into());
                }
                Some(PodConfig {
                    subject_env: p.subject_env,
                })
            }
        };
        Ok(IdentityConfig { jwt, mtls, pod })
    }

    fn jwt(&self, j: RawJwt, capture: &CaptureConfig) -> Result<JwtConfig, String> {
        let jwks = match (j.jwks_file, j.jwks_url) {
            (Some(f), None) => {
                if j.jwks_ca.is_some() {
                    return Err("identity.jwt.jwks_ca: only a jwks_url is fetched over TLS; remove it or use jwks_url".into());
                }
                JwksSource::File(self.path(&f))
            }
            (None, Some(u)) => {
                let parsed = reqwest::Url::parse(&u)
                    .map_err(|_| format!("identity.jwt.jwks_url: `{u}` is not a URL"))?;
                let loopback = parsed.host_str().is_some_and(|h| {
                    h == "localhost"
                        || h.trim_matches(['[', ']'])
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                });
                match parsed.scheme() {
                    "https" => {}
                    "http" if loopback => {}
                    _ => {
                        return Err(format!(
                            "identity.jwt.jwks_url: `{u}` must be https:// (plain http:// only on loopback): the keys decide who is who"
                        ))
                    }
                }
                JwksSource::Url {
                    url: u,
                    ca: j.jwks_ca.map(|c| self.path(&c)),
                }
            }
            (Some(_), Some(_)) => {
                return Err("identity.jwt: give either jwks_file or jwks_url, not both".into())
            }
            (None, None) => {
                return Err(
                    "identity.jwt: the signing keys are required: set jwks_file or jwks_url".into(),
                )
            }
        };
        if j.issuer.trim().is_empty() {
            return Err(
                "identity.jwt.issuer: name the issuer whose tokens are accepted (the `iss` claim)"
                    .into(),
            );
        }
        if j.audience.trim().is_empty() {
            return Err("identity.jwt.audience: name the audience tokens must be for (the `aud` claim), such as countersign".into());
        }
        let leeway = duration("identity.jwt.leeway", j.leeway.as_deref().unwrap_or("30s"))?;
        if leeway > LONGEST_LEEWAY {
            return Err(
                "identity.jwt.leeway: at most 5m; the leeway only covers clock skew".into(),
            );
        }
        let refresh = duration("identity.jwt.refresh", j.refresh.as_deref().unwrap_or("5m"))?;
        if refresh < Duration::from_secs(1) {
            return Err("identity.jwt.refresh: at least 1s".into());
        }
        let header = j
            .header
            .unwrap_or_else(|| "authorization".into())
            .to_ascii_lowercase();
        if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(format!(
                "identity.jwt.header: `{header}` is not a header name"
            ));
        }
        if capture.headers_allow.contains(&header) {
            return Err(format!(
                "capture.headers_allow: `{header}` carries the bearer token (identity.jwt.header); a token must never be recorded, so remove it from the allowlist"
            ));
        }
        if capture.agent_headers.is_agent_header(&header) {
            return Err(format!(
                "identity.jwt.header: `{header}` is an agent or evidence header; use another header for the token"
            ));
        }
        for (field, path) in [("subject", &j.claims.subject), ("actor", &j.claims.actor)] {
            if path.split('.').any(|p| p.trim().is_empty()) {
                return Err(format!(
                    "identity.jwt.claims.{field}: `{path}` is not a claim path; write a claim name, or names joined by dots (act.sub)"
                ));
            }
        }
        Ok(JwtConfig {
            jwks,
            issuer: j.issuer,
            audience: j.audience,
            leeway,
            refresh,
            header,
            subject_claim: j.claims.subject,
            actor_claim: j.claims.actor,
        })
    }
}

const MAX_POLICY_WORKERS: usize = 1024;
const MAX_POLICY_QUEUE: usize = 1 << 20;
/// hyper's smallest read buffer; a smaller header limit could not be honoured.
const MIN_HEADER_BYTES: usize = 8192;
const MAX_HEADER_BYTES: usize = 1024 * 1024;

fn validate_limits(raw: RawLimits, capture: &CaptureConfig) -> Result<LimitsConfig, String> {
    if raw.max_connections == 0 {
        return Err("limits.max_connections must be greater than zero".into());
    }
    if raw.admin_max_connections == 0 {
        return Err("limits.admin_max_connections must be greater than zero".into());
    }
    if raw.max_buffered_body_bytes < capture.max_body_bytes {
        return Err(format!(
            "limits.max_buffered_body_bytes ({}) must be at least capture.max_body_bytes ({}), or a call with a body of the allowed size could never be accepted",
            raw.max_buffered_body_bytes, capture.max_body_bytes
        ));
    }
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&raw.max_header_bytes) {
        return Err(format!(
            "limits.max_header_bytes: {} must be from {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES}",
            raw.max_header_bytes
        ));
    }
    if !(1..=10_000).contains(&raw.max_headers) {
        return Err(format!(
            "limits.max_headers: {} must be from 1 to 10000",
            raw.max_headers
        ));
    }
    let header_read_timeout = duration("limits.header_read_timeout", &raw.header_read_timeout)?;
    if header_read_timeout.is_zero() {
        return Err("limits.header_read_timeout must be greater than zero".into());
    }
    Ok(LimitsConfig {
        max_connections: raw.max_connections,
        admin_max_connections: raw.admin_max_connections,
        max_buffered_body_bytes: raw.max_buffered_body_bytes,
        header_read_timeout,
        max_header_bytes: raw.max_header_bytes,
        max_headers: raw.max_headers,
    })
}

impl Config {
    /// Reads every secret the config names, so `serve` and `check` fail at
    /// start rather than on the first call that needs one.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        let err = |field: String, e: String| ConfigError {
            file: self.file.display().to_string(),
            message: format!("{field}: {e}"),
        };
        if let Some(t) = &self.admin.token {
            t.read().map_err(|e| err("admin".into(), e))?;
        }
        // Every reviewer key reads and parses, and no two reviewers share one.
        crate::approval::Reviewers::from_config(self).map_err(|message| {
            let file = self.file.display().to_string();
            let message = message
                .strip_prefix(&format!("{file}: "))
                .unwrap_or(&message)
                .to_string();
            ConfigError { file, message }
        })?;
        for (i, n) in self.notify.iter().enumerate() {
            let key = n
                .secret
                .read()
                .map_err(|e| err(format!("notify[{i}]"), e))?;
            webhook_key(&key).map_err(|e| err(format!("notify[{i}]"), e))?;
        }
        if let Some(p) = &self.identity.pod {
            let unset = std::env::var(&p.subject_env).map_or(true, |v| v.trim().is_empty());
            if unset {
                return Err(err(
                    "identity.pod.subject_env".into(),
                    format!("environment variable {} is not set or empty", p.subject_env),
                ));
            }
        }
        if let Some(JwtConfig {
            jwks: JwksSource::File(f),
            ..
        }) = &self.identity.jwt
        {
            crate::identity::jwks::read_file(f)
                .map_err(|e| err("identity.jwt.jwks_file".into(), e.to_string()))?;
        }
        if let Some(m) = &self.identity.mtls {
            crate::identity::mtls::ClientCerts::load(&m.client_ca).map_err(|message| {
                ConfigError {
                    file: self.file.display().to_string(),
                    message,
                }
            })?;
        }
        if let Some(c) = &self.audit.checkpoint {
            crate::audit::checkpoint::load_signer(c)
                .map_err(|e| err("audit.checkpoint.key_file".into(), e))?;
        }
        for r in &self.routes {
            if let Some(a) = &r.upstream_auth {
                a.value
                    .read()
                    .map_err(|e| err(format!("routes.{}.upstream_auth", r.name), e))?;
            }
            if let Some(ca) = &r.upstream_ca {
                if !ca.is_file() {
                    return Err(err(
                        format!("routes.{}.upstream_ca", r.name),
                        format!("{} does not exist", ca.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Validates a route's `methods` list: HTTP method tokens, written in
/// upper case (methods are case-sensitive, so `get` would never match a
/// GET), each once, at least one.
fn route_methods(f: &str, list: Vec<String>) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err(format!(
            "{f}.methods: the list is empty, so the route would take no call; remove it to take the standard methods"
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, m) in list.iter().enumerate() {
        if hyper::Method::from_bytes(m.as_bytes()).is_err() {
            return Err(format!("{f}.methods[{i}]: `{m}` is not an HTTP method"));
        }
        if m.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(format!(
                "{f}.methods[{i}]: `{m}`: methods are case-sensitive; write `{}`",
                m.to_ascii_uppercase()
            ));
        }
        if !seen.insert(m.as_str()) {
            return Err(format!("{f}.methods[{i}]: `{m}` is listed twice"));
        }
    }
    Ok(list)
}

/// Parses a Standard Webhooks secret (`whsec_` + base64 of the key bytes).
pub fn webhook_key(secret: &str) -> Result<standardwebhooks::Webhook, String> {
    if !secret.starts_with("whsec_") {
        return Err("the key must be a Standard Webhooks secret: whsec_ followed by base64".into());
    }
    match standardwebhooks::Webhook::new(secret) {
        Ok(k) => Ok(k),
        Err(_) => Err("the key is not valid base64 after whsec_".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir();
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        Config::parse(yaml, Path::new("test.yaml"), &dir)
    }

    const MINIMAL: &str =
        "routes:\n  - name: api\n    match: { path_prefix: / }\n    upstream: http://127.0.0.1:1\n";

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.policy.entrypoint, "data.countersign.decision");
        assert_eq!(c.hold.wait, Duration::from_secs(25));
        assert_eq!(c.capture.max_body_bytes, 1024 * 1024);
        assert_eq!(c.routes[0].timeout, Duration::from_secs(30));
        assert_eq!(c.capture.max_recorded_body_bytes, 64 * 1024);
        assert!(c.capture.redact_query.contains("api_key"));
    }

    #[test]
    fn the_index_lag_is_zero_to_a_second() {
        let lag = |v: &str| parse(&format!("{MINIMAL}audit: {{ index_lag: {v} }}\n"));
        assert_eq!(lag("0").unwrap().audit.index_lag, Duration::ZERO);
        assert_eq!(lag("1s").unwrap().audit.index_lag, Duration::from_secs(1));
        let e = lag("2s").unwrap_err().to_string();
        assert!(
            e.contains("audit.index_lag") && e.contains("1s allowed"),
            "{e}"
        );
    }

    #[test]
    fn redacted_query_names_are_lower_case() {
        let c = parse(&format!(
            "{MINIMAL}capture: {{ redact_query: [X-Sig], max_recorded_body_bytes: 0 }}\n"
        ))
        .unwrap();
        assert_eq!(
            c.capture.redact_query,
            BTreeSet::from(["x-sig".to_string()])
        );
        assert_eq!(c.capture.max_recorded_body_bytes, 0);
    }

    #[test]
    fn unknown_key_names_the_key() {
        let e = parse(&format!("{MINIMAL}    upstreem: x\n")).unwrap_err();
        assert!(e.to_string().contains("upstreem"), "{e}");
        assert!(e.to_string().starts_with("test.yaml: "), "{e}");
    }

    #[test]
    fn reviewer_keys_sign_the_published_standard_webhooks_vector() {
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(
            webhook_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err(),
            "the whsec_ prefix is required"
        );
        assert!(webhook_key("whsec_not base64!").is_err());
    }

    #[test]
    fn hold_expiry_limits_are_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.hold.max_expiry, DEFAULT_MAX_EXPIRY);
        let e = parse(&format!("{MINIMAL}hold: {{ default_expiry: 8d }}\n")).unwrap_err();
        assert!(e.message.starts_with("hold.default_expiry:"), "{e}");
        let c = parse(&format!(
            "{MINIMAL}hold: {{ default_expiry: 8d, max_expiry: 30d }}\n"
        ))
        .unwrap();
        assert_eq!(c.hold.max_expiry, Duration::from_secs(30 * 86_400));
        let e = parse(&format!("{MINIMAL}hold: {{ max_expiry: 500000000000y }}\n")).unwrap_err();
        assert!(e.message.contains("longer than 10 years"), "{e}");
        let e = parse(&format!("{MINIMAL}audit: {{ busy_timeout: 30d }}\n")).unwrap_err();
        assert!(e.message.starts_with("audit.busy_timeout:"), "{e}");
    }

    #[test]
    fn checkpoints_are_configured_with_sinks_and_checked_intervals() {
        let c = parse(&format!(
            "{MINIMAL}audit:\n  checkpoint: {{ key_file: ckpt.key, publish: [\"dir://out\", \"dir:///abs\", \"https://w.example/c\"] }}\n"
        ))
        .unwrap();
        let cp = c.audit.checkpoint.unwrap();
        assert_eq!(cp.interval, Duration::from_secs(10));
        assert!(cp.key_file.ends_with("ckpt.key") && cp.key_file.is_absolute());
        assert_eq!(cp.publish.len(), 3);
        assert!(
            matches!(&cp.publish[0], CheckpointSink::Dir(d) if d.is_absolute() && d.ends_with("out"))
        );
        assert_eq!(cp.publish[1], CheckpointSink::Dir("/abs".into()));
        assert_eq!(
            cp.publish[2],
            CheckpointSink::Url("https://w.example/c".into())
        );
        assert!(parse(MINIMAL).unwrap().audit.checkpoint.is_none());
        for (yaml, field) in [
            (
                "{ key_file: k, interval: 10ms }",
                "audit.checkpoint.interval",
            ),
            ("{ key_file: k, interval: 2d }", "audit.checkpoint.interval"),
            (
                "{ key_file: k, publish: [\"s3://bucket\"] }",
                "audit.checkpoint.publish[0]",
            ),
            ("{ key_file: k, origin: \"\" }", "audit.checkpoint.origin"),
            ("{ key_file: \"\" }", "audit.checkpoint.key_file"),
        ] {
            let e = parse(&format!("{MINIMAL}audit:\n  checkpoint: {yaml}\n")).unwrap_err();
            assert!(e.message.starts_with(field), "{yaml}: {e}");
        }
        let e = parse(&format!(
            "{MINIMAL}audit:\n  checkpoint: {{ key_file: k, every: 1s }}\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("every"), "{e}");
    }

    #[test]
    fn reviewer_aliases_must_name_someone() {
        let reviewer = |aliases: &str| {
            parse(&format!(
                "{MINIMAL}reviewers:\n  alice: {{ key_env: K, aliases: {aliases} }}\n"
            ))
        };
        let c = reviewer("[\"alice@corp\", \"Alice Smith\"]").unwrap();
        assert_eq!(c.reviewers["alice"].aliases, ["alice@corp", "Alice Smith"]);
        for blank in ["[\"\"]", "[\" \"]", "[\"\\u200B\"]"] {
            let e = reviewer(blank).unwrap_err();
            assert!(
                e.message.starts_with("reviewers.alice.aliases[0]:"),
                "{blank}: {e}"
            );
        }
    }

    #[test]
    fn route_protocols_are_http_or_mcp() {
        assert_eq!(parse(MINIMAL).unwrap().routes[0].protocol, Protocol::Http);
        let c = parse(&format!("{MINIMAL}    protocol: mcp\n")).unwrap();
        assert_eq!(c.routes[0].protocol, Protocol::Mcp);
        let e = parse(&format!("{MINIMAL}    protocol: grpc\n")).unwrap_err();
        assert!(e.message.starts_with("routes[0].protocol:"), "{e}");
        let e = parse(&format!("{MINIMAL}hold: {{ progress_interval: 0s }}\n")).unwrap_err();
        assert!(e.message.contains("hold.progress_interval"), "{e}");
    }

    #[test]
    fn route_methods_and_prefixes_are_checked() {
        let c = parse(&format!("{MINIMAL}    methods: [GET, TRACE, PURGE]\n")).unwrap();
        assert_eq!(
            c.routes[0].methods.as_deref(),
            Some(&["GET".to_string(), "TRACE".into(), "PURGE".into()][..])
        );
        for (extra, field) in [
            ("    methods: []\n", "routes[0].methods:"),
            ("    methods: [get]\n", "routes[0].methods[0]:"),
            ("    methods: [GET, GET]\n", "routes[0].methods[1]:"),
            ("    methods: [\"G T\"]\n", "routes[0].methods[0]:"),
        ] {
            let e = parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert!(e.message.starts_with(field), "{extra}: {e}");
        }
        for prefix in ["/v1/../x", "/%761", "/v1//x", "/a;b"] {
            let yaml = MINIMAL.replace("path_prefix: /", &format!("path_prefix: \"{prefix}\""));
            let e = parse(&yaml).unwrap_err();
            assert!(
                e.message.starts_with("routes[0].match.path_prefix:"),
                "{prefix}: {e}"
            );
        }
        let e = parse(&MINIMAL.replace("127.0.0.1:1", "127.0.0.1:1/api?x=1")).unwrap_err();
        assert!(e.message.starts_with("routes[0].upstream:"), "{e}");
    }

    #[test]
    fn limits_get_documented_defaults_and_are_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.admin_max_connections, 64);
        assert_eq!(c.limits.max_buffered_body_bytes, 64 * 1024 * 1024);
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.max_header_bytes, 64 * 1024);
        assert_eq!(c.limits.max_headers, 100);
        assert_eq!(c.policy_pool.queue, 256);
        assert!(c.policy_pool.workers >= 1);
        for (yaml, field) in [
            ("limits: { max_connections: 0 }", "limits.max_connections"),
            (
                "limits: { max_buffered_body_bytes: 1000 }",
                "limits.max_buffered_body_bytes",
            ),
            (
                "limits: { max_header_bytes: 100 }",
                "limits.max_header_bytes",
            ),
            (
                "limits: { header_read_timeout: 0s }",
                "limits.header_read_timeout",
            ),
            ("policy: { workers: 0 }", "policy.workers"),
            ("policy: { queue: 0 }", "policy.queue"),
        ] {
            let e = parse(&format!("{MINIMAL}{yaml}\n")).unwrap_err();
            assert!(e.message.starts_with(field), "{yaml}: {e}");
        }
    }

    #[test]
    fn identity_settings_are_checked_against_the_listener_and_capture() {
        let jwt = "identity:\n  jwt: { jwks_file: jwks.json, issuer: https://i, audience: cs }\n";
        let c = parse(&format!("{MINIMAL}{jwt}")).unwrap();
        let j = c.identity.jwt.as_ref().unwrap();
        assert_eq!(j.header, "authorization");
        assert_eq!(
            (j.subject_claim.as_str(), j.actor_claim.as_str()),
            ("sub", "act.sub")
        );
        assert_eq!(j.leeway, Duration::from_secs(30));
        let required = MINIMAL.replace(
            "upstream: http://127.0.0.1:1\n",
            "upstream: http://127.0.0.1:1\n    identity: { required: true }\n",
        );
        assert!(parse(&format!("{required}{jwt}")).unwrap().routes[0].identity_required);
        for (yaml, field) in [
            (required.clone(), "routes[0].identity.required"),
            (format!("{MINIMAL}identity:\n  jwt: {{ jwks_file: a, jwks_url: https://x, issuer: i, audience: a }}\n"), "identity.jwt"),
            (format!("{MINIMAL}identity:\n  jwt: {{ issuer: i, audience: a }}\n"), "identity.jwt"),
            (format!("{MINIMAL}identity:\n  jwt: {{ jwks_url: \"http://keys.corp/jwks\", issuer: i, audience: a }}\n"), "identity.jwt.jwks_url"),
            (format!("{MINIMAL}identity:\n  jwt: {{ jwks_file: a, issuer: i, audience: a, leeway: 1h }}\n"), "identity.jwt.leeway"),
            (format!("{MINIMAL}capture: {{ headers_allow: [Authorization] }}\n{jwt}"), "capture.headers_allow"),
            (format!("{MINIMAL}identity:\n  mtls: {{ client_ca: ca.pem }}\n"), "identity.mtls"),
            (format!("{MINIMAL}identity:\n  pod: {{ subject_env: POD_IDENTITY }}\n"), "identity.pod"),
        ] {
            let e = parse(&yaml).unwrap_err();
            assert!(e.message.starts_with(field), "{yaml}: {e}");
        }
        let loopback = MINIMAL.to_string()
            + "listen: 127.0.0.1:8080\nidentity:\n  pod: { subject_env: POD_IDENTITY }\n";
        assert!(parse(&loopback).unwrap().identity.pod.is_some());
        let local = format!("{MINIMAL}identity:\n  jwt: {{ jwks_url: \"http://127.0.0.1:5556/jwks\", issuer: i, audience: a }}\n");
        assert!(parse(&local).is_ok(), "plain http is fine on loopback");
    }

    #[test]
    fn bad_duration_names_the_field() {
        let e = parse(&format!("{MINIMAL}hold: {{ wait: 25 parsecs }}\n")).unwrap_err();
        assert!(e.message.starts_with("hold.wait:"), "{e}");
    }
}
