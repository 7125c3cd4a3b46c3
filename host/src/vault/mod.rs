//! The credential vault: connector secrets stored encrypted (envelope encryption),
//! never in the config. See `config` for the `[vault]` section.
//!
//! - `envelope`: AES-256-GCM sealing; each secret has its own fresh 256-bit data key
//!   and the secret's name as associated data.
//! - `kms`: wrapping data keys (`local` master key file or `aws-kms`).
//! - `store`: the JSON vault file (atomic writes, mode 0600, writer lock).
//!
//! The gateway reads secrets with [`Vault::get`] at request time. It re-reads the file
//! when it changes on disk (so `vault put`/`rotate` take effect without a restart),
//! keeps unwrapped data keys in memory for `cache_secs` (zeroized when dropped or
//! expired) and decrypts the secret itself per use. Errors name the secret, the file
//! and the cause, never secret material.

pub(crate) mod envelope;
pub(crate) mod kms;
pub(crate) mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use zeroize::{Zeroize, Zeroizing};

use crate::config::VaultSettings;
use envelope::DataKey;
use kms::Kms;
use store::{Entry, Stamp, VaultFile};

/// Why a secret could not be read or written. No variant carries secret material.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum VaultError {
    #[error("secret {name:?} is not in the vault {path}")]
    UnknownSecret { name: String, path: String },
    #[error("vault entry {name:?} is corrupted: {reason}")]
    Corrupt { name: String, reason: String },
    #[error(
        "secret {name:?} failed authenticated decryption (AES-GCM): its ciphertext, nonce or name was altered, or its data key is wrong; the vault entry is tampered or corrupted"
    )]
    Decrypt { name: String },
    #[error("cannot unwrap the data key: {0}")]
    Unwrap(String),
    /// KMS could not be reached or did not answer in time.
    #[error("KMS unavailable: {0}")]
    Kms(String),
    /// KMS answered with an error (unknown or disabled key, invalid ciphertext, access).
    #[error("KMS refused the request: {0}")]
    KmsRefused(String),
    #[error("vault master key: {0}")]
    MasterKey(String),
    #[error("vault file: {0}")]
    File(String),
    #[error(
        "secret {name:?} was wrapped by KMS provider {stored:?} but the config uses {configured:?}"
    )]
    ProviderMismatch {
        name: String,
        stored: String,
        configured: String,
    },
    #[error("secret {name:?} is not valid UTF-8 text")]
    NotText { name: String },
    #[error("invalid secret name {0:?}: use 1 to 128 characters from A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    #[error("the secret value is empty")]
    Empty,
}

/// What `vault list` shows of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretInfo {
    pub name: String,
    pub kms: String,
    pub key_id: String,
    pub created: String,
    pub rotated: Option<String>,
}

struct CachedKey {
    key: DataKey,
    until: Instant,
}

/// The vault file as last read: it holds only ciphertext and wrapped keys.
struct CachedFile {
    stamp: Stamp,
    text: String,
    file: Arc<VaultFile>,
}

/// One KMS unwrap in progress, awaited by every request that needs that data key.
type Unwrapping = Shared<BoxFuture<'static, Result<DataKey, VaultError>>>;

pub(crate) struct Vault {
    settings: VaultSettings,
    kms: Arc<Kms>,
    /// The parsed file and the on-disk version it was read from.
    file: Mutex<Option<CachedFile>>,
    /// Unwrapped data keys by wrapped key bytes.
    keys: Mutex<HashMap<Vec<u8>, CachedKey>>,
    /// Unwraps in flight by wrapped key bytes: concurrent cache misses for one secret
    /// make one KMS call, and share its failure too.
    unwrapping: Mutex<HashMap<Vec<u8>, Unwrapping>>,
}

impl Vault {
    /// A vault over `settings`; touches no file and no KMS until used.
    pub(crate) fn open(settings: &VaultSettings) -> Vault {
        Vault {
            settings: settings.clone(),
            kms: Arc::new(Kms::new(&settings.kms)),
            file: Mutex::new(None),
            keys: Mutex::new(HashMap::new()),
            unwrapping: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.settings.path
    }

    pub(crate) fn kms_provider(&self) -> &'static str {
        self.kms.provider()
    }

    /// Whether the KMS is reachable and usable (for `/readyz`).
    pub(crate) async fn kms_ready(&self) -> Result<(), VaultError> {
        self.kms.ready().await
    }

    /// The secret `name`, decrypted.
    pub(crate) async fn get(&self, name: &str) -> Result<Zeroizing<String>, VaultError> {
        let file = self.current()?;
        let entry = file.get(name).ok_or_else(|| self.unknown(name))?;
        self.check_provider(entry)?;
        let parts = entry.decode()?;
        let key = self.data_key(entry, &parts.wrapped_key).await?;
        let mut plain = envelope::open(&key, name.as_bytes(), &parts.nonce, &parts.ciphertext)
            .map_err(|_| VaultError::Decrypt {
                name: name.to_string(),
            })?;
        match String::from_utf8(std::mem::take(&mut *plain)) {
            Ok(s) => Ok(Zeroizing::new(s)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(VaultError::NotText {
                    name: name.to_string(),
                })
            }
        }
    }

    /// Whether the vault file holds `name` (no decryption).
    pub(crate) fn contains(&self, name: &str) -> Result<bool, VaultError> {
        Ok(self.current()?.get(name).is_some())
    }

    /// Stores (or replaces) a secret under a fresh data key. `true` if it replaced one.
    pub(crate) async fn put(&self, name: &str, secret: &str) -> Result<bool, VaultError> {
        validate_name(name)?;
        if secret.is_empty() {
            return Err(VaultError::Empty);
        }
        let _lock = store::lock(self.path())?;
        let mut file = store::load(self.path())?;
        let (key, wrapped, key_id) = self.kms.generate().await?;
        let (nonce, ciphertext) = envelope::seal(&key, name.as_bytes(), secret.as_bytes());
        let entry = Entry {
            name: name.to_string(),
            kms: self.kms.provider().to_string(),
            key_id,
            wrapped_key: store::b64(&wrapped),
            nonce: store::b64(&nonce),
            ciphertext: store::b64(&ciphertext),
            created: store::now_rfc3339(),
            rotated: None,
        };
        let replaced = match file.secrets.iter_mut().find(|e| e.name == name) {
            Some(e) => {
                *e = entry;
                true
            }
            None => {
                file.secrets.push(entry);
                false
            }
        };
        store::save(self.path(), &file)?;
        Ok(replaced)
    }

    /// The stored secrets' names and dates, sorted by name.
    pub(crate) fn list(&self) -> Result<Vec<SecretInfo>, VaultError> {
        let mut out: Vec<SecretInfo> = store::load(self.path())?
            .secrets
            .into_iter()
            .map(|e| SecretInfo {
                name: e.name,
                kms: e.kms,
                key_id: e.key_id,
                created: e.created,
                rotated: e.rotated,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes a secret; `false` if there was none of that name.
    pub(crate) fn remove(&self, name: &str) -> Result<bool, VaultError> {
        let _lock = store::lock(self.path())?;
        let mut file = store::load(self.path())?;
        let before = file.secrets.len();
        file.secrets.retain(|e| e.name != name);
        if file.secrets.len() == before {
            return Ok(false);
        }
        store::save(self.path(), &file)?;
        Ok(true)
    }

    /// Re-wraps every data key under the KMS key the config names now (for `local`: a
    /// new master key file). Secrets and their ciphertexts are unchanged. Returns how
    /// many entries were re-wrapped.
    pub(crate) async fn rotate(&self) -> Result<usize, VaultError> {
        let _lock = store::lock(self.path())?;
        let mut file = store::load(self.path())?;
        for e in &file.secrets {
            self.check_provider(e)?;
        }
        let now = store::now_rfc3339();
        match &*self.kms {
            Kms::Local(local) => {
                // Finish or discard what an interrupted rotation left behind: the
                // vault file is written whole, so either every entry already uses the
                // next key or none does.
                if let Some(next) = local.next_key()? {
                    let next_id = kms::fingerprint(&next);
                    if file.secrets.iter().any(|e| e.key_id == next_id) {
                        local.promote_next()?;
                    } else {
                        local.discard_next();
                    }
                }
                if file.secrets.is_empty() {
                    // Nothing to re-wrap: just replace the master key.
                    local.master_key(true)?;
                }
                let new_master = local.create_next()?;
                for e in &mut file.secrets {
                    let parts = e.decode()?;
                    let key = self.kms.unwrap(&e.key_id, &parts.wrapped_key).await?;
                    let (wrapped, key_id) = local.wrap(&new_master, &key);
                    e.wrapped_key = store::b64(&wrapped);
                    e.key_id = key_id;
                    e.rotated = Some(now.clone());
                }
                store::save(self.path(), &file)?;
                local.promote_next()?;
            }
            Kms::Aws(aws) => {
                for e in &mut file.secrets {
                    let parts = e.decode()?;
                    let (wrapped, key_id) = aws.re_encrypt(&e.key_id, &parts.wrapped_key).await?;
                    e.wrapped_key = store::b64(&wrapped);
                    e.key_id = key_id;
                    e.rotated = Some(now.clone());
                }
                store::save(self.path(), &file)?;
            }
        }
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(file.secrets.len())
    }

    /// Drops cached data keys whose time is up (they are zeroized on drop).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, k| k.until > now);
    }

    /// Sweeps the key cache every second on the current Tokio runtime (if any), for as
    /// long as the vault lives.
    pub(crate) fn spawn_sweeper(self: &Arc<Self>) {
        if self.settings.cache.is_zero() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Vault> = Arc::downgrade(self);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(v) => v.sweep(),
                    None => return,
                }
            }
        });
    }

    /// Data keys held unwrapped in memory (the cache's tests count them).
    #[cfg(test)]
    pub(crate) fn cached_keys(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn unknown(&self, name: &str) -> VaultError {
        VaultError::UnknownSecret {
            name: name.to_string(),
            path: self.path().display().to_string(),
        }
    }

    fn check_provider(&self, entry: &Entry) -> Result<(), VaultError> {
        if entry.kms == self.kms.provider() {
            Ok(())
        } else {
            Err(VaultError::ProviderMismatch {
                name: entry.name.clone(),
                stored: entry.kms.clone(),
                configured: self.kms.provider().to_string(),
            })
        }
    }

    /// The parsed vault file, re-read when it changed on disk.
    fn current(&self) -> Result<Arc<VaultFile>, VaultError> {
        let Some(stamp) = store::stamp(self.path())? else {
            return Ok(Arc::new(VaultFile::default()));
        };
        let mut cached = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_ref()
            && c.stamp == stamp
            && !stamp.is_recent()
        {
            return Ok(c.file.clone());
        }
        let Some(text) = store::read_text(self.path())? else {
            return Ok(Arc::new(VaultFile::default()));
        };
        if let Some(c) = cached.as_mut()
            && c.text == text
        {
            c.stamp = stamp;
            return Ok(c.file.clone());
        }
        let file = Arc::new(store::parse(self.path(), &text)?);
        *cached = Some(CachedFile {
            stamp,
            text,
            file: file.clone(),
        });
        Ok(file)
    }

    /// The entry's data key: from the cache, or unwrapped by the KMS (and cached).
    async fn data_key(&self, entry: &Entry, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        let now = Instant::now();
        {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.retain(|_, k| k.until > now);
            if let Some(k) = keys.get(wrapped) {
                return Ok(k.key.clone());
            }
        }
        let pending = self
            .unwrapping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(wrapped.to_vec())
            .or_insert_with(|| {
                let kms = self.kms.clone();
                let key_id = entry.key_id.clone();
                let wrapped = wrapped.to_vec();
                async move { kms.unwrap(&key_id, &wrapped).await }
                    .boxed()
                    .shared()
            })
            .clone();
        let result = pending.clone().await;
        {
            let mut unwrapping = self.unwrapping.lock().unwrap_or_else(|e| e.into_inner());
            if unwrapping.get(wrapped).is_some_and(|p| p.ptr_eq(&pending)) {
                unwrapping.remove(wrapped);
            }
        }
        drop(pending);
        let key = result?;
        if !self.settings.cache.is_zero() {
            self.keys.lock().unwrap_or_else(|e| e.into_inner()).insert(
                wrapped.to_vec(),
                CachedKey {
                    key: key.clone(),
                    until: Instant::now() + self.settings.cache,
                },
            );
        }
        Ok(key)
    }
}

fn validate_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VaultError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests;
