use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::KmsSettings;

const SECRET: &str = "s3cr3t-value-0123456789";

fn local(dir: &Path, cache_secs: u64) -> Vault {
    Vault::open(&VaultSettings {
        path: dir.join("vault.json"),
        cache: Duration::from_secs(cache_secs),
        kms: KmsSettings::Local {
            master_key_path: dir.join("master.key"),
        },
    })
}

fn read_file(v: &Vault) -> VaultFile {
    store::load(v.path()).unwrap()
}

fn edit(v: &Vault, f: impl FnOnce(&mut VaultFile)) {
    let mut file = read_file(v);
    f(&mut file);
    store::save(v.path(), &file).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn put_get_roundtrip_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 60);
    assert!(!v.put("github", SECRET).await.unwrap());
    assert_eq!(v.get("github").await.unwrap().as_str(), SECRET);
    assert_eq!(mode(v.path()), 0o600);
    assert_eq!(mode(&dir.path().join("master.key")), 0o600);

    // Nothing in the file or the listing is the secret.
    let text = std::fs::read_to_string(v.path()).unwrap();
    assert!(!text.contains(SECRET));
    let e = &read_file(&v).secrets[0];
    assert_eq!(e.kms, "local");
    assert!(e.key_id.starts_with("local:"));
    assert_eq!(e.decode().unwrap().nonce.len(), envelope::NONCE_LEN);
    assert_eq!(
        e.decode().unwrap().ciphertext.len(),
        SECRET.len() + 16,
        "ciphertext + GCM tag"
    );
    let list = v.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "github");
    assert!(!format!("{list:?}").contains(SECRET));

    // Replacing gives a fresh data key.
    let before = read_file(&v).secrets[0].clone();
    assert!(v.put("github", "other-value").await.unwrap());
    let after = read_file(&v).secrets[0].clone();
    assert_ne!(before.wrapped_key, after.wrapped_key);
    assert_eq!(v.get("github").await.unwrap().as_str(), "other-value");
}

#[tokio::test]
async fn each_secret_has_its_own_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 60);
    v.put("a", SECRET).await.unwrap();
    v.put("b", SECRET).await.unwrap();
    let f = read_file(&v);
    assert_ne!(f.secrets[0].wrapped_key, f.secrets[1].wrapped_key);
    assert_ne!(f.secrets[0].ciphertext, f.secrets[1].ciphertext);
    assert_eq!(v.cached_keys(), 0, "put caches nothing");
    v.get("a").await.unwrap();
    v.get("b").await.unwrap();
    assert_eq!(v.cached_keys(), 2);
}

#[tokio::test]
async fn tampered_ciphertext_fails_without_leaking() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 60);
    v.put("github", SECRET).await.unwrap();
    v.get("github").await.unwrap(); // data key now cached: tampering is still caught
    edit(&v, |f| {
        let mut ct = f.secrets[0].decode().unwrap().ciphertext;
        ct[0] ^= 0x01;
        f.secrets[0].ciphertext = store::b64(&ct);
    });
    let e = v.get("github").await.unwrap_err();
    assert!(matches!(e, VaultError::Decrypt { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"github\"") && msg.contains("tampered"),
        "{msg}"
    );
    assert!(!msg.contains(SECRET));
}

#[tokio::test]
async fn entry_under_another_name_fails_wrong_aad() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 0);
    v.put("github", SECRET).await.unwrap();
    edit(&v, |f| {
        let mut copy = f.secrets[0].clone();
        copy.name = "gitlab".into();
        f.secrets.push(copy);
    });
    assert!(matches!(
        v.get("gitlab").await,
        Err(VaultError::Decrypt { .. })
    ));
    assert_eq!(v.get("github").await.unwrap().as_str(), SECRET);
}

#[tokio::test]
async fn tampered_wrapped_key_and_bad_base64() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 0);
    v.put("k", SECRET).await.unwrap();
    let good = read_file(&v);
    edit(&v, |f| {
        let mut w = f.secrets[0].decode().unwrap().wrapped_key;
        w[15] ^= 0x10;
        f.secrets[0].wrapped_key = store::b64(&w);
    });
    let e = v.get("k").await.unwrap_err();
    assert!(matches!(e, VaultError::Unwrap(_)), "{e:?}");
    edit(&v, |f| f.secrets[0].nonce = "%%%".into());
    let e = v.get("k").await.unwrap_err().to_string();
    assert!(e.contains("nonce is not valid base64"), "{e}");
    store::save(v.path(), &good).unwrap();
    assert_eq!(v.get("k").await.unwrap().as_str(), SECRET);
}

#[tokio::test]
async fn unknown_secret_names_and_invalid_values() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 60);
    let e = v.get("nope").await.unwrap_err().to_string();
    assert!(e.contains("\"nope\" is not in the vault"), "{e}");
    assert!(matches!(
        v.put("bad name", "x").await,
        Err(VaultError::InvalidName(_))
    ));
    assert!(matches!(
        v.put("", "x").await,
        Err(VaultError::InvalidName(_))
    ));
    assert!(matches!(v.put("ok", "").await, Err(VaultError::Empty)));
    assert!(!v.path().exists(), "nothing written");
}

#[tokio::test]
async fn remove_and_reload_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 60);
    v.put("a", "1").await.unwrap();
    assert!(v.contains("a").unwrap());
    // Another process (the CLI) changes the file: this vault sees it.
    let other = local(dir.path(), 60);
    other.put("b", "2").await.unwrap();
    assert_eq!(v.get("b").await.unwrap().as_str(), "2");
    assert!(other.remove("a").unwrap());
    assert!(!other.remove("a").unwrap());
    assert!(!v.contains("a").unwrap());
    assert!(matches!(
        v.get("a").await,
        Err(VaultError::UnknownSecret { .. })
    ));
}

#[tokio::test]
async fn cache_expires_and_zero_disables() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 0);
    v.put("a", "1").await.unwrap();
    v.get("a").await.unwrap();
    assert_eq!(v.cached_keys(), 0);

    let v = Vault::open(&VaultSettings {
        cache: Duration::from_millis(100),
        ..v.settings.clone()
    });
    v.get("a").await.unwrap();
    assert_eq!(v.cached_keys(), 1);
    // With the key cached, the master key is not read again.
    std::fs::set_permissions(
        dir.path().join("master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    v.get("a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    v.sweep();
    assert_eq!(v.cached_keys(), 0);
    let e = v.get("a").await.unwrap_err().to_string();
    assert!(e.contains("mode 0644"), "{e}");
}

#[tokio::test]
async fn rotate_rewraps_under_a_new_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 60);
    v.put("a", "alpha").await.unwrap();
    v.put("b", "beta").await.unwrap();
    v.get("a").await.unwrap();
    let before = read_file(&v);
    let old_master = std::fs::read(dir.path().join("master.key")).unwrap();

    assert_eq!(v.rotate().await.unwrap(), 2);
    let after = read_file(&v);
    let new_master = std::fs::read(dir.path().join("master.key")).unwrap();
    assert_ne!(old_master, new_master);
    assert_eq!(mode(&dir.path().join("master.key")), 0o600);
    assert!(!dir.path().join("master.key.next").exists());
    for (b, a) in before.secrets.iter().zip(&after.secrets) {
        assert_eq!(b.name, a.name);
        assert_ne!(b.wrapped_key, a.wrapped_key);
        assert_ne!(b.key_id, a.key_id);
        assert_eq!(b.ciphertext, a.ciphertext, "secrets are not re-encrypted");
        assert_eq!(b.nonce, a.nonce);
        assert!(a.rotated.is_some());
    }
    assert_eq!(v.get("a").await.unwrap().as_str(), "alpha");
    // A vault that still caches the old data keys also works: the data key is unchanged.
    let fresh = local(dir.path(), 0);
    assert_eq!(fresh.get("b").await.unwrap().as_str(), "beta");
}

#[tokio::test]
async fn interrupted_rotation_is_readable_and_completed() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 0);
    v.put("a", "alpha").await.unwrap();
    // Simulate a crash after the vault file was re-wrapped but before the rename.
    let kms::Kms::Local(local_kms) = &*v.kms else {
        unreachable!()
    };
    let next = local_kms.create_next().unwrap();
    edit(&v, |f| {
        let e = &mut f.secrets[0];
        let old = local_kms.master_key(false).unwrap();
        let wrapped = e.decode().unwrap().wrapped_key;
        let (n, ct) = wrapped.split_at(envelope::NONCE_LEN);
        let key = envelope::open(&old, b"portcullis-vault-data-key-v1", n, ct).unwrap();
        let key = envelope::key_from_slice(&key).unwrap();
        let (w, id) = local_kms.wrap(&next, &key);
        e.wrapped_key = store::b64(&w);
        e.key_id = id;
    });
    assert_eq!(
        v.get("a").await.unwrap().as_str(),
        "alpha",
        "reads via .next"
    );
    v.rotate().await.unwrap();
    assert!(!dir.path().join("master.key.next").exists());
    assert_eq!(v.get("a").await.unwrap().as_str(), "alpha");
}

#[tokio::test]
async fn provider_mismatch_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 0);
    v.put("a", "alpha").await.unwrap();
    edit(&v, |f| f.secrets[0].kms = "aws-kms".into());
    let e = v.get("a").await.unwrap_err().to_string();
    assert!(e.contains("\"aws-kms\"") && e.contains("\"local\""), "{e}");
    assert!(v.rotate().await.is_err());
}

#[tokio::test]
async fn in_place_edit_right_after_a_read_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let v = local(dir.path(), 60);
    v.put("a", "alpha").await.unwrap();
    v.get("a").await.unwrap();
    // Same inode, same length, within the file system's timestamp granularity.
    let text = std::fs::read_to_string(v.path()).unwrap();
    let entry = &read_file(&v).secrets[0];
    let first = &entry.ciphertext[..1];
    let other = if first == "A" { "B" } else { "A" };
    let tampered = text.replacen(
        &format!("\"ciphertext\": \"{}", first),
        &format!("\"ciphertext\": \"{}", other),
        1,
    );
    assert_ne!(tampered, text);
    std::fs::write(v.path(), &tampered).unwrap();
    assert!(matches!(v.get("a").await, Err(VaultError::Decrypt { .. })));
    std::fs::write(v.path(), &text).unwrap();
    assert_eq!(v.get("a").await.unwrap().as_str(), "alpha");
}
