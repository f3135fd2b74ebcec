//! The one canonical request target: the exact path and query that routes
//! the call, that the policy judges, that the record keeps and that goes on
//! the upstream's request line. Targets that servers read differently are
//! refused instead of guessed at.
//!
//! The canonical form, in the order it is built:
//!
//! 1. Percent escapes are checked (`%` and two hex digits). An escape of an
//!    unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded; every other
//!    escape keeps its byte with upper-case hex (`%2b` → `%2B`).
//! 2. A byte outside RFC 3986's set for that part is percent-encoded: in the
//!    path, unreserved, sub-delims except `;`, `:`, `@` and `/`; in the
//!    query the same plus `?`, but `'` is encoded (`%27`) because the `url`
//!    crate the upstream client uses encodes it in queries.
//! 3. Empty segments (`//`) are merged into one `/`.
//! 4. Dot segments, plain or escaped (`.`, `%2e`, `.%2E`, ...), are removed
//!    as RFC 3986 §5.2.4 does.
//! 5. An empty query (`/a?`) is dropped.
//!
//! The result is a fixed point of the `url` crate's parser, so the
//! forwarding client sends it byte for byte (checked again in
//! [`crate::proxy::forward::Upstream::send`]).
//!
//! Refused (400, [`TargetError`]): an encoded slash (`%2F`); a backslash in
//! the path, raw or `%5C`; control bytes raw or escaped (`%00`-`%1F`,
//! `%7F`); invalid escapes; a double-encoded escape in the path (`%252e`);
//! a `..` that climbs out of the first segment; `//` and `..` in the same
//! path (servers resolve them in different orders); `;` in the path (Java
//! servers strip "matrix parameters" and read `..;` as `..`) or in the
//! query (some frameworks split parameters on it); escapes that do not
//! decode to UTF-8; `*` (asterisk-form); `host:port` (authority-form); an
//! absolute-form target whose scheme or authority disagrees with the
//! listener or the `Host` header, or that carries user info; a repeated
//! `Host` header. A fragment (`#...`) never reaches countersign: the HTTP
//! parser cuts it off, so it is neither judged nor forwarded.

use hyper::header::{HeaderMap, HOST};
use hyper::http::uri::Authority;
use hyper::Uri;
use serde_json::{Map, Value};

use super::body::form_fields;

/// A request target in canonical form (see the module docs). The only way
/// to get one is [`Target::of`] or [`Target::canonical`], so holding a
/// `Target` means the string was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    path: String,
    query: Option<String>,
    /// The query as name → [values], decoded (for the policy and the record).
    fields: Map<String, Value>,
}

/// Why a target was refused. Each message says what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `OPTIONS *`.
    #[error("the target `*` addresses the server as a whole; countersign forwards requests for resources only")]
    Asterisk,
    /// `CONNECT host:port`.
    #[error(
        "the target is a bare `host:port` (authority-form); countersign does not open tunnels"
    )]
    AuthorityForm,
    /// An absolute-form target that does not describe this listener.
    #[error("the absolute-form target {0}; send the path alone (origin-form) with a Host header")]
    AbsoluteForm(String),
    /// A `Host` header that is not `host` or `host:port`.
    #[error("the Host header is not a host (`name` or `name:port`); user info and other text never belong there")]
    BadHost,
    /// More than one `Host` header.
    #[error("the request carries {0} Host headers; send exactly one")]
    RepeatedHost(usize),
    /// `%2F` in the path.
    #[error("the path contains an encoded slash (%2F), which servers disagree on; send `/` where a segment ends, or restructure the call")]
    EncodedSlash,
    /// `\` or `%5C` in the path.
    #[error(
        "the path contains a backslash (raw or %5C), which some servers read as `/`; remove it"
    )]
    Backslash,
    /// A control byte, raw or escaped.
    #[error("the target contains the control byte {0}; control bytes are never valid in a request target")]
    ControlByte(String),
    /// `%` not followed by two hex digits.
    #[error("the target contains `{0}`, which is not a percent escape (`%` and two hex digits); send a literal % as %25")]
    InvalidEscape(String),
    /// `%25` followed by two hex digits in the path.
    #[error("the path contains the double-encoded escape `{0}`, which servers that decode twice read differently; send the character once-encoded")]
    DoubleEncoded(String),
    /// A `..` that removes the first segment or climbs above the root.
    #[error(
        "a `..` segment climbs out of the path's first segment; send the path without dot segments"
    )]
    AboveRoot,
    /// `//` and `..` in one path.
    #[error("the path mixes empty segments (`//`) with `..`, which servers resolve in different orders; send the path without them")]
    EmptyAndDotSegments,
    /// `;` in the path.
    #[error("the path contains `;`, which Java servers treat as a matrix parameter (and `..;` as `..`); send it as %3B if it is data")]
    PathSemicolon,
    /// `;` in the query.
    #[error("the query contains `;`, which some frameworks treat as a parameter separator; send it as %3B if it is data, `&` between parameters")]
    QuerySemicolon,
    /// `#` inside a target (unreachable through hyper, which cuts fragments).
    #[error("the target contains a fragment (`#`); fragments are never sent to servers")]
    Fragment,
    /// Escapes that decode to bytes that are not UTF-8.
    #[error(
        "the {0} has escapes that do not decode to UTF-8 text (for example %C0%AE); send UTF-8"
    )]
    NotUtf8(&'static str),
    /// A query that does not parse as name=value pairs.
    #[error("the query is malformed: {0}")]
    Query(String),
}

/// Which part of the target a byte is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Path,
    Query,
}

impl Target {
    /// The canonical target of a request as hyper parsed it, from the
    /// listener's scheme (`http` or `https`): origin-form (`/a?b`) or an
    /// absolute-form (`http://host/a?b`) that names this listener's scheme
    /// and the request's Host.
    pub fn of(uri: &Uri, headers: &HeaderMap, scheme: &str) -> Result<Target, TargetError> {
        let hosts = headers.get_all(HOST).iter().count();
        if hosts > 1 {
            return Err(TargetError::RepeatedHost(hosts));
        }
        // The Host routes the call (`match.host`) and is recorded: it must
        // be a host, never user info or other text.
        if let Some(host) = headers.get(HOST) {
            let authority = host.to_str().ok().and_then(|h| h.parse::<Authority>().ok());
            if authority.is_none_or(|a| a.as_str().contains('@')) {
                return Err(TargetError::BadHost);
            }
        }
        if uri.path() == "*" {
            return Err(TargetError::Asterisk);
        }
        match (uri.scheme_str(), uri.authority()) {
            (None, Some(_)) => return Err(TargetError::AuthorityForm),
            (Some(s), Some(authority)) => absolute_form(s, authority, headers, scheme)?,
            (Some(_), None) => {
                return Err(TargetError::AbsoluteForm("has a scheme but no host".into()))
            }
            (None, None) => {}
        }
        Target::canonical(uri.path(), uri.query())
    }

    /// The canonical form of a path and an optional query (without `?`).
    pub fn canonical(path: &str, query: Option<&str>) -> Result<Target, TargetError> {
        let path = if path.is_empty() { "/" } else { path };
        if !path.starts_with('/') {
            return Err(TargetError::AbsoluteForm(
                "has a path that does not start with `/`".into(),
            ));
        }
        let escaped = normalise(path.as_bytes(), Part::Path)?;
        let path = remove_dot_segments(&escaped)?;
        if std::str::from_utf8(&decode(&path)).is_err() {
            return Err(TargetError::NotUtf8("path"));
        }
        let query = match query {
            None => None,
            Some(q) => {
                let q = normalise(q.as_bytes(), Part::Query)?;
                if std::str::from_utf8(&decode(&q)).is_err() {
                    return Err(TargetError::NotUtf8("query"));
                }
                Some(q).filter(|q| !q.is_empty())
            }
        };
        let fields = match &query {
            Some(q) => form_fields(q.as_bytes()).map_err(TargetError::Query)?,
            None => Map::new(),
        };
        Ok(Target {
            path,
            query,
            fields,
        })
    }

    /// The canonical path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The canonical query, without `?`; `None` when there is none (or it
    /// was empty).
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The query as name → [values], percent-decoded, `+` as a space.
    pub fn query_fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Path and query: the exact request-target the upstream receives
    /// (after the upstream's base path).
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Checks an absolute-form target against the listener and the Host header.
fn absolute_form(
    scheme: &str,
    authority: &Authority,
    headers: &HeaderMap,
    listener: &str,
) -> Result<(), TargetError> {
    if !scheme.eq_ignore_ascii_case(listener) {
        return Err(TargetError::AbsoluteForm(format!(
            "says `{scheme}` but this listener speaks {listener}"
        )));
    }
    if authority.as_str().contains('@') {
        return Err(TargetError::AbsoluteForm(
            "carries user info (`user@`); credentials never belong in a target".into(),
        ));
    }
    let Some(host) = headers.get(HOST) else {
        return Ok(());
    };
    let host = host
        .to_str()
        .ok()
        .and_then(|h| h.parse::<Authority>().ok())
        .ok_or_else(|| {
            TargetError::AbsoluteForm("comes with a Host header that is not a host".into())
        })?;
    let default_port = if listener == "https" { 443 } else { 80 };
    let same = host.host().eq_ignore_ascii_case(authority.host())
        && host.port_u16().unwrap_or(default_port) == authority.port_u16().unwrap_or(default_port);
    if same {
        Ok(())
    } else {
        Err(TargetError::AbsoluteForm(format!(
            "names `{authority}` but the Host header says `{host}`"
        )))
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes a canonical path or query keeps as they are; everything else is
/// percent-encoded. `;` never gets here (it is refused first).
fn is_kept(b: u8, part: Part) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@' | b'/'
        )
        || (part == Part::Path && b == b'\'')
        || (part == Part::Query && b == b'?')
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The escape at `raw[i]` (which is `%`), decoded.
fn escape_at(raw: &[u8], i: usize) -> Option<u8> {
    Some(hex(*raw.get(i + 1)?)? * 16 + hex(*raw.get(i + 2)?)?)
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Steps 1 and 2 of the canonical form, with the byte-level refusals.
fn normalise(raw: &[u8], part: Part) -> Result<String, TargetError> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let Some(v) = escape_at(raw, i) else {
                let end = raw.len().min(i + 3);
                return Err(TargetError::InvalidEscape(
                    String::from_utf8_lossy(&raw[i..end]).into_owned(),
                ));
            };
            if is_control(v) {
                return Err(TargetError::ControlByte(format!("%{v:02X}")));
            }
            if part == Part::Path {
                match v {
                    b'/' => return Err(TargetError::EncodedSlash),
                    b'\\' => return Err(TargetError::Backslash),
                    b'%' if escape_at(raw, i + 2).is_some() => {
                        return Err(TargetError::DoubleEncoded(
                            String::from_utf8_lossy(&raw[i..i + 5]).into_owned(),
                        ))
                    }
                    _ => {}
                }
            }
            if is_unreserved(v) {
                out.push(v as char);
            } else {
                push_escape(&mut out, v);
            }
            i += 3;
            continue;
        }
        if is_control(b) {
            return Err(TargetError::ControlByte(format!("0x{b:02X}")));
        }
        match (b, part) {
            (b'\\', Part::Path) => return Err(TargetError::Backslash),
            (b';', Part::Path) => return Err(TargetError::PathSemicolon),
            (b';', Part::Query) => return Err(TargetError::QuerySemicolon),
            (b'#', _) => return Err(TargetError::Fragment),
            _ => {}
        }
        if is_kept(b, part) {
            out.push(b as char);
        } else {
            push_escape(&mut out, b);
        }
        i += 1;
    }
    Ok(out)
}

/// Steps 3 and 4: merges `//`, removes dot segments, refuses a climb out of
/// the first segment. `path` starts with `/` and has no escaped dots left.
fn remove_dot_segments(path: &str) -> Result<String, TargetError> {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let inner_empty = segments[..last].iter().any(|s| s.is_empty());
    if inner_empty && segments.contains(&"..") {
        return Err(TargetError::EmptyAndDotSegments);
    }
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | "" => trailing_slash = i == last,
            ".." => {
                // Removing the first segment (or climbing above the root)
                // leaves whatever the first segment named: refused.
                if kept.len() <= 1 {
                    return Err(TargetError::AboveRoot);
                }
                kept.pop();
                trailing_slash = i == last;
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Percent-decodes an already normalised string (every `%` starts a valid
/// escape).
fn decode(s: &str) -> Vec<u8> {
    let raw = s.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (raw[i], escape_at(raw, i)) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(target: &str) -> Result<String, TargetError> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        Target::canonical(path, query).map(|t| t.path_and_query())
    }

    #[test]
    fn spellings_of_one_path_have_one_canonical_form() {
        for spelling in [
            "/v1/payouts",
            "/v1/invoices/../payouts",
            "/v1/invoices/%2e%2e/payouts",
            "/v1/invoices/%2E%2E/payouts",
            "/v1/invoices/.%2E/payouts",
            "/v1/invoices/%2e./payouts",
            "/v1/./payouts",
            "/v1/%2e/payouts",
            "/v1//payouts",
            "//v1///payouts",
            "/%761/payouts",
            "/%76%31/%70%61%79%6f%75%74%73",
            "/v1/pa%79outs",
            "/v1/pa%79ou%74s",
            "/v1/payouts/x/..",
            "/./v1/payouts",
            "/v1/payouts?",
        ] {
            let got = canon(spelling).unwrap_or_else(|e| panic!("{spelling}: {e}"));
            let want = if spelling.ends_with("/..") {
                "/v1/payouts/"
            } else {
                "/v1/payouts"
            };
            assert_eq!(got, want, "{spelling}");
        }
    }

    #[test]
    fn escapes_keep_their_byte_with_upper_case_hex() {
        assert_eq!(canon("/v1/caf%c3%a9").unwrap(), "/v1/caf%C3%A9");
        assert_eq!(canon("/v1/a%2bb").unwrap(), "/v1/a%2Bb");
        assert_eq!(canon("/v1/a%3bb").unwrap(), "/v1/a%3Bb");
        assert_eq!(canon("/v1/50%25").unwrap(), "/v1/50%25");
        assert_eq!(
            canon("/v1/p?a=%41&b=%2b&c=%2F").unwrap(),
            "/v1/p?a=A&b=%2B&c=%2F"
        );
    }

    #[test]
    fn bytes_outside_the_rfc_set_are_encoded() {
        assert_eq!(canon("/v1/{x}").unwrap(), "/v1/%7Bx%7D");
        assert_eq!(
            canon("/v1/\"[]|^`<> ").unwrap(),
            "/v1/%22%5B%5D%7C%5E%60%3C%3E%20"
        );
        assert_eq!(canon("/v1/café").unwrap(), "/v1/caf%C3%A9");
        assert_eq!(canon("/v1/it's").unwrap(), "/v1/it's");
        assert_eq!(canon("/v1/p?q='x'").unwrap(), "/v1/p?q=%27x%27");
        assert_eq!(canon("/v1/p?q=a\\b").unwrap(), "/v1/p?q=a%5Cb");
        assert_eq!(
            canon("/v1/p?q={1}&r=/?:@").unwrap(),
            "/v1/p?q=%7B1%7D&r=/?:@"
        );
    }

    #[test]
    fn trailing_slashes_and_root() {
        assert_eq!(canon("/").unwrap(), "/");
        assert_eq!(canon("").unwrap(), "/");
        assert_eq!(canon("//").unwrap(), "/");
        assert_eq!(canon("/.").unwrap(), "/");
        assert_eq!(canon("/v1/").unwrap(), "/v1/");
        assert_eq!(canon("/v1//").unwrap(), "/v1/");
        assert_eq!(canon("/v1/.").unwrap(), "/v1/");
        assert_eq!(canon("/v1/payouts/.").unwrap(), "/v1/payouts/");
        assert_eq!(canon("/.../x").unwrap(), "/.../x");
    }

    #[test]
    fn targets_servers_read_differently_are_refused() {
        use TargetError::*;
        for (target, want) in [
            ("/v1/invoices%2F..%2Fpayouts", EncodedSlash),
            ("/v1/a%2fb", EncodedSlash),
            ("/v1\\payouts", Backslash),
            ("/v1/%5Cpayouts", Backslash),
            ("/v1/%5c..%5cpayouts", Backslash),
            ("/v1/payouts%00.json", ControlByte("%00".into())),
            ("/v1/a%1fb", ControlByte("%1F".into())),
            ("/v1/a%7Fb", ControlByte("%7F".into())),
            ("/v1/p?a=%0a", ControlByte("%0A".into())),
            ("/v1/a\tb", ControlByte("0x09".into())),
            ("/v1/%zz", InvalidEscape("%zz".into())),
            ("/v1/%4", InvalidEscape("%4".into())),
            ("/v1/p?a=%", InvalidEscape("%".into())),
            ("/v1/%252e%252e/x", DoubleEncoded("%252e".into())),
            ("/..", AboveRoot),
            ("/../..", AboveRoot),
            ("/v1/..", AboveRoot),
            ("/v1/../payouts", AboveRoot),
            ("/v1/payouts/../../etc", AboveRoot),
            ("/v1/%2e%2e/%2e%2e/etc", AboveRoot),
            ("/v1//../payouts", EmptyAndDotSegments),
            ("/v1/payouts;x=1", PathSemicolon),
            ("/v1/invoices/..;/payouts", PathSemicolon),
            ("/v1/p?a=1;b=2", QuerySemicolon),
            ("/v1/a#b", Fragment),
            ("/v1/%c0%ae%c0%ae/x", NotUtf8("path")),
            ("/v1/p?a=%ff", NotUtf8("query")),
        ] {
            assert_eq!(canon(target), Err(want), "{target}");
        }
    }

    #[test]
    fn canonical_targets_are_fixed_points() {
        for target in [
            "/v1/invoices/../payouts?a=%41",
            "/v1/%7Bx%7D/caf%C3%A9?q=%27x%27&r=a+b",
            "/v1/it's/(a)/*/!/$/&/+/,/=/:/@/~/?x=/?:@!$&()*+,=",
            "/v1/%22%5B%5D%7C%5E%60%3C%3E%20",
        ] {
            let once = canon(target).unwrap();
            assert_eq!(canon(&once).unwrap(), once, "{target}");
        }
    }

    /// The forwarding client (reqwest, on the `url` crate) must send the
    /// canonical target unchanged, after any upstream base path.
    #[test]
    fn the_url_crate_keeps_canonical_targets_unchanged() {
        let mut all: Vec<u8> = (0x21..0x7f).collect();
        all.extend_from_slice("é€".as_bytes());
        let raw_path = format!(
            "/v1/{}",
            String::from_utf8_lossy(&all).replace(['\\', ';', '#', '?', '%'], "")
        );
        let raw_query = String::from_utf8_lossy(&all).replace([';', '#', '%'], "");
        let t = Target::canonical(&raw_path, Some(&raw_query)).unwrap();
        for base in ["http://upstream:8080", "https://upstream/api/v2"] {
            let url = reqwest::Url::parse(&format!("{base}{}", t.path_and_query())).unwrap();
            let base_path = reqwest::Url::parse(base)
                .unwrap()
                .path()
                .trim_end_matches('/')
                .to_string();
            assert_eq!(url.path(), format!("{base_path}{}", t.path()), "{base}");
            assert_eq!(url.query(), t.query(), "{base}");
            // And http's parser (the request line reqwest writes) agrees.
            let uri: Uri = url.as_str().parse().unwrap();
            assert_eq!(
                uri.path_and_query().unwrap().as_str(),
                format!("{base_path}{}", t.path_and_query())
            );
        }
    }

    fn of(uri: &str, host: Option<&str>, scheme: &str) -> Result<Target, TargetError> {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(HOST, h.parse().unwrap());
        }
        Target::of(&uri.parse().unwrap(), &headers, scheme)
    }

    #[test]
    fn request_forms() {
        let t = of("/v1/x/../y?a=1", Some("payments"), "http").unwrap();
        assert_eq!(t.path_and_query(), "/v1/y?a=1");
        let t = of("http://payments/v1/x/../y", Some("payments:80"), "http").unwrap();
        assert_eq!(t.path_and_query(), "/v1/y");
        assert_eq!(of("http://payments", None, "http").unwrap().path(), "/");
        assert_eq!(
            of("*", Some("payments"), "http"),
            Err(TargetError::Asterisk)
        );
        assert_eq!(
            of("payments:443", Some("payments"), "http"),
            Err(TargetError::AuthorityForm)
        );
        for (uri, host, scheme) in [
            ("https://payments/v1", Some("payments"), "http"),
            ("http://other/v1", Some("payments"), "http"),
            ("http://payments:8080/v1", Some("payments"), "http"),
            ("http://u:p@payments/v1", Some("payments"), "http"),
        ] {
            assert!(
                matches!(of(uri, host, scheme), Err(TargetError::AbsoluteForm(_))),
                "{uri}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.append(HOST, "a".parse().unwrap());
        headers.append(HOST, "b".parse().unwrap());
        assert_eq!(
            Target::of(&"/v1".parse().unwrap(), &headers, "http"),
            Err(TargetError::RepeatedHost(2))
        );
        for bad in ["user:pass@payments:80", "user@payments", "pay ments", ""] {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, bad.parse().unwrap());
            assert_eq!(
                Target::of(&"/v1".parse().unwrap(), &headers, "http"),
                Err(TargetError::BadHost),
                "{bad:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "payments:8080".parse().unwrap());
        assert!(Target::of(&"/v1".parse().unwrap(), &headers, "http").is_ok());
    }
}
