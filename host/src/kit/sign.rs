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

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::config::{hex32, parse_public_key};
use crate::policy::signature::{FORMAT, SignatureFile, message, sig_path};

/// A public key given as hex or as the path of a `.pub` file.
pub(crate) fn load_public_key(arg: &str) -> anyhow::Result<VerifyingKey> {
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
pub(crate) fn load_secret_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read key {}: {e}", path.display()))?;
    let seed =
        hex32(&text, "secret key").map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh key pair written to `PREFIX.key` and `PREFIX.pub`; the public key hex.
pub(crate) fn keygen(prefix: &Path, force: bool) -> anyhow::Result<(PathBuf, PathBuf, String)> {
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
pub(crate) fn sign(module: &Path, key: &SigningKey) -> anyhow::Result<(PathBuf, SignatureFile)> {
    let bytes = std::fs::read(module)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", module.display()))?;
    let digest = crate::digest::sha256_hex(&bytes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::signature::{SignatureError, verify};

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
