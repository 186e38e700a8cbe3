//! Seals: proof, carried by an answer, that its transaction was suspended at the node.
//!
//! A bridge started with a seal key puts on every event that names a transaction the
//! header [`SEAL_HEADER`]: an HMAC-SHA256, under the key, of the node's name, the
//! transaction's ids and the event's deadline (header `Evapi-Deadline`, so a seal dies
//! with its call). Apps copy both onto their answer. Such a bridge writes an answer that
//! names a transaction only with a valid seal, whether it read that event itself or an
//! earlier bridge of the node did (a restart): the answers stored while no bridge ran
//! are written, and an answer forged by anyone who may publish on the answers subject,
//! without the key, is refused (without a key a bridge takes answers to the
//! transactions it read, and for `predecessor_grace` after it starts, to any).
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

/// Most bytes read from a seal key's file.
pub const MAX_SEAL_KEY_LEN: usize = 4096;

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
    /// More than [`MAX_SEAL_KEY_LEN`] bytes: not a key file.
    #[error("the seal key file {path} holds more than {MAX_SEAL_KEY_LEN} bytes: is it the key?")]
    TooLong {
        /// The file.
        path: String,
    },
    /// Control bytes inside: not one text line.
    #[error("the seal key file {path} is not one line of text (make one with `head -c 32 /dev/urandom | base64 > FILE`)")]
    NotText {
        /// The file.
        path: String,
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

    /// The key in the file at `path`: a text line (e.g. `head -c 32 /dev/urandom |
    /// base64`), white space at either end left out. A file others may read is
    /// warned about.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or holds too few or too many bytes.
    pub fn from_file(path: &Path) -> Result<Self, SealKeyError> {
        use std::io::Read as _;
        let shown = || path.display().to_string();
        let read = |source| SealKeyError::Read {
            path: shown(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file.metadata().map_err(read)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %shown(), mode = format!("{:o}", mode & 0o777), "the seal key file may be read by others: chmod 600 it");
            }
        }
        let mut bytes = Vec::new();
        let limit = u64::try_from(MAX_SEAL_KEY_LEN).unwrap_or(u64::MAX) + 1;
        file.take(limit).read_to_end(&mut bytes).map_err(read)?;
        if bytes.len() > MAX_SEAL_KEY_LEN {
            return Err(SealKeyError::TooLong { path: shown() });
        }
        let key = bytes.trim_ascii();
        if key.iter().any(u8::is_ascii_control) {
            return Err(SealKeyError::NotText { path: shown() });
        }
        Self::new(key)
    }

    /// The seal of transaction `id` suspended at `node`, whose event carries the
    /// deadline header value `deadline` (empty: none).
    #[must_use]
    pub fn seal(&self, node: &str, id: TransactionId, deadline: &str) -> String {
        let tag = hmac::sign(&self.0, &sealed_text(node, id, deadline));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `seal` (a header's value, from the network) is the seal of `id` at
    /// `node` with the deadline header value `deadline`; compared in constant time.
    #[must_use]
    pub fn verify(&self, node: &str, id: TransactionId, deadline: &str, seal: &[u8]) -> bool {
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seal) else {
            return false;
        };
        hmac::verify(&self.0, &sealed_text(node, id, deadline), &tag).is_ok()
    }

    /// The seal of a frame naming no transaction that an app holding the key sends to
    /// `node` (a tag, a hello): base64 (URL-safe, unpadded, as every seal) of HMAC-SHA256 over `evapi-frame`, NUL, the
    /// node, NUL, the frame's bytes. With a key, the bridge writes such a frame only
    /// with this seal in its `Evapi-Seal` header.
    #[must_use]
    pub fn seal_frame(&self, node: &str, frame: &[u8]) -> String {
        let tag = hmac::sign(&self.0, &frame_text(node, frame));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `seal` is [`SealKey::seal_frame`] of `frame` for `node`.
    #[must_use]
    pub fn verify_frame(&self, node: &str, frame: &[u8], seal: &[u8]) -> bool {
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seal) else {
            return false;
        };
        hmac::verify(&self.0, &frame_text(node, frame), &tag).is_ok()
    }
}

/// What is signed: a version, the node, the ids and the deadline, unambiguous (the
/// node's name and the header hold no NUL: a NATS subject token and header cannot).
/// What [`SealKey::seal_frame`] signs.
fn frame_text(node: &str, frame: &[u8]) -> Vec<u8> {
    let mut text = Vec::with_capacity(13 + node.len() + frame.len());
    text.extend_from_slice(b"evapi-frame\0");
    text.extend_from_slice(node.as_bytes());
    text.push(0);
    text.extend_from_slice(frame);
    text
}

fn sealed_text(node: &str, id: TransactionId, deadline: &str) -> Vec<u8> {
    format!(
        "evapi-seal-2\0{node}\0{}\0{}\0{deadline}",
        id.index, id.label
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_seal_binds_node_and_bytes_and_is_no_transaction_seal() {
        let key = SealKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let frame = br#"{"tag":"billing"}"#;
        let seal = key.seal_frame("sip-a", frame);
        assert!(key.verify_frame("sip-a", frame, seal.as_bytes()));
        assert!(!key.verify_frame("sip-b", frame, seal.as_bytes()));
        assert!(!key.verify_frame("sip-a", br#"{"tag":"hijacked"}"#, seal.as_bytes()));
        assert!(!key.verify_frame("sip-a", frame, b"not base64!"));
        let other = SealKey::new(b"another key, 32 bytes long......").unwrap();
        assert!(!other.verify_frame("sip-a", frame, seal.as_bytes()));
        // A transaction's seal is no frame's seal.
        let tx = key.seal("sip-a", id(1, 2), "");
        assert!(!key.verify_frame("sip-a", frame, tx.as_bytes()));
    }

    fn id(index: u32, label: u32) -> TransactionId {
        TransactionId { index, label }
    }

    #[test]
    fn a_seal_holds_for_its_node_ids_and_deadline_only() {
        let key = SealKey::new(&[7u8; 32]).unwrap();
        let d = "1796290000000";
        let seal = key.seal("sip-a", id(1, 2), d);
        let holds =
            |key: &SealKey, node, ids, deadline| key.verify(node, ids, deadline, seal.as_bytes());
        assert!(holds(&key, "sip-a", id(1, 2), d));
        assert!(!holds(&key, "sip-b", id(1, 2), d), "another node");
        assert!(!holds(&key, "sip-a", id(1, 3), d), "another label");
        assert!(!holds(&key, "sip-a", id(2, 2), d), "another index");
        assert!(!holds(&key, "sip-a", id(1, 2), ""), "the deadline left out");
        assert!(
            !holds(&key, "sip-a", id(1, 2), "9999999999999"),
            "another deadline"
        );
        let other = SealKey::new(&[8u8; 32]).unwrap();
        assert!(!holds(&other, "sip-a", id(1, 2), d), "another key");
        // "sip-a" with index 12 must not read as "sip-a1" with index 2.
        assert_ne!(
            key.seal("sip-a1", id(2, 2), d),
            key.seal("sip-a", id(12, 2), d)
        );
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
            assert!(!key.verify("n", id(1, 1), "", junk));
        }
        assert!(matches!(
            SealKey::new(b"short"),
            Err(SealKeyError::TooShort { len: 5 })
        ));
    }

    #[test]
    fn a_key_file_is_one_bounded_text_line() {
        let path = std::env::temp_dir().join(format!("evapi-seal-{}", std::process::id()));
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
        let key = SealKey::from_file(&path).unwrap();
        let same = SealKey::new("k".repeat(40).as_bytes()).unwrap();
        assert_eq!(key.seal("n", id(1, 1), ""), same.seal("n", id(1, 1), ""));
        std::fs::write(&path, "too short\n").unwrap();
        assert!(SealKey::from_file(&path).is_err());
        std::fs::write(&path, [&[b'k'; 20][..], b"\n", &[b'k'; 20]].concat()).unwrap();
        assert!(matches!(
            SealKey::from_file(&path),
            Err(SealKeyError::NotText { .. })
        ));
        std::fs::write(&path, vec![b'k'; MAX_SEAL_KEY_LEN + 1]).unwrap();
        assert!(matches!(
            SealKey::from_file(&path),
            Err(SealKeyError::TooLong { .. })
        ));
        let _ = std::fs::remove_file(&path);
        let err = SealKey::from_file(&path).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the seal key"),
            "{err}"
        );
    }
}
