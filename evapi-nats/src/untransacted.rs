//! Frames from NATS that name no transaction (`{"tag":"billing"}`, a hello): they
//! resume no call, but the node's `message-received` route acts on them (an
//! `evapi_set_tag`, say), so whoever may publish answers could steer the node. The
//! bridge writes none by default; [`UntransactedRules`] says which it may write.

use std::collections::BTreeSet;

/// Which frames naming no transaction the bridge writes to its node (the bridge's
/// `--allow-untransacted`). The default writes none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UntransactedRules {
    /// Anything (`*`): the behaviour before these rules, for trusted publishers only.
    any: bool,
    /// JSON objects whose top-level keys are all in one of these sets.
    key_sets: Vec<BTreeSet<String>>,
}

/// Why a rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--allow-untransacted {given:?}: expected `*` or comma-separated JSON keys such as `tag` or `event,name` (letters, digits, '_', '-', '.')")]
pub struct RuleError {
    given: String,
}

impl UntransactedRules {
    /// No frame naming no transaction is written (the default).
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Add the rule `text`: `*` for any frame, or the keys an allowed JSON object may
    /// have at its top level, comma-separated (`tag` allows `{"tag":"x"}`; `event,name`
    /// allows `{"event":"hello","name":"a"}` and `{"event":"hello"}`).
    ///
    /// # Errors
    ///
    /// An empty rule, or a key with other characters than letters, digits, `_`, `-`, `.`.
    pub fn allow(&mut self, text: &str) -> Result<(), RuleError> {
        let text = text.trim();
        if text == "*" {
            self.any = true;
            return Ok(());
        }
        let keys: BTreeSet<String> = text.split(',').map(|k| k.trim().to_owned()).collect();
        let valid = |k: &String| {
            !k.is_empty()
                && k.len() <= 64
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if keys.is_empty() || !keys.iter().all(valid) {
            return Err(RuleError {
                given: text.to_owned(),
            });
        }
        self.key_sets.push(keys);
        Ok(())
    }

    /// Whether no rule allows anything.
    #[must_use]
    pub fn is_none(&self) -> bool {
        !self.any && self.key_sets.is_empty()
    }

    /// Whether `frame` (naming no transaction) may be written: a JSON object, not
    /// empty, whose keys all belong to one rule's set; any frame with `*`.
    #[must_use]
    pub fn allows(&self, frame: &[u8]) -> bool {
        if self.any {
            return true;
        }
        if self.key_sets.is_empty() {
            return false;
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(frame) else {
            return false;
        };
        !map.is_empty()
            && self
                .key_sets
                .iter()
                .any(|set| map.keys().all(|k| set.contains(k.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(texts: &[&str]) -> UntransactedRules {
        let mut r = UntransactedRules::none();
        for t in texts {
            r.allow(t).unwrap();
        }
        r
    }

    #[test]
    fn none_are_written_by_default() {
        let r = UntransactedRules::none();
        assert!(r.is_none());
        for frame in [&br#"{"tag":"hijacked"}"#[..], b"hello", b"{}", b""] {
            assert!(!r.allows(frame), "{}", String::from_utf8_lossy(frame));
        }
    }

    #[test]
    fn an_object_passes_only_with_keys_of_one_rule() {
        let r = rules(&["tag", "event,name"]);
        assert!(r.allows(br#"{"tag":"billing"}"#));
        assert!(r.allows(br#"{"event":"hello","name":"a"}"#));
        assert!(r.allows(br#"{"event":"hello"}"#));
        // A key of another rule, or none of any: refused.
        assert!(!r.allows(br#"{"tag":"x","event":"y"}"#));
        assert!(!r.allows(br#"{"tag":"x","code":486}"#));
        assert!(!r.allows(b"{}"));
        assert!(!r.allows(br#"["tag"]"#));
        assert!(!r.allows(b"tag billing"));
        assert!(!r.allows(br#"{"tag":"x""#));
    }

    #[test]
    fn a_star_allows_anything_and_bad_rules_are_refused() {
        assert!(rules(&["*"]).allows(b"plain text"));
        let mut r = UntransactedRules::none();
        for bad in ["", ",", "tag,", "a b", "t\u{1b}[2J", &"k".repeat(65)] {
            assert!(r.allow(bad).is_err(), "{bad:?}");
        }
        assert!(r.is_none());
    }
}
