//! Encryption at rest for provider credentials: XChaCha20-Poly1305 (fast on
//! CPUs without AES instructions, and its 24-byte nonces are safe to pick at
//! random), and the key file created next to the database.
//!
//! Stored blob: `0x01` (format version) ‖ 24-byte nonce ‖ ciphertext+tag.

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Format version written as the first byte of every blob.
const VERSION: u8 = 0x01;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// An AEAD cipher holding the 32-byte key; `Debug` never shows the key.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

/// Decryption failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// Too short, or an unknown format version.
    Malformed,
    /// Wrong key, wrong associated data, or tampered bytes.
    Unauthentic,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CryptoError::Malformed => "encrypted value is malformed",
            CryptoError::Unauthentic => {
                "encrypted value could not be decrypted (wrong key or altered data)"
            }
        })
    }
}

impl std::error::Error for CryptoError {}

impl Cipher {
    /// A cipher for `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Cipher {
            aead: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Encrypts `plaintext` bound to `aad` (e.g. the row id) under a fresh
    /// random nonce.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random number generator is unavailable");
        let sealed = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 only fails for messages over 256 GiB");
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        blob.push(VERSION);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        blob
    }

    /// Decrypts a blob made by [`Cipher::encrypt`] with the same `aad`.
    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < 1 + NONCE_LEN + TAG_LEN || blob[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = blob[1..].split_at(NONCE_LEN);
        self.aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| CryptoError::Unauthentic)
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher([redacted])")
    }
}

/// The encryption key: `configured` when set, else the key file
/// `<database file name>.key` next to the database, created (mode 0600)
/// with a random key when absent.
pub fn load_or_create_key(
    configured: Option<[u8; 32]>,
    db_path: &Path,
) -> Result<[u8; 32], String> {
    if let Some(key) = configured {
        return Ok(key);
    }
    let path = key_file_path(db_path)?;
    match read_key_file(&path)? {
        Some(key) => Ok(key),
        None => create_key_file(&path),
    }
}

/// The encryption key without creating anything: `configured` when set, else
/// the key file next to the database, or None when that file does not exist.
pub fn load_key(configured: Option<[u8; 32]>, db_path: &Path) -> Result<Option<[u8; 32]>, String> {
    if let Some(key) = configured {
        return Ok(Some(key));
    }
    read_key_file(&key_file_path(db_path)?)
}

/// Create the key file next to the database (mode 0600) with a random key;
/// an existing file is used as it is.
pub fn create_key(db_path: &Path) -> Result<[u8; 32], String> {
    create_key_file(&key_file_path(db_path)?)
}

/// The key stored in the key file at `path` (e.g. one beside a backup), or
/// None when the file does not exist.
pub fn read_key_at(path: &Path) -> Result<Option<[u8; 32]>, String> {
    read_key_file(path)
}

/// `<dir>/<db file name>.key`; an empty parent means the working directory.
pub fn key_file_path(db_path: &Path) -> Result<PathBuf, String> {
    let name = db_path.file_name().ok_or_else(|| {
        format!(
            "database path {} has no file name to derive the key file from",
            db_path.display()
        )
    })?;
    let dir = match db_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut file_name = name.to_os_string();
    file_name.push(".key");
    Ok(dir.join(file_name))
}

/// The key in `path`, or None when the file does not exist.
fn read_key_file(path: &Path) -> Result<Option<[u8; 32]>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read key file {}: {e}", path.display())),
    };
    let mut key = [0u8; 32];
    let hex_text = text.trim();
    if hex_text.len() != 64 || hex::decode_to_slice(hex_text, &mut key).is_err() {
        return Err(format!(
            "key file {} must contain exactly 64 hex characters",
            path.display()
        ));
    }
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "key file {} is readable by other users; run chmod 600 on it",
                path.display()
            );
        }
    }
    Ok(Some(key))
}

/// Writes a new random key to `path` (mode 0600, never overwriting).
fn create_key_file(path: &Path) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| format!("cannot generate a key for {}: {e}", path.display()))?;
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        // Another process created it first: use its key.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return read_key_file(path)?
                .ok_or_else(|| format!("key file {} vanished while opening it", path.display()))
        }
        Err(e) => return Err(format!("cannot create key file {}: {e}", path.display())),
    };
    let write_err = |e: std::io::Error| format!("cannot write key file {}: {e}", path.display());
    file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
        .map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    // Make the new directory entry durable too; losing the key loses every credential.
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    log::info!("created encryption key file {}", path.display());
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7u8; 32];

    #[test]
    fn round_trip() {
        let c = Cipher::new(&KEY);
        let blob = c.encrypt(b"access-sandbox-123", b"conn-1");
        assert_eq!(blob[0], VERSION);
        assert_eq!(blob.len(), 1 + NONCE_LEN + 18 + TAG_LEN);
        assert_eq!(
            c.decrypt(&blob, b"conn-1"),
            Ok(b"access-sandbox-123".to_vec())
        );
        // A fresh nonce each time.
        assert_ne!(blob, c.encrypt(b"access-sandbox-123", b"conn-1"));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let c = Cipher::new(&KEY);
        let blob = c.encrypt(b"secret", b"");
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(c.decrypt(&bad, b"").is_err(), "byte {i}");
        }
        assert_eq!(c.decrypt(&blob[..10], b""), Err(CryptoError::Malformed));
    }

    #[test]
    fn wrong_key_fails() {
        let blob = Cipher::new(&KEY).encrypt(b"secret", b"a");
        assert_eq!(
            Cipher::new(&[8u8; 32]).decrypt(&blob, b"a"),
            Err(CryptoError::Unauthentic)
        );
    }

    #[test]
    fn wrong_aad_fails() {
        let c = Cipher::new(&KEY);
        let blob = c.encrypt(b"secret", b"conn-1");
        assert_eq!(c.decrypt(&blob, b"conn-2"), Err(CryptoError::Unauthentic));
    }

    #[test]
    fn debug_hides_key() {
        assert_eq!(format!("{:?}", Cipher::new(&KEY)), "Cipher([redacted])");
    }

    #[test]
    fn configured_key_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("bb.db");
        assert_eq!(load_or_create_key(Some(KEY), &db), Ok(KEY));
        assert!(!dir.path().join("bb.db.key").exists());
    }

    #[test]
    fn key_file_created_0600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("bb.db");
        let first = load_or_create_key(None, &db).expect("create");
        let key_path = dir.path().join("bb.db.key");
        let mode = fs::metadata(&key_path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = fs::read_to_string(&key_path).expect("read");
        assert_eq!(text.trim(), hex::encode(first));
        assert_eq!(load_or_create_key(None, &db), Ok(first));
    }

    #[test]
    fn malformed_key_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("bb.db");
        let key_path = dir.path().join("bb.db.key");
        fs::write(&key_path, "not-hex").expect("write");
        let e = load_or_create_key(None, &db).expect_err("malformed");
        assert!(e.contains(&key_path.display().to_string()), "{e}");
        fs::write(&key_path, "ab".repeat(31)).expect("write");
        assert!(load_or_create_key(None, &db).is_err());
    }

    #[test]
    fn key_path_for_bare_file_name() {
        assert_eq!(
            key_file_path(Path::new("breadbox.db")),
            Ok(PathBuf::from("./breadbox.db.key"))
        );
    }
}
