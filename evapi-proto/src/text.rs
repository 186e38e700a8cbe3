//! Peer bytes shown on a terminal: the one home of escaping. A payload, a tag or a
//! Call-ID from the network may hold controls a terminal executes (OSC 52 writes the
//! clipboard, OSC 0 the title, `\r` overwrites a line, SGR 8 hides text, bidi controls
//! reorder it); every printer of peer text goes through these (the `git`/`less` way:
//! show a control, never let it act).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: C0 but newline, DEL, C1, the bidi
/// embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), and the line and
/// paragraph separators.
#[must_use]
pub fn is_unsafe_for_terminal(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// `text` with every unsafe character ([`is_unsafe_for_terminal`]) written visibly:
/// `\t`, `\r`, `\x1b` for those under U+0100, `\u{202e}` for the others. Borrowed when
/// there is none.
#[must_use]
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_for_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_unsafe_for_terminal(c) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\t' => out.write_str("\\t"),
            '\r' => out.write_str("\\r"),
            c if (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32),
            c => write!(out, "\\u{{{:x}}}", c as u32),
        };
    }
    Cow::Owned(out)
}

/// [`for_terminal`] for bytes that may not be UTF-8: invalid bytes are shown as
/// `\xNN`.
#[must_use]
pub fn bytes_for_terminal(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return for_terminal(text);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        out.push_str(&for_terminal(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// JSON text (as serde_json writes it, C0 already escaped in strings) with the other
/// unsafe characters escaped as JSON does (`\u0085`): still the same JSON, now safe on
/// a terminal. Outside strings valid JSON holds none of them. ESC is kept: serde_json
/// never writes it raw, so one here is a colouriser's own (colored_json's escapes).
#[must_use]
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe_for_terminal) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe_for_terminal(c) && c != '\u{1b}' {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_hostile_peer_sends_is_shown_not_executed() {
        // OSC 52 (clipboard), OSC 0 (title), SGR 8 (hidden), a carriage return.
        let attack = "\u{1b}]52;c;cm0gLXJmIH4vKg==\u{7}\u{1b}]0;pwned\u{7}\u{1b}[8mhidden\r!";
        let shown = for_terminal(attack);
        assert!(!shown.chars().any(is_unsafe_for_terminal), "{shown}");
        assert_eq!(
            shown,
            "\\x1b]52;c;cm0gLXJmIH4vKg==\\x07\\x1b]0;pwned\\x07\\x1b[8mhidden\\r!"
        );
        assert_eq!(
            for_terminal("a\u{7f}b\u{85}c\u{202e}d\u{2069}"),
            "a\\x7fb\\x85c\\u{202e}d\\u{2069}"
        );
        assert_eq!(for_terminal("tab\there"), "tab\\there");
    }

    #[test]
    fn plain_text_and_newlines_pass_unchanged_and_borrowed() {
        let text = "{\"event\":\"suspend\"}\nüñí 日本 🙂";
        assert!(matches!(for_terminal(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn invalid_bytes_are_shown_as_hex() {
        assert_eq!(bytes_for_terminal(b"ok\xff\x1b[2J"), "ok\\xff\\x1b[2J");
        assert_eq!(bytes_for_terminal(b"plain"), "plain");
    }

    #[test]
    fn json_stays_the_same_json() {
        let value = serde_json::json!({"k\u{85}": "v\u{7f}\u{202e}\u{1b}x"});
        let text = value.to_string();
        let safe = json_for_terminal(&text);
        assert!(!safe.chars().any(is_unsafe_for_terminal), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }
}
