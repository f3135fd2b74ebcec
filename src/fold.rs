//! When two different strings are one name to some reader. Names reach
//! countersign from people (reviewer names, the agent's identity headers)
//! and from programs (JSON keys, query and form field names), and the
//! readers downstream compare them loosely: Go's `encoding/json` matches a
//! struct field by Unicode case folding (`deſtination` is `destination`),
//! .NET's `OrdinalIgnoreCase` by upper-casing, people by what they see.
//! Wherever "the same name twice" matters (separation of duties, a key the
//! policy read while the upstream read its twin), names are compared in
//! [`fold`]ed form, which is coarser than any of those readers: two names
//! one of them takes for one always fold the same. A false match costs a
//! refused oddity; a missed one, a bypass.

use std::borrow::Cow;

use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::DefaultIgnorableCodePoint;
use icu_properties::CodePointSetData;

/// The folded form of `name`:
///
/// 1. invisible characters (Unicode default-ignorable code points such as
///    zero-width spaces, joiners, soft hyphens, variation selectors and
///    bidi controls) are removed;
/// 2. NFKC normalisation, so compatibility forms (full-width `Ａｌｉｃｅ`,
///    ligatures, superscripts, the Kelvin sign) become their plain letters;
/// 3. case is folded: lower-cased, upper-cased, lower-cased again, which
///    joins every letter with the letters simple case folding joins it to
///    (`ſ` with `s`, `ϑ` with `θ`, `µ` with `μ`, `ẞ` with `ß`) and also
///    `ß` with `ss` and final sigma with sigma, then NFKC again (case
///    mapping can leave decomposed sequences). (Upper-casing first would
///    leave `ẞ` apart from `ß`: it is its own upper case.) `İ` and `ı`
///    both fold to `i`, as Java's `equalsIgnoreCase` takes them.
///
/// ASCII names take a shortcut with the same result: lower-casing.
pub fn fold(name: &str) -> String {
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let visible: String = name.chars().filter(|c| !ignorable.contains(*c)).collect();
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    // `İ` lower-cases to `i` and a combining dot in full case mapping, but
    // to plain `i` in the simple mapping Java's `equalsIgnoreCase` uses.
    let composed = nfkc.normalize(&visible).replace('\u{130}', "i");
    let folded = composed.to_lowercase().to_uppercase().to_lowercase();
    let folded: Cow<'_, str> = nfkc.normalize(&folded);
    folded.into_owned()
}

/// A query or form field name as the loosest framework reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The variable the name fills: [`fold`]ed (ASP.NET binds fields
    /// without case), then as PHP names its `$_GET` and `$_POST` entries:
    /// leading spaces dropped, and `.`, space and an unclosed `[` read as
    /// `_` (`dry.run`, `dry run` and `dry_run` are one field there).
    pub base: String,
    /// The folded `[...]` after the base, if any: PHP and Rails read
    /// `a[]` and `a[x]` as entries of the array (or hash) `a`.
    pub index: Option<String>,
}

/// Reads a field name as [`Field`] says.
pub fn field(name: &str) -> Field {
    let folded = fold(name);
    let name = folded.trim_start_matches(' ');
    let (base, index) = match name.find('[') {
        Some(at) if name[at..].contains(']') => (&name[..at], Some(name[at..].to_string())),
        _ => (name, None),
    };
    Field {
        base: base.replace(['.', ' ', '['], "_"),
        index,
    }
}

#[cfg(test)]
mod tests {
    use super::{field, fold, Field};

    #[test]
    fn field_names_php_or_asp_net_read_as_one_have_one_base() {
        for name in [
            "dry_run", "dry.run", "dry run", " dry_run", "DRY_RUN", "dry[run",
        ] {
            assert_eq!(field(name).base, "dry_run", "{name:?}");
        }
        assert_eq!(
            field("Destination[]"),
            Field {
                base: "destination".into(),
                index: Some("[]".into())
            }
        );
        assert_eq!(field("a.b[c.d]").index.as_deref(), Some("[c.d]"));
        assert_ne!(field("amount").base, field("amounts").base);
    }

    #[test]
    fn letters_readers_take_for_one_fold_the_same() {
        // Each group: names Go's encoding/json (simple case folding), .NET
        // (upper-casing) or a person would read as the first.
        let groups: &[&[&str]] = &[
            &[
                "destination",
                "DESTINATION",
                "de\u{17F}tination",
                "DE\u{17F}TINATION",
            ],
            &["k", "K", "\u{212A}"],                            // Kelvin sign
            &["id", "ID", "\u{130}D", "\u{131}d", "I\u{307}d"], // Turkish i forms
            &["\u{3C9}", "\u{3A9}", "\u{2126}"],                // omega, Ohm sign
            &["\u{3B8}", "\u{398}", "\u{3D1}", "\u{3F4}"],      // theta forms
            &["\u{3BC}", "\u{39C}", "\u{B5}"],                  // mu, micro sign
            &["\u{3C3}", "\u{3A3}", "\u{3C2}"],                 // sigma, final sigma
            &["\u{1C6}", "\u{1C4}", "\u{1C5}"],                 // dž digraph cases
            &["strasse", "STRASSE", "stra\u{DF}e", "STRA\u{1E9E}E"],
            &["alice", "\u{FF41}lice", "al\u{200B}ice", "AL\u{FF29}CE"], // full-width, zero-width space
            &["jos\u{E9}", "Jose\u{301}"],
            &["\u{13A0}", "\u{AB70}"], // Cherokee
            &["\u{10D0}", "\u{1C90}"], // Georgian
        ];
        for group in groups {
            for name in group.iter().filter(|n| !n.is_empty()) {
                assert_eq!(fold(name), fold(group[0]), "{name:?} vs {:?}", group[0]);
            }
        }
        assert_ne!(fold("alice"), fold("alicia"));
        assert_ne!(fold("amount"), fold("amounts"));
    }

    #[test]
    fn ascii_shortcut_agrees_with_the_full_fold() {
        for b in 0u8..128 {
            let name = format!("a{}Z", b as char);
            // The slow path, forced by a non-ASCII invisible character.
            let slow = fold(&format!("{name}\u{200B}"));
            assert_eq!(fold(&name), slow, "{b:#x}");
        }
    }
}
