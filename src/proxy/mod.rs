//! The proxy listener's request path: [`pipeline`] walks one call from
//! arrival to answer; [`body`] receives request bodies within the shared
//! [`budget`]; [`forward`] talks to upstreams.

pub mod body;
pub mod budget;
pub mod forward;
pub mod hold;
pub mod pipeline;

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
    /// Whether this route takes a call to `host` and `path`. A prefix matches
    /// whole path segments: `/v1/payouts` takes `/v1/payouts/7`, not `/v1/payoutsx`.
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
}
