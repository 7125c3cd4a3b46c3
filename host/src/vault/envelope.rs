//! Envelope encryption primitives: AES-256-GCM with a random 96-bit nonce.
//!
//! A secret is sealed under its own fresh 256-bit data key with the secret's name as
//! associated data, so an entry copied under another name does not decrypt. The data
//! key itself is wrapped by the KMS (`kms`); only the wrapped form is stored.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

/// Bytes in a data key or master key (AES-256).
pub(crate) const KEY_LEN: usize = 32;
/// Bytes in an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;

/// An unwrapped 256-bit key; zeroized when dropped.
pub(crate) type DataKey = Zeroizing<[u8; KEY_LEN]>;

/// The decryption failed: wrong key, wrong associated data, or altered nonce/ciphertext.
/// Deliberately carries nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenError;

/// A fresh random key from the operating system's CSPRNG.
pub(crate) fn new_key() -> DataKey {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.fill_bytes(key.as_mut());
    key
}

/// A key from exactly [`KEY_LEN`] bytes.
pub(crate) fn key_from_slice(bytes: &[u8]) -> Option<DataKey> {
    let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
    Some(Zeroizing::new(arr))
}

/// Encrypts `plaintext` under `key` with `aad` as associated data; returns
/// `(nonce, ciphertext-with-tag)`.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> ([u8; NONCE_LEN], Vec<u8>) {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    (nonce, ct)
}

/// Decrypts and authenticates; the plaintext is zeroized when dropped.
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    if nonce.len() != NONCE_LEN {
        return Err(OpenError);
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let key = new_key();
        let (nonce, ct) = seal(&key, b"github", b"ghp_secret");
        assert_ne!(ct.as_slice(), b"ghp_secret".as_slice());
        assert_eq!(
            ct.len(),
            b"ghp_secret".len() + 16,
            "ciphertext carries the tag"
        );
        let pt = open(&key, b"github", &nonce, &ct).unwrap();
        assert_eq!(pt.as_slice(), b"ghp_secret");
    }

    #[test]
    fn fresh_nonce_and_key_each_time() {
        let key = new_key();
        let (n1, c1) = seal(&key, b"a", b"same");
        let (n2, c2) = seal(&key, b"a", b"same");
        assert_ne!(n1, n2);
        assert_ne!(c1, c2);
        assert_ne!(*new_key(), *new_key());
    }

    #[test]
    fn wrong_aad_fails() {
        let key = new_key();
        let (nonce, ct) = seal(&key, b"github", b"ghp_secret");
        assert_eq!(open(&key, b"gitlab", &nonce, &ct), Err(OpenError));
    }

    #[test]
    fn tampered_ciphertext_nonce_or_key_fails() {
        let key = new_key();
        let (nonce, ct) = seal(&key, b"n", b"value");
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_eq!(open(&key, b"n", &nonce, &bad), Err(OpenError), "byte {i}");
        }
        let mut bad_nonce = nonce;
        bad_nonce[0] ^= 0x80;
        assert_eq!(open(&key, b"n", &bad_nonce, &ct), Err(OpenError));
        assert_eq!(open(&key, b"n", &nonce[..11], &ct), Err(OpenError));
        assert_eq!(open(&new_key(), b"n", &nonce, &ct), Err(OpenError));
        assert_eq!(
            open(&key, b"n", &nonce, &ct[..ct.len() - 1]),
            Err(OpenError)
        );
    }
}
