//! Invariants of the server's control-line interpreter and the control token check,
//! shared by the `control_line` fuzz target and the corpus replay test.
//!
//! Invariants, beyond "no panic":
//! - every line gets exactly one reply line: a JSON object with a boolean `ok`, and a
//!   string `error` when `ok` is false; an `id` in a command object is echoed as given;
//! - with no client connected, no command reports a delivery;
//! - the control token check accepts exactly `{"auth": TOKEN}` objects with that token.
use std::sync::OnceLock;

use evapi_server::{Config, Handle, NoRoutes, Server};
use serde_json::Value;

const TOKEN: &str = "fuzz-control-token-0123";

fn handle() -> &'static Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| Server::new(Config::default(), NoRoutes).handle())
}

/// Check every invariant on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    let accepted = evapi_server::control::check_auth_line(data, TOKEN);
    let is_token = parsed
        .as_ref()
        .and_then(|v| v.as_object())
        .and_then(|o| o.get("auth"))
        .and_then(Value::as_str)
        == Some(TOKEN);
    assert_eq!(accepted, is_token, "auth line check");

    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let reply = evapi_server::control::execute(handle(), line);
    assert!(!reply.contains('\n'), "one line: {reply}");
    let reply: Value = serde_json::from_str(&reply).expect("the reply is JSON");
    let ok = reply["ok"].as_bool().expect("a boolean ok");
    if !ok {
        assert!(reply["error"].is_string(), "an error text: {reply}");
    }
    if let Ok(Value::Object(cmd)) = serde_json::from_str::<Value>(line) {
        if let Some(id) = cmd.get("id") {
            assert_eq!(&reply["id"], id, "the id is echoed");
        }
    }
    if let Some(n) = reply.get("delivered").and_then(Value::as_u64) {
        assert_eq!(n, 0, "no client is connected: {reply}");
    }
}
