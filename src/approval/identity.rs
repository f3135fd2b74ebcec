//! Who is who, for separation of duties (docs/reviewers.md): a reviewer may not
//! approve an action when they are the agent or the person it acts for,
//! as declared by the agent headers or as verified ([`crate::identity`]).
//! Names reach countersign from different places (the config's reviewer
//! names and aliases, the agent's own headers), typed by different people,
//! so they are compared in one normal form rather than byte for byte.
//!
//! The comparison is deliberately literal beyond that normal form: the only
//! way to say that two different strings are one person is an `aliases`
//! entry on the reviewer. In particular `alice@corp` is not taken to be
//! reviewer `alice` because its part before `@` is `alice`: identities come
//! in many shapes (`alice@corp`, `CORP\alice`, `spiffe://corp/user/alice`,
//! `alice+ops@corp`), a rule for one shape gives a false sense of cover for
//! the others, and it would also tie `alice` to every `alice@` of every
//! other domain with no way to undo it. Aliases are explicit, reviewed with
//! the config, and named in the refusal that cites them.

/// The normal form two names are compared in: [`crate::fold::fold`]
/// (invisible characters removed, NFKC, case folded), then leading and
/// trailing white space trimmed and inner runs of white space made one
/// space.
pub fn normalise(name: &str) -> String {
    crate::fold::fold(name)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a reviewer counts as a party to the action: which of their names
/// matched which of the action's identities. Shown in the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The reviewer's name or alias that matched, as configured.
    pub reviewer_identity: String,
    /// `agent`, `on_behalf_of`, `verified subject` or `verified actor`.
    pub field: &'static str,
    /// The action's identity that matched, as the agent sent it.
    pub action_identity: String,
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is the same person as the action's {} `{}`",
            self.reviewer_identity, self.field, self.action_identity
        )
    }
}

/// Whether the reviewer (their configured name or any alias) is one of the
/// action's parties (`(field, identity)`: the agent and the person it acts
/// for, declared and verified), after [`normalise`]. Returns the first match.
pub fn same_person(
    reviewer_name: &str,
    reviewer_aliases: &[String],
    parties: &[(&'static str, Option<&str>)],
) -> Option<Match> {
    let parties: Vec<(&'static str, &str, String)> = parties
        .iter()
        .copied()
        .filter_map(|(field, id)| id.map(|id| (field, id, normalise(id))))
        // An empty identity (a header sent blank) names nobody.
        .filter(|(_, _, n)| !n.is_empty())
        .collect();
    std::iter::once(reviewer_name)
        .chain(reviewer_aliases.iter().map(String::as_str))
        .find_map(|identity| {
            let mine = normalise(identity);
            parties
                .iter()
                .find(|(_, _, theirs)| *theirs == mine)
                .map(|(field, id, _)| Match {
                    reviewer_identity: identity.to_string(),
                    field,
                    action_identity: id.to_string(),
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_the_same_normalise_the_same() {
        for variant in [
            "alice",
            "Alice",
            " alice ",
            "ALICE",
            "\u{FF21}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}", // full-width Ａｌｉｃｅ
            "al\u{200B}ice",                            // zero-width space
            "\u{FEFF}alice\u{00AD}",                    // BOM, soft hyphen
            "\talice\n",
        ] {
            assert_eq!(normalise(variant), "alice", "{variant:?}");
        }
        assert_eq!(normalise("Jos\u{0065}\u{0301}"), normalise("Jos\u{00E9}"));
        assert_eq!(normalise("STRASSE"), normalise("straße"));
        assert_eq!(normalise("  Alice   Smith "), "alice smith");
        assert_ne!(normalise("alice"), normalise("alicia"));
        assert_ne!(normalise("alice"), normalise("alice@corp"));
    }

    #[test]
    fn a_reviewer_matches_through_name_or_alias_only() {
        let aliases = vec!["Alice@Corp".to_string()];
        let parties = |agent, obo| [("agent", agent), ("on_behalf_of", obo)];
        let m = same_person(
            "alice",
            &aliases,
            &parties(Some("ap-agent-7"), Some("alice@corp")),
        )
        .unwrap();
        assert_eq!(m.reviewer_identity, "Alice@Corp");
        assert_eq!(m.field, "on_behalf_of");
        assert!(same_person("alice", &[], &parties(Some("ALICE"), None)).is_some());
        assert!(
            same_person(
                "alice",
                &[],
                &parties(Some("ap-agent-7"), Some("alice@corp"))
            )
            .is_none(),
            "an email's local part is not the reviewer without an alias"
        );
        assert!(same_person("alice", &[], &parties(None, None)).is_none());
        assert!(
            same_person("alice", &[" ".into()], &parties(Some(""), Some(" "))).is_none(),
            "blank identities name nobody"
        );
        let verified = [
            ("on_behalf_of", Some("bob")),
            ("verified subject", Some("alice")),
        ];
        let m = same_person("alice", &[], &verified).unwrap();
        assert_eq!(m.field, "verified subject", "the proven name counts too");
    }
}
