//! Seals: proof, carried by an answer, that its transaction was suspended at the node.
//!
//! A bridge started with a seal key puts on every suspend event it publishes the header
//! [`SEAL_HEADER`]: an HMAC-SHA256, under the key, of the node's name and the
//! transaction's ids. Apps copy it onto their answer. A bridge answers a node's call only
//! for transactions it read from the node itself, or, sealed, for transactions an
//! earlier bridge of the node read (a restart): so the answers stored while no bridge
//! ran are written, and an answer forged by anyone who may publish on the answers
//! subject, without the key, is refused at once (without a key a starting bridge lets
//! unknown transactions through for `predecessor_grace`).
//!
//! Plain data: no I/O but reading the key's file.

use std::path::Path;

use base64::Engine as _;
use evapi_proto::TransactionId;
use ring::hmac;

/// The header of a sealed event, copied onto its answer.
pub const SEAL_HEADER: &str = "Evapi-Seal";

/// Fewest bytes in a seal key: 256 bits.
pub const MIN_SEAL_KEY_LEN: usize = 32;

/// Why a seal key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealKeyError {
    /// The file cannot be read.
    #[error("cannot read the seal key {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Too short to resist guessing.
    #[error("the seal key has {len} bytes, fewer than {MIN_SEAL_KEY_LEN} (make one with `head -c 32 /dev/urandom | base64 > FILE`)")]
    TooShort {
        /// Its length.
        len: usize,
    },
}

/// The key the bridges of a node share to seal events and check answers.
pub struct SealKey(hmac::Key);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A key from `secret` (at least [`MIN_SEAL_KEY_LEN`] bytes).
    ///
    /// # Errors
    ///
    /// [`SealKeyError::TooShort`].
    pub fn new(secret: &[u8]) -> Result<Self, SealKeyError> {
        if secret.len() < MIN_SEAL_KEY_LEN {
            return Err(SealKeyError::TooShort { len: secret.len() });
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The key in the file at `path`: its bytes, white space at either end left out
    /// (so a base64 line written by `base64` works).
    ///
    /// # Errors
    ///
    /// The file cannot be read, or holds too few bytes.
    pub fn from_file(path: &Path) -> Result<Self, SealKeyError> {
        let bytes = std::fs::read(path).map_err(|source| SealKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(bytes.trim_ascii())
    }

    /// The seal of transaction `id` suspended at `node`.
    #[must_use]
    pub fn seal(&self, node: &str, id: TransactionId) -> String {
        let tag = hmac::sign(&self.0, &sealed_text(node, id));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `seal` (a header's value, from the network) is the seal of `id` at
    /// `node`; compared in constant time.
    #[must_use]
    pub fn verify(&self, node: &str, id: TransactionId, seal: &[u8]) -> bool {
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seal) else {
            return false;
        };
        hmac::verify(&self.0, &sealed_text(node, id), &tag).is_ok()
    }
}

/// What is signed: a version, the node and the ids, unambiguous (the node's name may
/// hold any character but NUL, which a NATS subject token cannot).
fn sealed_text(node: &str, id: TransactionId) -> Vec<u8> {
    format!("evapi-seal-1\0{node}\0{}\0{}", id.index, id.label).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32, label: u32) -> TransactionId {
        TransactionId { index, label }
    }

    #[test]
    fn a_seal_holds_for_its_node_and_ids_only() {
        let key = SealKey::new(&[7u8; 32]).unwrap();
        let seal = key.seal("sip-a", id(1, 2));
        assert!(key.verify("sip-a", id(1, 2), seal.as_bytes()));
        assert!(
            !key.verify("sip-b", id(1, 2), seal.as_bytes()),
            "another node"
        );
        assert!(
            !key.verify("sip-a", id(1, 3), seal.as_bytes()),
            "another label"
        );
        assert!(
            !key.verify("sip-a", id(2, 2), seal.as_bytes()),
            "another index"
        );
        let other = SealKey::new(&[8u8; 32]).unwrap();
        assert!(
            !other.verify("sip-a", id(1, 2), seal.as_bytes()),
            "another key"
        );
        // "sip-a" with index 12 must not read as "sip-a1" with index 2.
        assert_ne!(key.seal("sip-a1", id(2, 2)), key.seal("sip-a", id(12, 2)));
    }

    #[test]
    fn garbage_is_no_seal_and_short_keys_are_refused() {
        let key = SealKey::new(&[7u8; 32]).unwrap();
        for junk in [
            &b""[..],
            b"!!!",
            b"AAAA",
            &[0xff; 300],
            b"\r\nX-Injected: 1",
        ] {
            assert!(!key.verify("n", id(1, 1), junk));
        }
        assert!(matches!(
            SealKey::new(b"short"),
            Err(SealKeyError::TooShort { len: 5 })
        ));
    }

    #[test]
    fn a_key_file_is_read_without_its_line_end() {
        let path = std::env::temp_dir().join(format!("evapi-seal-{}", std::process::id()));
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
        let key = SealKey::from_file(&path).unwrap();
        let same = SealKey::new("k".repeat(40).as_bytes()).unwrap();
        assert_eq!(key.seal("n", id(1, 1)), same.seal("n", id(1, 1)));
        std::fs::write(&path, "too short\n").unwrap();
        assert!(SealKey::from_file(&path).is_err());
        let _ = std::fs::remove_file(&path);
        let err = SealKey::from_file(&path).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the seal key"),
            "{err}"
        );
    }
}
