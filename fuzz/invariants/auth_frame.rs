//! Invariants of the token handshake: the first-frame parser and the token table,
//! shared by the `auth_frame` fuzz target and the corpus replay test.
//!
//! Invariants, beyond "no panic":
//! - `parse_auth_frame` returns a token exactly when the frame is a JSON object whose
//!   `auth` member is a string, and returns that string;
//! - the configured table names a token only for the configured tokens;
//! - a token file that parses names each of its tokens, and refuses short tokens.
use std::sync::OnceLock;

use evapi_server::auth::{parse_auth_frame, Tokens, MIN_TOKEN_LEN};
use serde_json::Value;

fn table() -> &'static Tokens {
    static TABLE: OnceLock<Tokens> = OnceLock::new();
    TABLE.get_or_init(|| {
        Tokens::parse("router router-token-0123456789\nbilling billing-token-0123456789\n")
            .expect("a valid table")
    })
}

/// Check every invariant on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let expected = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|v| v.get("auth").and_then(Value::as_str).map(str::to_owned));
    let got = parse_auth_frame(data).ok();
    assert_eq!(got, expected, "the token of a first frame");
    if let Some(token) = got {
        let name = table().check(token.as_bytes());
        match token.as_str() {
            "router-token-0123456789" => assert_eq!(name.as_deref(), Some("router")),
            "billing-token-0123456789" => assert_eq!(name.as_deref(), Some("billing")),
            _ => assert_eq!(name, None, "only configured tokens name a client"),
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tokens) = Tokens::parse(text) {
        assert!(!tokens.is_empty());
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (name, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(
                token.len() >= MIN_TOKEN_LEN,
                "short token accepted: {line:?}"
            );
            assert_eq!(tokens.check(token.as_bytes()).as_deref(), Some(name));
        }
    }
}
