//! Key management: wrapping and unwrapping data keys.
//!
//! - `local`: a 256-bit master key in a file (created on first use with mode 0600; a
//!   key file readable or writable by group or others is refused). Wrapping is
//!   AES-256-GCM of the data key under the master key with its own random nonce; the
//!   wrapped form is `nonce || ciphertext+tag`. The key id is a fingerprint of the
//!   master key (`local:<16 hex>`), so entries say which master key wrapped them.
//!   `vault rotate` writes the next master key to `<file>.next` first, re-wraps, and
//!   renames it over the old one; an interrupted rotation is completed by the next.
//! - `aws-kms`: GenerateDataKey (AES_256) / Decrypt / ReEncrypt with the configured
//!   key; credentials from the standard AWS provider chain; HTTPS through rustls with
//!   the ring provider (no aws-lc); an endpoint override for KMS-compatible services.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::OnceCell;
use zeroize::Zeroize;

use super::VaultError;
use super::envelope::{self, DataKey, KEY_LEN, NONCE_LEN};
use crate::config::KmsSettings;

/// Associated data of a locally wrapped data key: binds it to this use.
const LOCAL_WRAP_AAD: &[u8] = b"portcullis-vault-data-key-v1";

pub(crate) enum Kms {
    Local(LocalKms),
    Aws(AwsKms),
}

impl Kms {
    pub(crate) fn new(settings: &KmsSettings) -> Kms {
        match settings {
            KmsSettings::Local { master_key_path } => Kms::Local(LocalKms {
                path: master_key_path.clone(),
            }),
            KmsSettings::Aws {
                key_id,
                region,
                endpoint,
            } => Kms::Aws(AwsKms {
                key_id: key_id.clone(),
                region: region.clone(),
                endpoint: endpoint.clone(),
                client: OnceCell::new(),
            }),
        }
    }

    /// The provider name stored in entries.
    pub(crate) fn provider(&self) -> &'static str {
        match self {
            Kms::Local(_) => "local",
            Kms::Aws(_) => "aws-kms",
        }
    }

    /// A fresh data key and its wrapped form, with the id of the wrapping key.
    pub(crate) async fn generate(&self) -> Result<(DataKey, Vec<u8>, String), VaultError> {
        match self {
            Kms::Local(l) => {
                let master = l.master_key(true)?;
                let key = envelope::new_key();
                let wrapped = local_wrap(&master, &key);
                Ok((key, wrapped, fingerprint(&master)))
            }
            Kms::Aws(a) => a.generate().await,
        }
    }

    /// Whether the KMS can be used now (for readiness checks): the local master key
    /// loads (or does not exist yet), or AWS KMS answers DescribeKey for the key id.
    pub(crate) async fn ready(&self) -> Result<(), VaultError> {
        match self {
            Kms::Local(l) if !l.path.exists() => Ok(()),
            Kms::Local(l) => l.master_key(false).map(|_| ()),
            Kms::Aws(a) => a.describe().await,
        }
    }

    /// Unwraps a data key that `key_id` wrapped.
    pub(crate) async fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        match self {
            Kms::Local(l) => {
                let master = l.key_with_id(key_id)?;
                local_unwrap(&master, wrapped).ok_or_else(|| {
                    VaultError::Unwrap(format!(
                        "the wrapped data key does not decrypt under local master key {key_id} (tampered or corrupted)"
                    ))
                })
            }
            Kms::Aws(a) => a.decrypt(key_id, wrapped).await,
        }
    }
}

/// `local:` and the first 16 hex digits of a domain-separated sha256 of the key.
pub(crate) fn fingerprint(master: &[u8; KEY_LEN]) -> String {
    let digest = crate::digest::sha256_parts(&[b"portcullis-vault-master-key-id\0", master]);
    format!("local:{}", &hex::encode(digest)[..16])
}

fn local_wrap(master: &[u8; KEY_LEN], key: &[u8; KEY_LEN]) -> Vec<u8> {
    let (nonce, ct) = envelope::seal(master, LOCAL_WRAP_AAD, key);
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

fn local_unwrap(master: &[u8; KEY_LEN], wrapped: &[u8]) -> Option<DataKey> {
    if wrapped.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = wrapped.split_at(NONCE_LEN);
    let pt = envelope::open(master, LOCAL_WRAP_AAD, nonce, ct).ok()?;
    envelope::key_from_slice(&pt)
}

pub(crate) struct LocalKms {
    pub path: PathBuf,
}

impl LocalKms {
    /// `<master key file>.next`: the key an unfinished rotation is moving to.
    pub(crate) fn next_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".next");
        PathBuf::from(name)
    }

    /// The current master key; created (mode 0600) when `create` and it does not exist.
    pub(crate) fn master_key(&self, create: bool) -> Result<DataKey, VaultError> {
        match read_key_file(&self.path)? {
            Some(k) => Ok(k),
            None if create => {
                let key = envelope::new_key();
                create_key_file(&self.path, &key)?;
                tracing::info!(path = %self.path.display(), "created a new vault master key");
                Ok(key)
            }
            None => Err(VaultError::MasterKey(format!(
                "the master key file {} does not exist; without it the vault's secrets cannot be decrypted",
                self.path.display()
            ))),
        }
    }

    /// The master key whose fingerprint is `key_id` (the current one, or the one an
    /// interrupted rotation left in `<file>.next`).
    pub(crate) fn key_with_id(&self, key_id: &str) -> Result<DataKey, VaultError> {
        let mut current = self.master_key(false)?;
        // Twice: a rotation may rename `.next` over the key file between the reads.
        for _ in 0..2 {
            if fingerprint(&current) == key_id {
                return Ok(current);
            }
            if let Some(next) = self.next_key()?
                && fingerprint(&next) == key_id
            {
                return Ok(next);
            }
            current = self.master_key(false)?;
        }
        Err(VaultError::MasterKey(format!(
            "the data key was wrapped under local master key {key_id}, but {} holds {}",
            self.path.display(),
            fingerprint(&current)
        )))
    }

    /// The key an unfinished rotation left in `<file>.next`, if any.
    pub(crate) fn next_key(&self) -> Result<Option<DataKey>, VaultError> {
        read_key_file(&self.next_path())
    }

    pub(crate) fn discard_next(&self) {
        let _ = std::fs::remove_file(self.next_path());
    }

    /// Rotation: a new key in `<file>.next` (mode 0600).
    pub(crate) fn create_next(&self) -> Result<DataKey, VaultError> {
        let next = self.next_path();
        let _ = std::fs::remove_file(&next);
        let key = envelope::new_key();
        create_key_file(&next, &key)?;
        Ok(key)
    }

    /// Rotation done: `<file>.next` replaces the master key file.
    pub(crate) fn promote_next(&self) -> Result<(), VaultError> {
        std::fs::rename(self.next_path(), &self.path).map_err(|e| {
            VaultError::MasterKey(format!(
                "cannot move {} to {}: {e}",
                self.next_path().display(),
                self.path.display()
            ))
        })?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub(crate) fn wrap(&self, master: &DataKey, key: &DataKey) -> (Vec<u8>, String) {
        (local_wrap(master, key), fingerprint(master))
    }
}

/// Reads a key file: `None` when absent; refused when group/world accessible or not
/// exactly 32 bytes.
fn read_key_file(path: &Path) -> Result<Option<DataKey>, VaultError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(VaultError::MasterKey(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::MasterKey(format!(
            "{} has mode {mode:04o}: a master key file must not be accessible by group or others (chmod 600 it)",
            path.display()
        )));
    }
    let mut bytes = std::fs::read(path)
        .map_err(|e| VaultError::MasterKey(format!("cannot read {}: {e}", path.display())))?;
    let key = envelope::key_from_slice(&bytes);
    bytes.zeroize();
    key.map(Some).ok_or_else(|| {
        VaultError::MasterKey(format!(
            "{} is not a master key file (it must hold exactly {KEY_LEN} bytes)",
            path.display()
        ))
    })
}

fn create_key_file(path: &Path, key: &DataKey) -> Result<(), VaultError> {
    let err =
        |e: std::io::Error| VaultError::MasterKey(format!("cannot create {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(key.as_ref()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

pub(crate) struct AwsKms {
    pub key_id: String,
    region: String,
    endpoint: Option<String>,
    client: OnceCell<aws_sdk_kms::Client>,
}

/// An SDK error as the operator needs it: a refusal by KMS (bad key id, key disabled,
/// ciphertext not valid) or KMS being unreachable / timing out. Only the `Display`
/// chain is used: the `Debug` form of an unparsable response holds its raw body.
fn sdk_error<E, R>(op: &str, e: aws_sdk_kms::error::SdkError<E, R>) -> VaultError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_kms::error::SdkError;
    let refused = matches!(e, SdkError::ServiceError(_));
    let text = format!("{op} failed: {}", display_chain(&e));
    if refused {
        VaultError::KmsRefused(text)
    } else {
        VaultError::Kms(text)
    }
}

fn display_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !msg.ends_with(&next) {
            msg.push_str(": ");
            msg.push_str(&next);
        }
        source = s.source();
    }
    msg
}

impl AwsKms {
    async fn client(&self) -> &aws_sdk_kms::Client {
        self.client
            .get_or_init(|| async {
                use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::Ring))
                    .build_https();
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(12))
                    .build();
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.region.clone()))
                    .http_client(http)
                    .timeout_config(timeouts)
                    .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
                if let Some(endpoint) = &self.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                aws_sdk_kms::Client::new(&loader.load().await)
            })
            .await
    }

    async fn describe(&self) -> Result<(), VaultError> {
        self.client()
            .await
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("KMS DescribeKey", e))
    }

    async fn generate(&self) -> Result<(DataKey, Vec<u8>, String), VaultError> {
        let out = self
            .client()
            .await
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .send()
            .await
            .map_err(|e| sdk_error("KMS GenerateDataKey", e))?;
        let wrapped = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| VaultError::Kms("GenerateDataKey returned no CiphertextBlob".into()))?;
        let key = take_key(out.plaintext, "GenerateDataKey")?;
        Ok((key, wrapped, self.key_id.clone()))
    }

    async fn decrypt(&self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        let out = self
            .client()
            .await
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("KMS Decrypt", e))?;
        take_key(out.plaintext, "Decrypt")
    }

    /// Re-wraps a data key under the configured key without it leaving the KMS.
    pub(crate) async fn re_encrypt(
        &self,
        source_key_id: &str,
        wrapped: &[u8],
    ) -> Result<(Vec<u8>, String), VaultError> {
        let out = self
            .client()
            .await
            .re_encrypt()
            .source_key_id(source_key_id)
            .destination_key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("KMS ReEncrypt", e))?;
        let wrapped = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| VaultError::Kms("ReEncrypt returned no CiphertextBlob".into()))?;
        Ok((wrapped, self.key_id.clone()))
    }
}

/// Moves a plaintext key out of an SDK blob into zeroizing memory, wiping the blob.
fn take_key(blob: Option<aws_sdk_kms::primitives::Blob>, op: &str) -> Result<DataKey, VaultError> {
    let mut bytes = blob
        .map(|b| b.into_inner())
        .ok_or_else(|| VaultError::Kms(format!("{op} returned no Plaintext")))?;
    let key = envelope::key_from_slice(&bytes);
    bytes.zeroize();
    key.ok_or_else(|| VaultError::Kms(format!("{op} returned a key that is not {KEY_LEN} bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_wrap_roundtrip_and_tamper() {
        let master = envelope::new_key();
        let key = envelope::new_key();
        let wrapped = local_wrap(&master, &key);
        assert_eq!(wrapped.len(), NONCE_LEN + KEY_LEN + 16);
        assert_eq!(*local_unwrap(&master, &wrapped).unwrap(), *key);
        let mut bad = wrapped.clone();
        bad[20] ^= 1;
        assert!(local_unwrap(&master, &bad).is_none());
        assert!(local_unwrap(&envelope::new_key(), &wrapped).is_none());
        assert!(local_unwrap(&master, &wrapped[..5]).is_none());
    }

    #[test]
    fn master_key_created_0600_and_loose_modes_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms {
            path: dir.path().join("keys/master.key"),
        };
        assert!(matches!(
            kms.master_key(false),
            Err(VaultError::MasterKey(_))
        ));
        let k1 = kms.master_key(true).unwrap();
        let meta = std::fs::metadata(&kms.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        assert_eq!(*kms.master_key(true).unwrap(), *k1, "reused, not recreated");
        assert_eq!(*kms.key_with_id(&fingerprint(&k1)).unwrap(), *k1);
        assert!(kms.key_with_id("local:0000000000000000").is_err());

        for mode in [0o640, 0o604, 0o660] {
            std::fs::set_permissions(&kms.path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = kms.master_key(true).unwrap_err().to_string();
            assert!(
                e.contains("must not be accessible by group or others"),
                "{e}"
            );
        }
        std::fs::set_permissions(&kms.path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&kms.path, b"short").unwrap();
        let e = kms.master_key(true).unwrap_err().to_string();
        assert!(e.contains("exactly 32 bytes"), "{e}");
    }
}
