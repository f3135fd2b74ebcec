//! Forwarding to an upstream: one reqwest client per route (its own TLS
//! roots), hop-by-hop and agent headers stripped, the route's credential
//! added, redirects never followed (the agent sees them as the upstream sent
//! them), and the response captured for the record while it streams.
//!
//! The route's credential must not come back: an upstream may echo its
//! request headers (`TRACE`, `/anything`). [`Upstream::credential`] is the
//! set the callers scrub from response headers and bodies before the agent
//! or the record sees them; so the body can be read, a route with a
//! credential asks its upstream for an unencoded body (`accept-encoding:
//! identity`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::audit::redact::Secrets;
use crate::capture::body_view_of;
use crate::config::{CaptureConfig, RouteConfig};

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No response headers within the route's timeout.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, TLS failure, ...
    #[error("the upstream could not be reached: {0}")]
    Unreachable(String),
    /// The request line would not carry the decided target; nothing was sent.
    #[error("the request was not sent: {0}")]
    Target(String),
    /// On a route with a credential, the upstream answered with an encoded
    /// (compressed) body although asked for `identity`: the credential
    /// could hide inside it, so the answer is not relayed.
    #[error("the upstream answered with `content-encoding: {0}` although countersign asked for an unencoded body; on a route with upstream_auth a compressed answer cannot be checked for the credential, so it is not relayed (the upstream did receive the call)")]
    Encoded(String),
}

/// Why an HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct ClientError {
    /// What the client is for (`route payments`, `notify`, ...).
    what: String,
    message: String,
}

/// Headers only the proxy writes on a forwarded call or an answer: the
/// hop-by-hop ones, and `host` and `content-length`, which route and frame
/// the message (the client sets them from the URL and the body). Neither
/// an agent nor a policy result may supply them.
pub fn is_proxy_owned(name: &str) -> bool {
    is_hop_by_hop(name, &[]) || name == "host" || name == "content-length"
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Whether a header must not cross the proxy. `upgrade` is included: the
/// proxy does not tunnel protocol switches.
pub fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || name == "upgrade" || connection_tokens.iter().any(|t| t == name)
}

/// Header names listed in `Connection`, lower-case.
pub fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The headers of a message without its hop-by-hop ones.
pub fn end_to_end_headers(headers: &HeaderMap) -> HeaderMap {
    let tokens = connection_tokens(headers);
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !is_hop_by_hop(name.as_str(), &tokens) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A route's upstream.
pub struct Upstream {
    client: reqwest::Client,
    base: String,
    /// The base URL's path as the `url` crate serialises it, without a
    /// trailing `/` (empty for a bare origin): what precedes the target on
    /// the request line.
    base_path: String,
    auth: Option<(HeaderName, HeaderValue)>,
    credential: Secrets,
    timeout: Duration,
}

/// TLS for every outbound client: ring, the system roots plus `extra_ca`
/// (a private CA bundle), HTTP/1.1 only.
fn client_tls(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // A machine without system roots can still reach a private-CA upstream.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = extra_ca {
        let bad = |e: &dyn std::fmt::Display| format!("upstream_ca {}: {e}", ca.display());
        let pem = std::fs::read(ca).map_err(|e| bad(&e))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad(&"holds no PEM certificates"));
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A client for countersign's own calls (notifications, the review tool):
/// system roots, no redirects, short timeouts.
pub fn outbound_client(what: &str) -> Result<reqwest::Client, ClientError> {
    outbound_client_trusting(what, None)
}

/// [`outbound_client`], also trusting a private CA bundle (PEM).
pub fn outbound_client_trusting(
    what: &str,
    extra_ca: Option<&Path>,
) -> Result<reqwest::Client, ClientError> {
    let err = |message: String| ClientError {
        what: what.to_string(),
        message,
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(extra_ca).map_err(err)?)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| err(e.to_string()))
}

/// The call as it goes upstream: method, canonical target, body.
pub struct Outgoing<'a> {
    /// The method.
    pub method: &'a str,
    /// The canonical path and query, sent byte for byte.
    pub path_and_query: &'a str,
    /// The body.
    pub body: Bytes,
}

impl Upstream {
    /// Builds the client for a route, reading its credential now.
    pub fn new(route: &RouteConfig) -> Result<Upstream, ClientError> {
        let err = |message: String| ClientError {
            what: format!("route {}", route.name),
            message,
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(client_tls(route.upstream_ca.as_deref()).map_err(err)?)
            .connect_timeout(route.connect_timeout)
            .read_timeout(route.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .http1_only()
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut credential = Secrets::builder();
        let auth = match &route.upstream_auth {
            None => None,
            Some(a) => {
                let value = a
                    .value
                    .read()
                    .map_err(|e| err(format!("upstream_auth: {e}")))?;
                credential.value(&value);
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    err("upstream_auth: the value is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                let name =
                    HeaderName::from_bytes(a.header.as_bytes()).map_err(|e| err(e.to_string()))?;
                Some((name, value))
            }
        };
        let base_path = reqwest::Url::parse(&route.upstream)
            .map_err(|e| err(format!("upstream: {e}")))?
            .path()
            .trim_end_matches('/')
            .to_string();
        Ok(Upstream {
            client,
            base: route.upstream.clone(),
            base_path,
            auth,
            credential: credential.build(),
            timeout: route.timeout,
        })
    }

    /// The route's credential as a set to scrub (empty without one).
    pub fn credential(&self) -> &Secrets {
        &self.credential
    }

    /// The URL a request path goes to.
    pub fn url_for(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    /// The URL the client sends, checked to carry `path_and_query` (a
    /// canonical target) unchanged after the base path: the `url` crate
    /// would resolve dot segments or re-encode bytes of a target that is not
    /// canonical, and then the upstream would run something the policy did
    /// not judge. Refused instead, so nothing is sent.
    pub fn checked_url(&self, path_and_query: &str) -> Result<reqwest::Url, ForwardError> {
        let url = reqwest::Url::parse(&self.url_for(path_and_query)).map_err(|e| {
            ForwardError::Target(format!("`{path_and_query}` does not make a URL: {e}"))
        })?;
        let sent = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let decided = format!("{}{path_and_query}", self.base_path);
        if sent != decided || url.fragment().is_some() {
            return Err(ForwardError::Target(format!(
                "the request line would carry `{sent}`, not the decided `{decided}`"
            )));
        }
        Ok(url)
    }

    /// Sends the request and waits for the response headers. The request
    /// line carries `path_and_query` byte for byte ([`Upstream::checked_url`]).
    /// The agent's headers go without the [`is_proxy_owned`] ones, those its
    /// `Connection` names and those `strip` names; `set` (the policy's,
    /// which the decision contract keeps off the proxy-owned names) is
    /// added after that filter.
    pub async fn send(
        &self,
        call: Outgoing<'_>,
        agent_headers: &HeaderMap,
        strip: impl Fn(&str) -> bool,
        set: &[(HeaderName, HeaderValue)],
        action_id: &str,
    ) -> Result<reqwest::Response, ForwardError> {
        let Outgoing {
            method,
            path_and_query,
            body,
        } = call;
        let url = self.checked_url(path_and_query)?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| ForwardError::Target(format!("bad method: {e}")))?;
        let tokens = connection_tokens(agent_headers);
        let mut headers = HeaderMap::with_capacity(agent_headers.len() + 2);
        for (name, value) in agent_headers {
            let n = name.as_str();
            let dropped = is_proxy_owned(n)
                || tokens.iter().any(|t| t == n)
                || strip(n)
                || self.auth.as_ref().is_some_and(|(a, _)| a == name);
            if !dropped {
                headers.append(name.clone(), value.clone());
            }
        }
        for (name, value) in set {
            headers.append(name.clone(), value.clone());
        }
        if let Some((name, value)) = &self.auth {
            headers.insert(name.clone(), value.clone());
            // A compressed answer could carry the credential past the scrub.
            headers.insert(
                hyper::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        if let Ok(v) = HeaderValue::from_str(action_id) {
            headers.insert(HeaderName::from_static("x-countersign-action-id"), v);
        }
        let request = self.client.request(method, url).headers(headers).body(body);
        match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => Err(ForwardError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_timeout() => Err(ForwardError::Timeout(self.timeout)),
            // Without the URL: its query may carry secrets.
            Ok(Err(e)) => Err(ForwardError::Unreachable(error_chain(&e.without_url()))),
            Ok(Ok(r)) => {
                let encoding = r.headers().get(hyper::header::CONTENT_ENCODING).map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .trim()
                        .to_ascii_lowercase()
                });
                match encoding {
                    Some(e) if !self.credential.is_empty() && !e.is_empty() && e != "identity" => {
                        Err(ForwardError::Encoded(e))
                    }
                    _ => Ok(r),
                }
            }
        }
    }
}

/// reqwest's top-level message is often just "error sending request"; the
/// cause chain says what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Collects what the record keeps of a response body while it passes:
/// the first `max` bytes and a digest of all of it. The call's secrets are
/// scrubbed from the kept bytes before they are cut, so a secret that
/// straddles the cut leaves no prefix behind.
pub struct ResponseCapture {
    hasher: Sha256,
    kept: Vec<u8>,
    max: usize,
    size: u64,
    secrets: Secrets,
}

impl ResponseCapture {
    /// Starts a capture that keeps at most `max` bytes, scrubbed of `secrets`.
    pub fn new(max: u64, secrets: &Secrets) -> ResponseCapture {
        ResponseCapture {
            hasher: Sha256::new(),
            kept: Vec::new(),
            max: max as usize,
            size: 0,
            secrets: secrets.clone(),
        }
    }

    /// Feeds one chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        // Keep a secret's length past the limit: enough to scrub a secret
        // that crosses it, and at least one byte to know the body was cut.
        let keep = self.max.saturating_add(self.secrets.longest().max(1));
        let room = keep.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// The record's view of the whole response.
    pub fn finish(
        self,
        status: u16,
        headers: &HeaderMap,
        cfg: &CaptureConfig,
        mcp: bool,
    ) -> serde_json::Value {
        let kept_headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .filter(|(n, _)| cfg.response_headers.contains(n.as_str()))
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                )
            })
            .collect();
        let truncated = self.size > self.max as u64;
        let scrubbed = self.secrets.scrub_bytes(&self.kept);
        let kept = scrubbed.as_deref().unwrap_or(&self.kept);
        let body = if truncated {
            body_view_of(&kept[..kept.len().min(self.max)], true)
        } else {
            body_view_of(kept, false)
        };
        let mut response = serde_json::json!({
            "status": status,
            "headers": kept_headers,
            "body": body,
            "body_sha256": hex::encode(self.hasher.finalize()),
            "body_size": self.size,
        });
        // On an MCP route, the JSON-RPC answer (a JSON body or one event of
        // a stream) is pulled out as the call's result; other routes do not
        // pay for looking.
        if let Some(answer) = mcp.then(|| super::mcp::result_view(&response)).flatten() {
            response["jsonrpc"] = answer;
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base: &str) -> Upstream {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Upstream::new(&RouteConfig {
            name: "t".into(),
            path_prefix: "/".into(),
            host: None,
            upstream: base.into(),
            upstream_ca: None,
            upstream_auth: None,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            methods: None,
            identity_required: false,
            protocol: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn only_targets_the_client_sends_unchanged_are_sent() {
        for base in ["http://127.0.0.1:1", "http://127.0.0.1:1/api"] {
            let u = upstream(base);
            let url = u.checked_url("/v1/payouts?a=%41&b=%2B").unwrap();
            assert!(url.as_str().ends_with("/v1/payouts?a=%41&b=%2B"), "{url}");
            for bad in [
                "/v1/invoices/../payouts",
                "/v1/%2e%2e/x",
                "/v1/a b",
                "/v1/a\\b",
                "/v1/p?q='",
                "/v1#x",
            ] {
                assert!(
                    matches!(u.checked_url(bad), Err(ForwardError::Target(_))),
                    "{base} {bad}"
                );
            }
        }
    }
}
