//! The `audit.store` connection string: parsed, checked for an inline
//! password, and split into what the PostgreSQL client understands and the
//! `sslmode` countersign enforces itself (the client knows only disable,
//! prefer and require; verify-ca and verify-full are ours).

use std::str::FromStr;

/// How the connection is protected, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, unverified; plain otherwise (libpq's default).
    Prefer,
    /// TLS, the certificate not verified (unless a CA file is given: then as `VerifyCa`).
    Require,
    /// TLS, the certificate chains to the CA file; the host name is not checked.
    VerifyCa,
    /// TLS, the certificate chains to a trusted root and names the host.
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    fn parse(name: &str) -> Result<SslMode, String> {
        SslMode::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                format!(
                    "the connection string's sslmode {name:?} is not one of disable, prefer, \
                     require, verify-ca, verify-full"
                )
            })
    }
}

/// A connection string taken apart (its Debug hides any password).
#[derive(Debug)]
pub struct Dsn {
    /// Everything but the password (which never comes from the string).
    pub config: postgres::Config,
    /// The protection asked for (`prefer` when the string says nothing).
    pub ssl_mode: SslMode,
}

/// Parses a connection string (`postgres://user@host:5432/db?sslmode=...` or
/// libpq's `host=... user=...` form) and refuses what countersign must not
/// accept. The error names what is wrong and never repeats the string.
pub fn parse(dsn: &str) -> Result<Dsn, String> {
    let (rest, mode) = take_sslmode(dsn);
    let ssl_mode = match mode {
        Some(name) => SslMode::parse(&name)?,
        None => SslMode::Prefer,
    };
    let config = postgres::Config::from_str(&rest).map_err(|e| {
        format!(
            "the connection string does not parse: {}",
            super::explain(&e)
        )
    })?;
    if config.get_password().is_some() {
        return Err(
            "the connection string holds a password, and a secret never goes in the \
                    config: remove it and set audit.password_env or audit.password_file"
                .into(),
        );
    }
    if config.get_hosts().is_empty() {
        return Err(
            "the connection string names no host (postgres://USER@HOST:5432/DATABASE)".into(),
        );
    }
    if config.get_user().is_none() {
        return Err(
            "the connection string names no user (postgres://USER@HOST:5432/DATABASE)".into(),
        );
    }
    Ok(Dsn { config, ssl_mode })
}

/// Removes the `sslmode` parameter from either form of connection string,
/// returning the rest and the mode's value. A string it cannot take apart
/// is returned whole, for the client's parser to report.
fn take_sslmode(dsn: &str) -> (String, Option<String>) {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        take_from_url(dsn)
    } else {
        take_from_keywords(dsn)
    }
}

fn take_from_url(dsn: &str) -> (String, Option<String>) {
    let Some((base, query)) = dsn.split_once('?') else {
        return (dsn.to_string(), None);
    };
    let mut mode = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match form_urlencoded::parse(pair.as_bytes()).next() {
            Some((k, v)) if k == "sslmode" => mode = Some(v.into_owned()),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, mode)
}

/// libpq's keyword form: `key = value` pairs separated by white space, a
/// value either bare or single-quoted with backslash escapes.
fn take_from_keywords(dsn: &str) -> (String, Option<String>) {
    let b = dsn.as_bytes();
    let mut i = 0;
    let mut mode = None;
    let mut rest = String::new();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        let start = skip_ws(i);
        if start >= b.len() {
            break;
        }
        let mut j = start;
        while j < b.len() && b[j] != b'=' && !b[j].is_ascii_whitespace() {
            j += 1;
        }
        let key = &dsn[start..j];
        j = skip_ws(j);
        if j >= b.len() || b[j] != b'=' {
            return (dsn.to_string(), None);
        }
        j = skip_ws(j + 1);
        let mut value = String::new();
        if j < b.len() && b[j] == b'\'' {
            j += 1;
            let mut closed = false;
            while j < b.len() {
                match b[j] {
                    b'\\' if j + 1 < b.len() => {
                        value.push(b[j + 1] as char);
                        j += 2;
                    }
                    b'\'' => {
                        closed = true;
                        j += 1;
                        break;
                    }
                    c => {
                        value.push(c as char);
                        j += 1;
                    }
                }
            }
            if !closed {
                return (dsn.to_string(), None);
            }
        } else {
            let v0 = j;
            while j < b.len() && !b[j].is_ascii_whitespace() {
                j += 1;
            }
            value.push_str(&dsn[v0..j]);
        }
        if key == "sslmode" {
            mode = Some(value);
        } else {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(&dsn[start..j]);
        }
        i = j;
    }
    (rest, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_from_urls_and_keywords() {
        let (rest, mode) =
            take_sslmode("postgres://u@h:5432/db?sslmode=verify-full&connect_timeout=5");
        assert_eq!(rest, "postgres://u@h:5432/db?connect_timeout=5");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        let (rest, mode) = take_sslmode("postgresql://u@h/db?sslmode=verify-ca");
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        let (rest, mode) = take_sslmode("host=h sslmode = 'verify-full' user=u dbname='a b'");
        assert_eq!(rest, "host=h user=u dbname='a b'");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        let (rest, mode) = take_sslmode("postgres://u@h/db");
        assert_eq!((rest.as_str(), mode), ("postgres://u@h/db", None));
    }

    #[test]
    fn inline_passwords_are_refused_without_being_repeated() {
        for dsn in [
            "postgres://u:hunter2@h/db",
            "postgres://u@h/db?password=hunter2",
            "host=h user=u password=hunter2",
            "postgres://u:@h/db",
        ] {
            let err = parse(dsn).err().unwrap_or_else(|| panic!("{dsn} accepted"));
            assert!(err.contains("password"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn what_is_missing_or_unknown_is_named() {
        assert!(parse("postgres://h/db").unwrap_err().contains("no user"));
        assert!(parse("postgres://u@h/db?sslmode=strict")
            .unwrap_err()
            .contains("sslmode \"strict\""));
        assert!(parse("postgres://u@h/db?colour=blue")
            .unwrap_err()
            .contains("colour"));
        let ok = parse("postgres://u@db.internal:5433/audit?sslmode=verify-full").unwrap();
        assert_eq!(ok.ssl_mode, SslMode::VerifyFull);
        assert_eq!(ok.config.get_ports(), &[5433]);
        assert_eq!(
            parse("postgres://u@h/db").unwrap().ssl_mode,
            SslMode::Prefer
        );
    }
}
