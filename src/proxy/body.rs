//! What the policy reads of a request body. JSON is parsed strictly, so
//! that every reader (the policy, the upstream, whatever library it uses)
//! gets the same values; form fields are parsed like the query. Other
//! bodies are not parsed: the policy sees `null` and the body's digest and
//! size.
//!
//! - A body whose `Content-Type` says JSON (`application/json`,
//!   `application/*+json`) must be one JSON value in UTF-8 without a byte
//!   order mark, with no two keys in one object that a lenient reader
//!   takes for one ([`crate::fold`]), with every integer
//!   within 64 bits (`i64` or `u64`) and every other number exactly a
//!   finite `f64` (no digits a double drops), no U+0000 in a string, and
//!   nothing but whitespace after it. Anything else is refused.
//! - A body of another or no content type that opens with `{` or `[`
//!   (after a BOM, blanks, and what lenient readers also skip: comments and
//!   the `)]}'` prefix) is held to the same rules: an upstream that ignores
//!   the content type could read it as JSON the policy never saw. That
//!   holds in UTF-16 and UTF-32 too (with or without a BOM), as
//!   encoding-sniffing parsers read them; such a body is not UTF-8, so it
//!   is refused.
//! - `application/x-www-form-urlencoded` bodies become name → [values], as
//!   `request.query` does; malformed escapes, bytes that do not decode to
//!   UTF-8 and `;` (a separator to some frameworks) are refused.
//! - An empty body is `null` whatever its type.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A body as the policy reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Empty, or of a type countersign does not parse.
    Opaque,
    /// A strict JSON value.
    Json(Value),
    /// Form fields, name → [values].
    Form(Map<String, Value>),
}

impl Parsed {
    /// `request.body` of the policy input.
    pub fn to_input(&self) -> Value {
        match self {
            Parsed::Opaque => Value::Null,
            Parsed::Json(v) => v.clone(),
            Parsed::Form(m) => Value::Object(m.clone()),
        }
    }

    /// `request.body_format` of the policy input: `json`, `form` or `null`.
    pub fn format(&self) -> Option<&'static str> {
        match self {
            Parsed::Opaque => None,
            Parsed::Json(_) => Some("json"),
            Parsed::Form(_) => Some("form"),
        }
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not strict JSON.
    #[error("the body is not strict JSON: {0}; send one JSON value in UTF-8 with no byte order mark, no duplicate keys, integers within 64 bits, and nothing after it")]
    Json(String),
    /// A malformed form body.
    #[error("the form body (application/x-www-form-urlencoded) is malformed: {0}")]
    Form(String),
    /// More than one `Content-Type` header.
    #[error("the request carries {0} Content-Type headers, which servers resolve differently; send exactly one")]
    RepeatedContentType(usize),
    /// A body in a content coding other than `identity`.
    #[error("the body is sent in a content coding (Content-Encoding); countersign judges bodies as they are read, and an upstream that decodes it would read what the policy could not see: send it uncompressed")]
    Encoded,
    /// A `Content-Type` that is not one media type (`type/subtype`, then
    /// `;` parameters).
    #[error("the Content-Type `{0}` is not one media type (type/subtype, then ;-separated parameters); servers cut such a value at different places, so send exactly one")]
    NotOneMediaType(String),
}

/// What the content type says about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Json,
    Form,
    Other,
}

/// The media type a `Content-Type` names. It must be one `type/subtype`
/// of token characters before any `;`: PHP cuts the value at the first
/// `;`, `,` or space, others at `;` only, so
/// `application/x-www-form-urlencoded, text/plain` would be a form to one
/// and opaque text to another.
fn declared(content_type: Option<&str>) -> Result<Declared, BodyError> {
    let Some(ct) = content_type else {
        return Ok(Declared::Other);
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match media.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => {}
        _ => return Err(BodyError::NotOneMediaType(ct.to_string())),
    }
    Ok(match media.as_str() {
        "application/json" => Declared::Json,
        "application/x-www-form-urlencoded" => Declared::Form,
        m if m.starts_with("application/") && m.ends_with("+json") => Declared::Json,
        _ => Declared::Other,
    })
}

/// Parses a body for the policy, given the values of its `Content-Type`
/// headers and its `Content-Encoding` (repeated ones joined by `, `).
/// A body in a content coding is refused: the policy cannot read it, and
/// an upstream that decodes requests (ASP.NET's request decompression,
/// Apache's deflate input filter) would read JSON the policy never saw.
pub fn parse(
    content_types: &[String],
    encoding: Option<&str>,
    body: &[u8],
) -> Result<Parsed, BodyError> {
    if content_types.len() > 1 {
        return Err(BodyError::RepeatedContentType(content_types.len()));
    }
    if body.is_empty() {
        return Ok(Parsed::Opaque);
    }
    if encoding.is_some_and(|c| !c.trim().eq_ignore_ascii_case("identity")) {
        return Err(BodyError::Encoded);
    }
    match declared(content_types.first().map(String::as_str))? {
        Declared::Json => strict_json(body).map(Parsed::Json).map_err(BodyError::Json),
        Declared::Form => form_fields(body).map(Parsed::Form).map_err(BodyError::Form),
        Declared::Other if looks_like_json(body) => {
            strict_json(body).map(Parsed::Json).map_err(BodyError::Json)
        }
        Declared::Other => Ok(Parsed::Opaque),
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether a reader that ignores the content type could take `body` for
/// JSON: it opens an object or an array ([`opens_json`]) in UTF-8 (after a
/// BOM) or, as encoding-sniffing parsers read it (RFC 4627), in UTF-16 or
/// UTF-32. Such a body must parse strictly here too (wide JSON cannot: it
/// is not UTF-8, so it is refused). Binary bodies with NULs (gzip, MP4,
/// protobuf) open with no such character and pass untouched.
fn looks_like_json(body: &[u8]) -> bool {
    // Characters, as a lenient reader decodes them; bytes that are not
    // UTF-8 count as U+FFFD, which opens nothing.
    let chars = body.utf8_chunks().flat_map(|chunk| {
        let bad = (!chunk.invalid().is_empty()).then_some(u32::from(char::REPLACEMENT_CHARACTER));
        chunk.valid().chars().map(u32::from).chain(bad)
    });
    opens_json(chars) || looks_like_wide_json(body)
}

/// What lenient readers skip before a JSON value as blank: Unicode white
/// space (JSON.NET skips `char.IsWhiteSpace`, JSON5 also `\v`, `\f`, NBSP
/// and the line separators) and the byte order mark, wherever it is.
/// (org.json skips every control character too; binary bodies start with
/// those, so they are not counted: a protobuf field's tag and length
/// followed by `{` would be refused.)
fn is_blank(unit: u32) -> bool {
    char::from_u32(unit).is_some_and(|c| c.is_whitespace() || c == '\u{FEFF}')
}

/// Whether characters (decoded from UTF-8, or UTF-16/32 units) open a JSON
/// object or array for a lenient reader: the first thing after blanks
/// ([`is_blank`]), comments (`//`
/// or `#` to the end of the line, `/* … */`) and the `)]}'` prefix some
/// APIs put before JSON against script inclusion is `{` or `[`. Gson in its
/// default lenient mode, JSON.NET and JSON5 readers skip all of those, so
/// a body the policy would see as opaque text must not open that way.
fn opens_json(units: impl Iterator<Item = u32>) -> bool {
    const NL: u32 = 0x0A;
    const CR: u32 = 0x0D;
    let mut units = units.peekable();
    loop {
        match units.next() {
            Some(0x7B | 0x5B) => return true,
            Some(u) if is_blank(u) => {}
            // `#` or `//`: a comment to the end of the line.
            Some(0x23) => {
                units.find(|u| matches!(*u, NL | CR));
            }
            Some(0x2F) => match units.next() {
                Some(0x2F) => {
                    units.find(|u| matches!(*u, NL | CR));
                }
                Some(0x2A) => loop {
                    match units.next() {
                        Some(0x2A) if units.peek() == Some(&0x2F) => {
                            units.next();
                            break;
                        }
                        Some(_) => {}
                        None => return false,
                    }
                },
                _ => return false,
            },
            // `)]}'`
            Some(0x29) => {
                if !units.by_ref().take(3).eq([0x5D, 0x7D, 0x27]) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The UTF-16/32 forms, each with or without its byte order mark: (mark,
/// bytes per code unit, big-endian).
const WIDE_FORMS: [(&[u8], usize, bool); 8] = [
    (&[0x00, 0x00, 0xFE, 0xFF], 4, true),
    (&[0xFF, 0xFE, 0x00, 0x00], 4, false),
    (&[0xFE, 0xFF], 2, true),
    (&[0xFF, 0xFE], 2, false),
    (&[], 4, true),
    (&[], 4, false),
    (&[], 2, true),
    (&[], 2, false),
];

fn looks_like_wide_json(body: &[u8]) -> bool {
    WIDE_FORMS.iter().any(|&(mark, width, big_endian)| {
        let Some(rest) = body.strip_prefix(mark) else {
            return false;
        };
        opens_json(rest.chunks_exact(width).map(|unit| {
            let n = unit.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b));
            if big_endian {
                n
            } else {
                n.swap_bytes() >> (32 - 8 * width as u32)
            }
        }))
    })
}

/// One JSON value, strictly (see the module docs).
pub fn strict_json(body: &[u8]) -> Result<Value, String> {
    if body.starts_with(BOM) {
        return Err("it starts with a byte order mark".into());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Strict::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end()
        .map_err(|e| format!("there is data after the JSON value ({e})"))?;
    check_numbers(body)?;
    Ok(value.0)
}

/// A JSON value built by a visitor that refuses duplicate keys (serde_json's
/// own `Value` silently keeps the last one; other parsers keep the first).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(b)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(n.into())))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(n.into())))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Strict, E> {
        Number::from_f64(n)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("a number is not finite"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Strict, E> {
        no_nul(s)?;
        Ok(Strict(Value::String(s.to_string())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Strict, E> {
        no_nul(&s)?;
        Ok(Strict(Value::String(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        // Keys that fold the same are duplicates too: Go's encoding/json
        // matches struct fields by Unicode case folding (`deſtination`
        // fills `Destination`), and Jackson or System.Text.Json when set
        // case-insensitive by lower- or upper-casing, the last key
        // winning; the policy would have read the other one.
        let mut folded = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            no_nul(&key)?;
            if !folded.insert(crate::fold::fold(&key)) {
                return Err(de::Error::custom(format_args!(
                    "the key `{key}` appears twice in one object (keys are compared as lenient readers compare them: without case, invisible characters or look-alike letters)"
                )));
            }
            let Strict(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Strict(Value::Object(object)))
    }
}

/// Why a string with U+0000 in it (`\u0000` in JSON, `%00` in a form) is
/// refused: readers in C end the string there, so `"BLOCKED\u0000x"` is
/// `BLOCKED` to them while a policy comparing it with `"BLOCKED"` sees
/// another name.
const NUL_REFUSED: &str = "a string contains U+0000 (NUL), where readers in C end it; leave it out";

fn no_nul<E: de::Error>(s: &str) -> Result<(), E> {
    if s.contains('\0') {
        return Err(E::custom(NUL_REFUSED));
    }
    Ok(())
}

/// Refuses integer literals beyond 64 bits, which serde_json (like many
/// parsers) would silently turn into a rounded float. Runs on a body that
/// already parsed, so every number token is well-formed.
fn check_numbers(body: &[u8]) -> Result<(), String> {
    let mut i = 0;
    let mut in_string = false;
    while i < body.len() {
        let b = body[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < body.len()
                    && matches!(body[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&body[start..i]).unwrap_or_default();
                let integer = !token.contains(['.', 'e', 'E']);
                let double = token.parse::<f64>().ok().filter(|f| f.is_finite());
                let fits = if integer {
                    token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok()
                } else {
                    double.is_some()
                };
                if !fits {
                    return Err(format!(
                        "the number {token} does not fit a 64-bit integer or a finite double; send it as a string"
                    ));
                }
                // The policy and the record read a double; an upstream that
                // reads decimals exactly (BigDecimal, .NET decimal) must not
                // read more than they did.
                if let Some(read) = double.filter(|f| !integer && !same_decimal(token, *f)) {
                    return Err(format!(
                        "the number {token} is not exactly a 64-bit double (the policy would read {read:e}, an exact decimal reader more); send it as a string, or in minor units"
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Whether the decimal literal `token` is exactly the value of `read`,
/// the double it parsed to (the double's shortest form, compared digit for
/// digit): `1000.50` and `1e3` are, `1000.00000000000000001` is not.
fn same_decimal(token: &str, read: f64) -> bool {
    let written = decimal(token);
    written.is_some() && written == decimal(&format!("{read:e}"))
}

/// A decimal literal as (negative, significant digits, power of ten): the
/// digits without leading or trailing zeros, so equal values compare
/// equal (zero is `(false, "", 0)` whatever its sign).
fn decimal(literal: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match literal.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, literal),
    };
    let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let power = exponent - fraction.len() as i64 + (digits.len() - significant.len()) as i64;
    Some((negative, significant.to_string(), power))
}

/// Parses `application/x-www-form-urlencoded` bytes (a form body, or a
/// query) into name → [values]: `&` separates fields, the first `=` splits
/// name from value, `+` is a space, escapes are decoded. A name repeated
/// exactly collects its values; two different names that one framework
/// reads as one ([`crate::fold::field`]) are refused, since the policy
/// would judge them apart.
pub fn form_fields(raw: &[u8]) -> Result<Map<String, Value>, String> {
    let mut fields: Map<String, Value> = Map::new();
    // The field as frameworks read it → the first spelling seen; and
    // whether each base was seen plain or with an index.
    let mut spellings = std::collections::HashMap::new();
    let mut bases: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for pair in raw.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        if pair.contains(&b';') {
            return Err("it contains `;`, which some frameworks treat as a separator; send it as %3B if it is data".into());
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let name = form_decode(name)?;
        let read = crate::fold::field(&name);
        let one_name = |first: &str| {
            format!(
                "the fields `{first}` and `{name}` are one name to some frameworks (which ignore case and look-alike letters, drop leading spaces, read `.`, space and `[` as `_`, or take `a[]` for `a`); send one of them"
            )
        };
        if *bases
            .entry(read.base.clone())
            .or_insert(read.index.is_some())
            != read.index.is_some()
        {
            let first = fields
                .keys()
                .find(|k| crate::fold::field(k).base == read.base)
                .cloned()
                .unwrap_or_default();
            return Err(one_name(&first));
        }
        let key = format!("{}{}", read.base, read.index.as_deref().unwrap_or(""));
        match spellings.entry(key) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(name.clone());
            }
            std::collections::hash_map::Entry::Occupied(e) if *e.get() != name => {
                return Err(one_name(e.get()));
            }
            std::collections::hash_map::Entry::Occupied(_) => {}
        }
        let value = Value::String(form_decode(value)?);
        match fields
            .entry(name)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(values) => values.push(value),
            other => *other = Value::Array(vec![value]),
        }
    }
    Ok(fields)
}

fn form_decode(raw: &[u8]) -> Result<String, String> {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => {
                    let end = raw.len().min(i + 3);
                    return Err(format!(
                        "`{}` is not a percent escape (`%` and two hex digits)",
                        String::from_utf8_lossy(&raw[i..end])
                    ));
                }
            },
            b => out.push(b),
        }
        i += 1;
    }
    let text =
        String::from_utf8(out).map_err(|_| "a field does not decode to UTF-8 text".to_string())?;
    if text.contains('\0') {
        return Err(NUL_REFUSED.to_string());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_ct() -> Vec<String> {
        vec!["application/json; charset=utf-8".into()]
    }

    #[test]
    fn wide_json_is_told_from_binary_bodies_with_nuls() {
        // UTF-16/32 JSON, with and without a byte order mark, either order.
        for wide in [
            &b"\xFF\xFE{\x00}\x00"[..],
            b"\xFE\xFF\x00[\x00]",
            b"\x00{\x00}",
            b"{\x00}\x00",
            b"\x00\x00\x00 \x00\x00\x00{",
            b"{\x00\x00\x00}\x00\x00\x00",
            b"\xFF\xFE\x00\x00[\x00\x00\x00]\x00\x00\x00",
        ] {
            assert!(looks_like_json(wide), "{wide:?}");
        }
        // However many blanks come first.
        let padded: Vec<u8> = " "
            .repeat(1000)
            .bytes()
            .chain(*b"{}")
            .flat_map(|b| [b, 0])
            .collect();
        assert!(looks_like_json(&padded));
        // gzip, an MP4 box (size 0x20: a blank as UTF-32), protobuf, a
        // UTF-16 text that is not JSON: opaque, forwarded as they are.
        for binary in [
            &b"\x1f\x8b\x08\x00\x00\x00\x00\x00"[..],
            b"\x00\x00\x00\x20ftypisom",
            b"\x08\x00\x12\x04abcd",
            b"\xFF\xFEh\x00i\x00",
        ] {
            assert!(!looks_like_json(binary), "{binary:?}");
            assert!(matches!(parse(&[], None, binary), Ok(Parsed::Opaque)));
        }
    }

    #[test]
    fn strict_json_takes_ordinary_documents() {
        let v = parse(
            &json_ct(),
            None,
            br#" {"a": [1, -2, 3.5, 1e3, "x\"y", null, true], "b": {"c": 18446744073709551615}} "#,
        )
        .unwrap();
        assert_eq!(
            v,
            Parsed::Json(
                json!({"a": [1, -2, 3.5, 1000.0, "x\"y", null, true], "b": {"c": 18446744073709551615u64}})
            )
        );
        assert_eq!(parse(&json_ct(), None, b"").unwrap(), Parsed::Opaque);
        assert_eq!(
            parse(&["application/vnd.api+json".into()], None, b"[]").unwrap(),
            Parsed::Json(json!([]))
        );
    }

    #[test]
    fn strict_json_refuses_what_parsers_read_differently() {
        for (body, why) in [
            (&b"\xEF\xBB\xBF{\"a\":1}"[..], "byte order mark"),
            (br#"{"amount": 5, "amount": 50000}"#, "appears twice"),
            (br#"{"x": {"y": [{"a": 1, "a": 2}]}}"#, "appears twice"),
            (br#"{"a":1} {"a":2}"#, "after the JSON value"),
            (br#"{"a":1}x"#, "after the JSON value"),
            (br#"{"amount": 123456789012345678901234567890}"#, "64-bit"),
            (br#"{"amount": -9223372036854775809}"#, "64-bit"),
            (br#"{"amount": 1e400}"#, ""),
            // More digits than a double holds: the policy would read 1000.
            (br#"{"amount": 1000.00000000000000001}"#, "not exactly"),
            (br#"{"amount": 3.14159265358979323846}"#, "not exactly"),
            (br#"{"amount": 1e-400}"#, "not exactly"),
            (br#"{"a": "\ud800"}"#, ""),
            (b"{\"a\": \"\xff\"}", ""),
            (br#"{"a": 1,}"#, ""),
            // Keys Go's encoding/json (Unicode case folding) or a
            // case-insensitive reader takes for one.
            (br#"{"amount": 5, "AMOUNT": 50000}"#, "appears twice"),
            (
                "{\"destination\": \"A\", \"de\u{17F}tination\": \"B\"}".as_bytes(),
                "appears twice",
            ),
            (
                br#"{"destination": "A", "de\u017ftination": "B"}"#,
                "appears twice",
            ),
            ("{\"k\": 1, \"\u{212A}\": 2}".as_bytes(), "appears twice"),
            ("{\"to\": 1, \"t\u{200B}o\": 2}".as_bytes(), "appears twice"),
            (br#"{"to": "BLOCKED\u0000x"}"#, "U+0000"),
            (br#"{"a\u0000b": 1}"#, "U+0000"),
            (br#"[["\u0000"]]"#, "U+0000"),
        ] {
            let e = parse(&json_ct(), None, body).unwrap_err();
            assert!(
                e.to_string().contains(why),
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn json_looking_bodies_of_other_types_are_held_to_the_same_rules() {
        let text = vec!["text/plain".to_string()];
        assert_eq!(
            parse(&text, None, br#"{"a":1}"#).unwrap(),
            Parsed::Json(json!({"a": 1}))
        );
        assert_eq!(
            parse(&[], None, br#"{"a":1}"#).unwrap(),
            Parsed::Json(json!({"a": 1}))
        );
        assert!(parse(&text, None, br#"{"a":1,"a":2}"#).is_err());
        assert!(parse(&[], None, b"\xEF\xBB\xBF{\"a\":1}").is_err());
        assert!(parse(&[], None, br#"{"a":1} trailing"#).is_err());
        assert!(parse(&[], None, br#"[1e999]"#).is_err());
        assert!(parse(&text, None, b"[INFO] started").is_err());
        // What lenient readers (Gson's default, JSON.NET, JSON5) skip
        // before the JSON: comments and the anti-script-inclusion prefix.
        for lenient in [
            &b"/**/{\"amount\":50000}"[..],
            b"// note\n{\"amount\":50000}",
            b"# note\r\n[1]",
            b")]}'\n{\"amount\":50000}",
            b" /* a */ /* b */\n// c\n{}",
            // Blanks beyond JSON's four: \v, \f, NBSP, U+2028, BOMs, U+3000.
            b"\x0b{\"amount\":50000}",
            b"\x0c{\"amount\":50000}",
            "\u{A0}{\"amount\":50000}".as_bytes(),
            "\u{2028}[1]".as_bytes(),
            " \u{FEFF}{}".as_bytes(),
            "\u{3000}{}".as_bytes(),
        ] {
            assert!(
                matches!(parse(&text, None, lenient), Err(BodyError::Json(_))),
                "{}",
                String::from_utf8_lossy(lenient)
            );
        }
        let wide: Vec<u8> = "/**/{\"a\":1}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert!(parse(&[], None, &wide).is_err());
        for opaque in [
            &b"pay once"[..],
            b"42 apples",
            b"\x89PNG\r\n",
            b"<xml/>",
            b"/ a path",
            b"// only a comment",
            b"/* never closed {",
            b")]} not the prefix {",
            b"# a heading\nsome text",
        ] {
            assert_eq!(
                parse(&text, None, opaque).unwrap(),
                Parsed::Opaque,
                "{}",
                String::from_utf8_lossy(opaque)
            );
        }
    }

    #[test]
    fn form_bodies_become_fields() {
        let form = vec!["application/x-www-form-urlencoded".to_string()];
        assert_eq!(
            parse(&form, None, b"amount=25000&currency=EUR&note=a+b%26c&amount=1&flag&&_method=DELETE").unwrap(),
            Parsed::Form(
                json!({"amount": ["25000", "1"], "currency": ["EUR"], "note": ["a b&c"], "flag": [""], "_method": ["DELETE"]})
                    .as_object()
                    .unwrap()
                    .clone()
            )
        );
        for bad in [
            &b"a=%zz"[..],
            b"a=%4",
            b"a=1;b=2",
            b"a=%ff",
            // One field to ASP.NET (no case) or PHP (`.` and space as `_`).
            b"amount=5&AMOUNT=50000",
            b"dry_run=1&dry.run=0",
            b"dry_run=1&dry+run=0",
            b"destination=A&de%C5%BFtination=B",
            b"to=BLOCKED%00x",
            b"a%00b=1",
            // PHP drops leading spaces and reads `a[]` as the array `a`.
            b"destination=A&+destination=B",
            b"destination=A&destination[]=B",
            b"destination[]=A&destination=B",
        ] {
            assert!(
                matches!(parse(&form, None, bad), Err(BodyError::Form(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Arrays and hashes in bracket notation are distinct fields.
        assert!(parse(
            &form,
            None,
            b"user[name]=a&user[email]=b&items[]=1&items[]=2"
        )
        .is_ok());
    }

    #[test]
    fn decimals_a_double_holds_exactly_pass() {
        for ok in [
            "19.99",
            "0.1",
            "1000.50",
            "100.10",
            "1e3",
            "1.5E-7",
            "-0.0",
            "0e5",
            "2.5e+2",
            "0.30000000000000004",
            "123456789.125",
        ] {
            let body = format!(r#"{{"amount": {ok}}}"#);
            assert!(parse(&json_ct(), None, body.as_bytes()).is_ok(), "{ok}");
        }
        assert_eq!(decimal("1000.00"), decimal("1e3"));
        assert_eq!(decimal("-0.0"), decimal("0"));
        assert_ne!(decimal("1000.00000000000000001"), decimal("1e3"));
    }

    #[test]
    fn bodies_in_a_content_coding_are_refused() {
        for coding in ["gzip", "deflate, gzip", "br", "x-custom"] {
            assert_eq!(
                parse(&json_ct(), Some(coding), b"\x1f\x8b"),
                Err(BodyError::Encoded)
            );
            assert!(parse(&[], Some(coding), b"anything").is_err());
        }
        assert!(parse(&json_ct(), Some("identity"), b"{}").is_ok());
        assert!(
            parse(&json_ct(), Some("gzip"), b"").is_ok(),
            "nothing to read"
        );
    }

    #[test]
    fn a_content_type_names_one_media_type() {
        for bad in [
            "application/x-www-form-urlencoded, text/plain",
            "application/x-www-form-urlencoded x",
            "application/json,",
            "text/plain application/json",
            "json",
            "/json",
            "",
        ] {
            assert_eq!(
                parse(&[bad.to_string()], None, b"a=1"),
                Err(BodyError::NotOneMediaType(bad.to_string())),
                "{bad:?}"
            );
        }
        for good in [
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "text/plain ;x=y",
        ] {
            assert!(parse(&[good.to_string()], None, b"{}").is_ok(), "{good:?}");
        }
    }

    #[test]
    fn one_content_type_only() {
        let two = vec!["text/plain".to_string(), "application/json".to_string()];
        assert_eq!(
            parse(&two, None, b"{}"),
            Err(BodyError::RepeatedContentType(2))
        );
    }
}
