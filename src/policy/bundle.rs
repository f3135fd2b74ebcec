//! OPA bundles: `policy.dir` may name a `.tar.gz` (or `.tgz`) file laid out
//! as OPA builds bundles: `.rego` files and `data.json` / `data.yaml`
//! documents in directories (the same directory-to-path rules as a policy
//! directory), and an optional `.manifest`. The bundle is read whole into
//! memory and compiled like a directory; its revision is computed from the
//! same files, so the record and `audit replay` treat it like any revision.
//!
//! Nothing is written to disk, and entry names are checked anyway: an
//! absolute name or one that climbs (`..`) is refused, as is a bundle over
//! [`MAX_BYTES`] unpacked.

use std::io::Read;
use std::path::{Component, Path};

use super::{PolicyError, Source};

/// The most a bundle may unpack to.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Whether `path` names a bundle file rather than a directory.
pub fn is_bundle(path: &Path) -> bool {
    let name = path.to_string_lossy();
    path.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz"))
}

fn bad(bundle: &Path, message: String) -> PolicyError {
    PolicyError::Compile {
        file: bundle.display().to_string(),
        message,
    }
}

/// The bundle's policy files (tests left out) and data documents, chosen
/// and ordered as in a directory (names starting with `.` skipped, the
/// root `.manifest` checked; sorted by path), each shown as `BUNDLE:NAME`.
pub fn read(bundle: &Path) -> Result<Vec<(String, Source)>, PolicyError> {
    read_within(bundle, MAX_BYTES)
}

fn read_within(bundle: &Path, max_bytes: u64) -> Result<Vec<(String, Source)>, PolicyError> {
    let file = std::fs::File::open(bundle).map_err(|e| bad(bundle, format!("cannot open: {e}")))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| bad(bundle, format!("is not a gzipped tar file: {e}")))?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| bad(bundle, format!("is not a gzipped tar file: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|e| bad(bundle, format!("has an entry with an unreadable name: {e}")))?
            .into_owned();
        let mut parts = Vec::new();
        for c in raw.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => {
                    return Err(bad(
                        bundle,
                        format!(
                            "has an entry `{}` that is absolute or climbs out of the bundle",
                            raw.display()
                        ),
                    ))
                }
            }
        }
        // Every file counts: those skipped are unpacked to get past them.
        total += entry.size();
        if total > max_bytes {
            return Err(bad(
                bundle,
                format!("unpacks to more than {max_bytes} bytes"),
            ));
        }
        let name = parts.join("/");
        let base = parts.last().cloned().unwrap_or_default();
        let manifest = name == ".manifest";
        // As `walk` reads a directory: hidden names (macOS `._*` files,
        // ConfigMap `..data`) are not policies.
        let hidden = parts.iter().any(|p| p.starts_with('.'));
        let wanted = manifest
            || !hidden
                && (base.ends_with(".rego") && !base.ends_with("_test.rego")
                    || super::is_data_file(&name));
        if !wanted {
            continue;
        }
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| bad(bundle, format!("entry `{name}` is not UTF-8 text: {e}")))?;
        if manifest {
            // Checked for shape only: its `revision` and `roots` describe
            // the bundle; the revision countersign records is its own.
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| bad(bundle, format!("`{name}` is not JSON: {e}")))?;
            continue;
        }
        out.push((
            format!("{}:{name}", bundle.display()),
            Source { path: name, text },
        ));
    }
    // By path components, as a directory's files are (`a/x` before `a-b/x`).
    out.sort_by(|a, b| Path::new(&a.1.path).cmp(Path::new(&b.1.path)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, entries: &[(&str, &[u8])]) {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn entries_skipped_count_toward_the_unpacked_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar.gz");
        let big = vec![b'x'; 4096];
        write(
            &path,
            &[("p.rego", b"package p\nx := 1\n"), ("README.md", &big)],
        );
        let err = read_within(&path, 1024).unwrap_err().to_string();
        assert!(err.contains("unpacks to more than 1024 bytes"), "{err}");
        assert_eq!(read_within(&path, 8192).unwrap().len(), 1);
    }
}
