//! The vault file: JSON, one entry per secret, written atomically (temp file in the
//! same directory, fsync, rename, fsync of the directory) with mode 0600. Writers
//! (the CLI) take an exclusive lock on `<file>.lock` so concurrent edits do not lose
//! each other's entries; readers (the gateway) never lock, the rename makes every
//! version they see whole.
//!
//! ```json
//! {"version": 1, "secrets": [{"name": "github", "kms": "local", "key_id": "local:…",
//!   "wrapped_key": "<base64>", "nonce": "<base64>", "ciphertext": "<base64>",
//!   "created": "2026-05-01T10:00:00Z", "rotated": null}]}
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::VaultError;

pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VaultFile {
    pub version: u32,
    #[serde(default)]
    pub secrets: Vec<Entry>,
}

impl Default for VaultFile {
    fn default() -> Self {
        VaultFile {
            version: FORMAT_VERSION,
            secrets: Vec::new(),
        }
    }
}

/// One encrypted secret. Binary fields are standard base64.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    pub name: String,
    /// The KMS provider that wrapped the data key: "local" or "aws-kms".
    pub kms: String,
    /// Which KMS key wrapped it (a local master key fingerprint, or an AWS key id/ARN).
    pub key_id: String,
    /// The data key, wrapped by the KMS.
    pub wrapped_key: String,
    /// The AES-GCM nonce of the secret's ciphertext.
    pub nonce: String,
    /// AES-256-GCM(data key, nonce, secret, aad = name), tag included.
    pub ciphertext: String,
    /// When the secret was stored (RFC 3339, UTC).
    pub created: String,
    /// When its data key was last re-wrapped (`vault rotate`).
    #[serde(default)]
    pub rotated: Option<String>,
}

/// The decoded binary fields of an entry.
pub(crate) struct Decoded {
    pub wrapped_key: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl Entry {
    pub(crate) fn decode(&self) -> Result<Decoded, VaultError> {
        let field = |label: &'static str, v: &str| {
            B64.decode(v).map_err(|_| VaultError::Corrupt {
                name: self.name.clone(),
                reason: format!("{label} is not valid base64"),
            })
        };
        Ok(Decoded {
            wrapped_key: field("wrapped_key", &self.wrapped_key)?,
            nonce: field("nonce", &self.nonce)?,
            ciphertext: field("ciphertext", &self.ciphertext)?,
        })
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

impl VaultFile {
    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.secrets.iter().find(|e| e.name == name)
    }
}

/// What identifies one version of the file on disk (changes on every rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// Modified within the last two seconds (or in the future): file timestamps are
    /// coarse (a few ms), so an in-place edit right after a read may keep the same
    /// stamp. Such a file is compared by content instead (git's "racily clean").
    pub(crate) fn is_recent(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        now - self.mtime_ns.max(self.ctime_ns) < 2_000_000_000
    }
}

/// The file's current stamp; `None` when it does not exist.
pub(crate) fn stamp(path: &Path) -> Result<Option<Stamp>, VaultError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(VaultError::File(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Reads the vault file; a missing file is an empty vault.
pub(crate) fn load(path: &Path) -> Result<VaultFile, VaultError> {
    match read_text(path)? {
        Some(text) => parse(path, &text),
        None => Ok(VaultFile::default()),
    }
}

/// The file's text; `None` when it does not exist.
pub(crate) fn read_text(path: &Path) -> Result<Option<String>, VaultError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(VaultError::File(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Parses vault file text (`path` only names it in errors).
pub(crate) fn parse(path: &Path, text: &str) -> Result<VaultFile, VaultError> {
    let file: VaultFile = serde_json::from_str(text).map_err(|e| {
        // serde_json's message names the position and what was expected, never the
        // content, and the file holds only ciphertext anyway.
        VaultError::File(format!("{} is not a valid vault file: {e}", path.display()))
    })?;
    if file.version != FORMAT_VERSION {
        return Err(VaultError::File(format!(
            "{} has format version {}, this gateway reads version {FORMAT_VERSION}",
            path.display(),
            file.version
        )));
    }
    Ok(file)
}

/// Writes the vault file atomically with mode 0600.
pub(crate) fn save(path: &Path, file: &VaultFile) -> Result<(), VaultError> {
    let mut text = serde_json::to_string_pretty(file).expect("vault file serialises");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `path` via a temp file beside it (mode 0600), fsync and rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let err = |what: &str, e: std::io::Error| {
        VaultError::File(format!("cannot {what} {}: {e}", path.display()))
    };
    let dir = parent(path);
    std::fs::create_dir_all(&dir).map_err(|e| err("create the directory of", e))?;
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| err("write", e))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut rnd = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut rnd);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vault".into());
    parent(path).join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        hex::encode(rnd)
    ))
}

/// An exclusive lock on `<path>.lock`, held until dropped.
pub(crate) struct WriteLock {
    _file: File,
}

pub(crate) fn lock(path: &Path) -> Result<WriteLock, VaultError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    std::fs::create_dir_all(parent(path))
        .map_err(|e| VaultError::File(format!("cannot create {}: {e}", parent(path).display())))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| VaultError::File(format!("cannot open {}: {e}", lock_path.display())))?;
    file.lock()
        .map_err(|e| VaultError::File(format!("cannot lock {}: {e}", lock_path.display())))?;
    Ok(WriteLock { _file: file })
}

/// Now, as RFC 3339 UTC with seconds (`2026-05-01T10:00:00Z`).
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Unix seconds as RFC 3339 UTC (proleptic Gregorian calendar).
pub(crate) fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn save_is_atomic_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/vault.json");
        assert!(load(&path).unwrap().secrets.is_empty());
        let mut f = VaultFile::default();
        f.secrets.push(Entry {
            name: "a".into(),
            kms: "local".into(),
            key_id: "local:00".into(),
            wrapped_key: b64(b"w"),
            nonce: b64(b"n"),
            ciphertext: b64(b"c"),
            created: now_rfc3339(),
            rotated: None,
        });
        save(&path, &f).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap().secrets, f.secrets);
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("vault.json")]);
    }

    #[test]
    fn bad_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("not a valid vault file"), "{e}");
        std::fs::write(&path, r#"{"version": 9, "secrets": []}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
    }
}
