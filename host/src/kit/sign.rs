//! Ed25519 signatures over policy components.
//!
//! - A key pair is two small text files: `NAME.key` (the 32-byte secret seed in
//!   hex, mode 0600) and `NAME.pub` (the 32-byte public key in hex). The public key
//!   hex is what goes into `[policy_trust] trusted_keys`.
//! - A signature sits beside the module as `MODULE.sig` (e.g. `guard.wasm.sig`), a
//!   small TOML file naming the module's sha256, the public key and the signature.
//!   The signed message is `portcullis-policy-signature-v1:sha256:<hex digest>`, so
//!   a signature is bound to the exact bytes (metadata included: annotate first,
//!   then sign).

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The `format` of signature files this gateway writes and reads.
pub const FORMAT: &str = "portcullis-policy-signature-v1";

/// The signature file of a module: `MODULE.sig` beside it.
pub fn sig_path(module: &Path) -> PathBuf {
    let mut s = module.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

/// What is signed for a module with this digest.
fn message(sha256_hex: &str) -> String {
    format!("{FORMAT}:sha256:{sha256_hex}")
}

/// The contents of a `.sig` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub format: String,
    /// Hex sha256 of the signed module.
    pub sha256: String,
    /// Hex ed25519 public key of the signer.
    pub public_key: String,
    /// Hex ed25519 signature over [`message`].
    pub signature: String,
}

/// Parses a 32-byte hex value (a key), naming `what` in the error.
fn hex32(text: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text.trim())
        .map_err(|_| anyhow::anyhow!("{what} is not hex: expected 64 hex digits"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} must be 32 bytes (64 hex digits)"))
}

/// A public key from its hex text.
pub fn parse_public_key(text: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = hex32(text, "public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| anyhow::anyhow!("not a valid ed25519 public key"))
}

/// A public key given as hex or as the path of a `.pub` file.
pub fn load_public_key(arg: &str) -> anyhow::Result<VerifyingKey> {
    let path = Path::new(arg);
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        return parse_public_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    parse_public_key(arg).map_err(|e| {
        anyhow::anyhow!("{arg:?} is neither a readable public key file nor a hex public key: {e}")
    })
}

/// A secret key from a `.key` file.
pub fn load_secret_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read key {}: {e}", path.display()))?;
    let seed =
        hex32(&text, "secret key").map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh key pair written to `PREFIX.key` and `PREFIX.pub`; the public key hex.
pub fn keygen(prefix: &Path, force: bool) -> anyhow::Result<(PathBuf, PathBuf, String)> {
    use rand::RngCore;
    let key_path = with_suffix(prefix, ".key");
    let pub_path = with_suffix(prefix, ".pub");
    for p in [&key_path, &pub_path] {
        if p.exists() && !force {
            anyhow::bail!("{} exists; pass --force to overwrite it", p.display());
        }
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    let public = hex::encode(key.verifying_key().to_bytes());
    write_private(&key_path, &format!("{}\n", hex::encode(*seed)))?;
    std::fs::write(&pub_path, format!("{public}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", pub_path.display()))?;
    Ok((key_path, pub_path, public))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Signs the module at `module` with `key`; writes and returns the `.sig` path.
pub fn sign(module: &Path, key: &SigningKey) -> anyhow::Result<(PathBuf, SignatureFile)> {
    let bytes = std::fs::read(module)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", module.display()))?;
    let digest = hex::encode(crate::auth::sha256(&bytes));
    let sig = key.sign(message(&digest).as_bytes());
    let file = SignatureFile {
        format: FORMAT.into(),
        sha256: digest,
        public_key: hex::encode(key.verifying_key().to_bytes()),
        signature: hex::encode(sig.to_bytes()),
    };
    let path = sig_path(module);
    let text = format!(
        "# ed25519 signature of {} (portcullis policy sign)\n{}",
        module.file_name().unwrap_or_default().to_string_lossy(),
        toml::to_string(&file)?
    );
    std::fs::write(&path, text)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok((path, file))
}

/// Why a module's signature is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unsigned: no signature file {0}")]
    Missing(String),
    #[error("unreadable signature file {0}: {1}")]
    Malformed(String, String),
    #[error("tampered: the module's sha256 is {actual} but {file} signs {signed}")]
    DigestMismatch {
        file: String,
        actual: String,
        signed: String,
    },
    #[error("signed by a key that is not trusted ({0})")]
    Untrusted(String),
    #[error("invalid signature in {0}: it does not verify with key {1}")]
    Invalid(String, String),
}

/// Checks the signature file beside `module` (whose content is `bytes`) against
/// the trusted keys; the signer's public key hex when it is good.
pub fn verify(
    module: &Path,
    bytes: &[u8],
    trusted: &[VerifyingKey],
) -> Result<String, SignatureError> {
    let path = sig_path(module);
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SignatureError::Missing(shown));
        }
        Err(e) => return Err(SignatureError::Malformed(shown, e.to_string())),
    };
    let file: SignatureFile = toml::from_str(&text)
        .map_err(|e| SignatureError::Malformed(shown.clone(), e.to_string()))?;
    if file.format != FORMAT {
        return Err(SignatureError::Malformed(
            shown,
            format!("format {:?} is not {FORMAT:?}", file.format),
        ));
    }
    let actual = hex::encode(crate::auth::sha256(bytes));
    if !file.sha256.eq_ignore_ascii_case(&actual) {
        return Err(SignatureError::DigestMismatch {
            file: shown,
            actual,
            signed: file.sha256,
        });
    }
    let key = parse_public_key(&file.public_key)
        .map_err(|e| SignatureError::Malformed(shown.clone(), e.to_string()))?;
    let key_hex = hex::encode(key.to_bytes());
    if !trusted.iter().any(|t| t.to_bytes() == key.to_bytes()) {
        return Err(SignatureError::Untrusted(key_hex));
    }
    let sig_bytes: [u8; 64] = hex::decode(file.signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            SignatureError::Malformed(shown.clone(), "signature must be 64 hex bytes".into())
        })?;
    let sig = Signature::from_bytes(&sig_bytes);
    key.verify_strict(message(&actual).as_bytes(), &sig)
        .map_err(|_| SignatureError::Invalid(shown, key_hex.clone()))?;
    Ok(key_hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let (key_path, pub_path, public) = keygen(&dir.path().join("k"), false).unwrap();
        assert!(
            keygen(&dir.path().join("k"), false).is_err(),
            "no silent overwrite"
        );
        let key = load_secret_key(&key_path).unwrap();
        let vk = load_public_key(pub_path.to_str().unwrap()).unwrap();
        assert_eq!(hex::encode(vk.to_bytes()), public);
        assert_eq!(load_public_key(&public).unwrap(), vk);

        let module = dir.path().join("p.wasm");
        std::fs::write(&module, b"\0asm\x0d\x00\x01\x00").unwrap();
        assert!(matches!(
            verify(&module, b"\0asm\x0d\x00\x01\x00", &[vk]),
            Err(SignatureError::Missing(_))
        ));
        sign(&module, &key).unwrap();
        let bytes = std::fs::read(&module).unwrap();
        assert_eq!(verify(&module, &bytes, &[vk]), Ok(public.clone()));

        let mut tampered = bytes.clone();
        tampered.push(0);
        assert!(matches!(
            verify(&module, &tampered, &[vk]),
            Err(SignatureError::DigestMismatch { .. })
        ));
        let other = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        assert!(matches!(
            verify(&module, &bytes, &[other]),
            Err(SignatureError::Untrusted(_))
        ));

        // A signature file whose signature bytes were swapped for another key's.
        let forged = SigningKey::from_bytes(&[9u8; 32]);
        let text = std::fs::read_to_string(sig_path(&module)).unwrap();
        let mut file: SignatureFile = toml::from_str(
            &text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .unwrap();
        file.signature = hex::encode(forged.sign(b"something else").to_bytes());
        std::fs::write(sig_path(&module), toml::to_string(&file).unwrap()).unwrap();
        assert!(matches!(
            verify(&module, &bytes, &[vk]),
            Err(SignatureError::Invalid(..))
        ));
    }
}
