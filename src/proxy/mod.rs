//! The proxy listener's request path: [`pipeline`] walks one call from
//! arrival to answer; [`target`] puts the request target in its one
//! canonical form; [`receive`] takes in request bodies within the shared
//! [`budget`]; [`body`] reads them for the policy; [`forward`] talks to
//! upstreams; [`mcp`] reads and answers MCP calls on `protocol: mcp` routes;
//! [`hang_up`] keeps the record whole when an agent hangs up mid-call.

pub mod body;
pub mod budget;
pub mod forward;
pub mod hang_up;
pub mod hold;
pub mod mcp;
pub mod pipeline;
pub mod receive;
pub mod target;

use crate::config::RouteConfig;
use forward::Upstream;

/// A route with its ready upstream client.
pub struct Route {
    /// The validated route config.
    pub config: RouteConfig,
    /// Its upstream client.
    pub upstream: Upstream,
}

impl Route {
    /// Whether this route takes a call to `host` and the canonical `path`
    /// ([`target::Target::path`]). A prefix matches whole path segments:
    /// `/v1/payouts` takes `/v1/payouts/7`, not `/v1/payoutsx`.
    pub fn matches(&self, host: &str, path: &str) -> bool {
        if let Some(h) = &self.config.host {
            if h != host {
                return false;
            }
        }
        let prefix = self.config.path_prefix.as_str();
        match path.strip_prefix(prefix) {
            Some(rest) => {
                prefix.ends_with('/')
                    || rest.is_empty()
                    || rest.starts_with('/')
                    || rest.starts_with('?')
            }
            None => false,
        }
    }

    /// Whether this route takes `method` (case-sensitive, as HTTP methods are).
    pub fn allows_method(&self, method: &str) -> bool {
        match &self.config.methods {
            Some(listed) => listed.iter().any(|m| m == method),
            None => STANDARD_METHODS.contains(&method),
        }
    }

    /// The methods this route takes, for the `Allow` header of a 405.
    pub fn allowed_methods(&self) -> Vec<String> {
        match &self.config.methods {
            Some(listed) => listed.clone(),
            None => STANDARD_METHODS.iter().map(|m| m.to_string()).collect(),
        }
    }
}

/// The methods a route takes when it does not list its own: the standard
/// ones that act on a resource. `TRACE` (echoes the request, headers and
/// all), `CONNECT` (opens a tunnel) and methods outside RFC 9110 are not
/// among them.
pub const STANDARD_METHODS: [&str; 7] =
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
