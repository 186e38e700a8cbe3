//! Token authentication: the token table, the first-frame handshake, and the slowdown
//! of addresses that keep failing.
//!
//! With tokens configured, a new connection is pending until its first frame is
//! `{"auth":"<token>"}`; the server answers `{"auth":"ok","name":"<name>"}` and only
//! then runs connection-new. This module is sans-I/O (time is an input); the
//! connection task drives it.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the content
//! nor the length of a configured token leaks through timing. The table never prints
//! a token (its `Debug` shows names only).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Longest first frame read while authenticating, in bytes; a longer one fails.
pub const MAX_AUTH_FRAME: usize = 4096;
/// Longest token name, in bytes (it is logged and passed to routes).
pub const MAX_NAME_LEN: usize = 64;
/// Shortest token accepted in a token file: 16 bytes (a guessable token is no guard).
pub const MIN_TOKEN_LEN: usize = 16;

use evapi_ops::throttle::{digest, digests_match, Digest};

/// The `name token` table.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Arc<str>, Digest)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `name token`, or breaks a rule.
    #[error("line {line}: {what}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the token itself).
        what: String,
    },
    /// No token at all: every client would be refused.
    #[error("no tokens (lines are `name token`; # starts a comment)")]
    Empty,
}

impl Tokens {
    /// Parse a token file: one `name token` pair per line, separated by white space;
    /// blank lines and lines starting with `#` are skipped. Names are unique, at most
    /// [`MAX_NAME_LEN`] bytes of letters, digits, `-`, `_`, `.`, `@`; tokens are at least
    /// [`MIN_TOKEN_LEN`] bytes and unique.
    ///
    /// # Errors
    ///
    /// The first line that breaks a rule, or [`TokensError::Empty`].
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut entries: Vec<(Arc<str>, Digest)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| TokensError::Line {
                line: line_no,
                what: what.to_owned(),
            };
            let mut parts = line.split_whitespace();
            let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected `name token`"));
            };
            if name.len() > MAX_NAME_LEN
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
            {
                return Err(bad(&format!(
                    "name {name:?}: up to {MAX_NAME_LEN} letters, digits, '-', '_', '.', '@'"
                )));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(&format!(
                    "the token of {name:?} is shorter than {MIN_TOKEN_LEN} bytes"
                )));
            }
            let d = digest(token.as_bytes());
            if entries.iter().any(|(n, _)| &**n == name) {
                return Err(bad(&format!("name {name:?} appears twice")));
            }
            if entries.iter().any(|(_, e)| digests_match(e, &d)) {
                return Err(bad(&format!("the token of {name:?} is used twice")));
            }
            entries.push((name.into(), d));
        }
        if entries.is_empty() {
            return Err(TokensError::Empty);
        }
        Ok(Self { entries })
    }

    /// Read and [`parse`](Self::parse) a token file. A file others may read is
    /// warned about (as the bridge's seal key file is): its tokens let anyone in.
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse), or the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if let Some(mode) = readable_by_others(path) {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the token file may be read by others: chmod 600 it");
        }
        Self::parse(&text)
    }

    /// The name whose token this is. Every entry is compared, each in constant time.
    #[must_use]
    pub fn check(&self, token: &[u8]) -> Option<Arc<str>> {
        let d = digest(token);
        let mut found = None;
        for (name, e) in &self.entries {
            if digests_match(e, &d) {
                found = Some(Arc::clone(name));
            }
        }
        found
    }

    /// How many tokens the table holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty (never, for one built by [`parse`](Self::parse)).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a first frame is not an authentication request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFrameError {
    /// Not a JSON object.
    #[error("first frame is not a JSON object")]
    NotJson,
    /// A JSON object without a string `auth` member.
    #[error("first frame has no \"auth\" string")]
    NoAuth,
}

/// The token in a first frame `{"auth":"<token>"}` (other members are ignored).
///
/// # Errors
///
/// [`AuthFrameError`] when the frame is not such an object.
pub fn parse_auth_frame(frame: &[u8]) -> Result<String, AuthFrameError> {
    let value: serde_json::Value =
        serde_json::from_slice(frame).map_err(|_| AuthFrameError::NotJson)?;
    let object = value.as_object().ok_or(AuthFrameError::NotJson)?;
    match object.get("auth") {
        Some(serde_json::Value::String(token)) => Ok(token.clone()),
        _ => Err(AuthFrameError::NoAuth),
    }
}

/// The frame the server sends after a good token.
#[must_use]
pub fn ok_frame(name: &str) -> Vec<u8> {
    serde_json::json!({"auth": "ok", "name": name})
        .to_string()
        .into_bytes()
}

/// The file's permission bits when group or others may read or write it.
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 34: a token file readable by everyone got no warning (the seal key did).
    #[test]
    fn a_token_file_others_may_read_is_noticed() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("evapi-tokens-mode-{}", std::process::id()));
        std::fs::write(&path, "app-a secret-token-0123456789\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(readable_by_others(&path), Some(0o644));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(readable_by_others(&path), None);
        let _ = std::fs::remove_file(&path);
    }

    const FILE: &str =
        "# apps\nrouter  s3cret-router-token-1\n\nbilling\tbilling-token-0123456789\n";

    #[test]
    fn a_token_file_names_each_token() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens.check(b"s3cret-router-token-1").as_deref(),
            Some("router")
        );
        assert_eq!(
            tokens.check(b"billing-token-0123456789").as_deref(),
            Some("billing")
        );
        assert_eq!(tokens.check(b"s3cret-router-token-"), None);
        assert_eq!(tokens.check(b""), None);
        assert_eq!(tokens.check(b"router"), None, "a name is not a token");
    }

    #[test]
    fn debug_never_shows_a_token() {
        let shown = format!("{:?}", Tokens::parse(FILE).unwrap());
        assert_eq!(shown, r#"["router", "billing"]"#);
    }

    #[test]
    fn bad_token_files_name_the_line_and_never_the_token() {
        let cases = [
            ("a short\n", 1, "shorter than 16"),
            ("x\n", 1, "expected `name token`"),
            ("a aaaaaaaaaaaaaaaaaaaa b\n", 1, "expected"),
            (
                "a aaaaaaaaaaaaaaaaaaaa\na bbbbbbbbbbbbbbbbbbbbb\n",
                2,
                "appears twice",
            ),
            (
                "a aaaaaaaaaaaaaaaaaaaa\nb aaaaaaaaaaaaaaaaaaaa\n",
                2,
                "used twice",
            ),
            ("#\nna/me aaaaaaaaaaaaaaaaaaaa\n", 2, "name \"na/me\""),
        ];
        for (text, line, what) in cases {
            let err = Tokens::parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("line {line}: ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(what), "{text:?}: {err}");
            assert!(
                !err.contains("aaaaaaaa") && !err.contains("short\""),
                "{err}"
            );
        }
        assert!(matches!(
            Tokens::parse("# nothing\n\n"),
            Err(TokensError::Empty)
        ));
    }

    #[test]
    fn the_first_frame_must_be_an_auth_object() {
        assert_eq!(parse_auth_frame(br#"{"auth":"tok"}"#).unwrap(), "tok");
        assert_eq!(parse_auth_frame(br#"{"x":1,"auth":"tok"}"#).unwrap(), "tok");
        assert_eq!(
            parse_auth_frame(br#"{"auth":5}"#),
            Err(AuthFrameError::NoAuth)
        );
        assert_eq!(
            parse_auth_frame(br#"{"event":"x"}"#),
            Err(AuthFrameError::NoAuth)
        );
        assert_eq!(parse_auth_frame(b"[1]"), Err(AuthFrameError::NotJson));
        assert_eq!(parse_auth_frame(b"\xff"), Err(AuthFrameError::NotJson));
        assert_eq!(
            ok_frame("router"),
            br#"{"auth":"ok","name":"router"}"#.to_vec()
        );
    }
}
