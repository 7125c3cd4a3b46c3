//! Checking ed25519 signatures of policy components (`MODULE.sig` beside the module).
//! The signed message is `portcullis-policy-signature-v1:sha256:<hex digest>`, so a
//! signature is bound to the exact bytes. Signing and keys are the kit's
//! (`kit::sign`); the gateway only verifies.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::config::parse_public_key;

/// The `format` of signature files this gateway writes and reads.
pub(crate) const FORMAT: &str = "portcullis-policy-signature-v1";

/// The signature file of a module: `MODULE.sig` beside it.
pub(crate) fn sig_path(module: &Path) -> PathBuf {
    let mut s = module.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

/// What is signed for a module with this digest.
pub(crate) fn message(sha256_hex: &str) -> String {
    format!("{FORMAT}:sha256:{sha256_hex}")
}

/// The contents of a `.sig` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignatureFile {
    pub format: String,
    /// Hex sha256 of the signed module.
    pub sha256: String,
    /// Hex ed25519 public key of the signer.
    pub public_key: String,
    /// Hex ed25519 signature over [`message`].
    pub signature: String,
}

/// Why a module's signature is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
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
pub(crate) fn verify(
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
    let actual = crate::digest::sha256_hex(bytes);
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
