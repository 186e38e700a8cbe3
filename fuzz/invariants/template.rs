//! Invariants of the simulator's event templates (Kamailio-style pseudo-variables),
//! shared by the `template` fuzz target and the corpus replay test. Templates come
//! from scenario files; the values that go into them come from SIP requests and app
//! messages, hostile until checked.
//!
//! Input: the template's text, a NUL byte, then the values (Call-ID, From, request
//! URI, To, method, the app's message, its address), NUL-separated.
//!
//! Invariants, beyond "no panic":
//! - the simulator's default event template, with any values, renders a JSON object
//!   with exactly its seven fields, and `ci`, `fu`, `ru`, `rm` carry the values
//!   unchanged;
//! - any JSON template that parses and renders valid JSON with plain values renders
//!   valid JSON of the same shape (same fields, same nesting; only string contents
//!   differ) with any values: no value can add, remove or rename a field.
use evapi_proto::TransactionId;
use evapi_sim::request::Request;
use evapi_sim::scenario::DEFAULT_EVENT;
use evapi_sim::template::{EvapiEnv, Template, Vars};
use serde_json::Value;

fn request(values: &[String]) -> Request {
    let value = |i: usize| values.get(i).cloned().unwrap_or_default();
    Request {
        call_id: value(0),
        from_uri: value(1),
        ruri: value(2),
        to_uri: value(3),
        method: value(4),
        cseq: 7,
        source: std::net::SocketAddr::from(([192, 0, 2, 7], 5062)),
    }
}

fn render(template: &Template, request: &Request, msg: &str, srcaddr: &str) -> String {
    template.render_string(&Vars {
        request,
        tid: Some(TransactionId { index: 5, label: 6 }),
        evapi: Some(EvapiEnv {
            srcaddr,
            srcport: 4000,
            conidx: 3,
            msg,
        }),
    })
}

/// The value with every string emptied: what a value inside a string cannot change.
fn shape(value: &Value) -> Value {
    match value {
        Value::String(_) => Value::String(String::new()),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        other => other.clone(),
    }
}

/// Check every invariant on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let values: Vec<String> = parts
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let hostile = request(&values);
    let msg = values.get(5).map_or("", String::as_str);
    let srcaddr = values.get(6).map_or("", String::as_str);

    let default = Template::parse(DEFAULT_EVENT).expect("the default template parses");
    let rendered = render(&default, &hostile, msg, srcaddr);
    let event: Value = serde_json::from_str(&rendered).expect("the default event is JSON");
    let keys: Vec<&str> = event
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["event", "tindex", "tlabel", "rm", "ru", "fu", "ci"]);
    assert_eq!(event["ci"], Value::from(hostile.call_id.as_str()));
    assert_eq!(event["fu"], Value::from(hostile.from_uri.as_str()));
    assert_eq!(event["ru"], Value::from(hostile.ruri.as_str()));
    assert_eq!(event["rm"], Value::from(hostile.method.as_str()));

    let Ok(template) = Template::parse(&text) else {
        return;
    };
    let plain = request(&vec!["v".to_owned(); 5]);
    let Ok(expected) = serde_json::from_str::<Value>(&render(&template, &plain, "v", "v")) else {
        return;
    };
    let json = text
        .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .starts_with(['{', '[', '"']);
    if !json {
        return;
    }
    let got = render(&template, &hostile, msg, srcaddr);
    let got: Value = serde_json::from_str(&got)
        .unwrap_or_else(|e| panic!("values broke a JSON template ({e}): {got}"));
    assert_eq!(
        shape(&got),
        shape(&expected),
        "values changed the event's shape"
    );
}
