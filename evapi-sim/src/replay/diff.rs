//! Two answers compared field by field.

use serde_json::Value;

pub(super) fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = value;
    for key in parents {
        match at.get_mut(key.as_str()) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(map) = at.as_object_mut() {
        map.remove(last.as_str());
    }
}

/// Each leaf where `a` and `b` differ, as `path: a -> b` (`(absent)` for a missing field).
pub(super) fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    let name = |p: &str| {
        if p.is_empty() {
            "(root)".to_owned()
        } else {
            p.to_owned()
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match y.get(k) {
                    Some(vb) => diff(&p, va, vb, out),
                    None => out.push(
                        evapi_proto::text::for_terminal(&format!("{p}: {va} -> (absent)"))
                            .into_owned(),
                    ),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push(
                        evapi_proto::text::for_terminal(&format!("{p}: (absent) -> {vb}"))
                            .into_owned(),
                    );
                }
            }
        }
        _ if a == b => {}
        _ => out.push(
            evapi_proto::text::for_terminal(&format!("{}: {a} -> {b}", name(path))).into_owned(),
        ),
    }
}
