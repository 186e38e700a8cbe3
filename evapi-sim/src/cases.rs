//! Cases: calls with what each must get. A scenario lists them (`"cases"`) or names a
//! file of them (`"cases_file"`: CSV, one call per row, or JSON Lines); each is one call
//! with its SIP fields and what the app's answer must be: the final code and reason,
//! fields of the answer by JSON pointer (equal, matching a pattern, present or absent),
//! how it ended (answered, timed out), and within how long. Every call of a case is
//! judged on its own ([`Checks::judge`]), and the run reports each case by name.
//!
//! No I/O but reading the file; the judging is a pure function of the call's final
//! reply and the app's answer.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most calls one cases file, or one scenario, may expand to.
pub const MAX_CALLS: u64 = 1_000_000;

/// One case as written: a call and what it must get.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Case {
    /// Its name in the reports (default `case N`, from 1).
    pub name: Option<String>,
    /// SIP method (default: the traffic's).
    pub method: Option<String>,
    /// Request URI (default: the traffic's, `{n}` the call's number).
    pub ruri: Option<String>,
    /// From URI.
    pub from: Option<String>,
    /// To URI.
    pub to: Option<String>,
    /// Call-ID (default `case-N-R@evapi-sim`, unique per call).
    pub call_id: Option<String>,
    /// How many calls of it (default 1); each is judged.
    pub repeat: Option<u64>,
    /// What each of its calls must get.
    pub expect: CaseExpect,
}

/// What a case's call must get; every field is optional and checked when given.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaseExpect {
    /// The final reply's code.
    pub code: Option<u16>,
    /// The final reply's reason phrase.
    pub reason: Option<String>,
    /// How the call ended.
    pub outcome: Option<Ending>,
    /// Fields of the app's answer, by JSON pointer (`/route`, `/data/acct`).
    pub fields: BTreeMap<String, FieldCheck>,
    /// The app answered within this long of the event (e.g. `200ms`).
    #[serde(deserialize_with = "crate::scenario::optional_duration")]
    pub within: Option<Duration>,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// An app's answer resumed it.
    Answered,
    /// Its final response timer fired (no answer in time).
    TimedOut,
    /// Its event reached no app (`route.no_app_reply`, or a fire-and-forget relay).
    NoApp,
}

impl Ending {
    fn name(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::TimedOut => "timed_out",
            Self::NoApp => "no_app",
        }
    }
}

/// A check of one field of the answer. Exactly one of its members.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FieldCheck {
    /// Equal to this JSON value (a string also equals the same number or boolean
    /// written as text: CSV cells are text).
    pub equals: Option<serde_json::Value>,
    /// Its text (a string, or the JSON of anything else) matches this regular
    /// expression (`regex` crate syntax, unanchored: use `^...$` for all of it).
    pub matches: Option<String>,
    /// Present (`true`) or absent (`false`).
    pub present: Option<bool>,
}

/// A case file or list that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct CaseError {
    /// Which case, row or line.
    pub at: String,
    /// Why.
    pub reason: String,
}

fn error(at: impl Into<String>, reason: impl Into<String>) -> CaseError {
    CaseError {
        at: at.into(),
        reason: reason.into(),
    }
}

/// Cases from `path`: CSV when it ends in `.csv`, JSON Lines (one case object a line;
/// blank lines and lines starting with `#` skipped) otherwise.
///
/// # Errors
///
/// The file cannot be read, or a row is not a case (named by its line).
pub fn read_file(path: &Path) -> Result<Vec<Case>, CaseError> {
    let at = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| error(&at, format!("cannot read: {e}")))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        from_csv(&text, &at)
    } else {
        from_jsonl(&text, &at)
    }
}

/// Cases from JSON Lines.
///
/// # Errors
///
/// A line that is not a case object.
pub fn from_jsonl(text: &str, origin: &str) -> Result<Vec<Case>, CaseError> {
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let case: Case = serde_json::from_str(line)
            .map_err(|e| error(format!("{origin}:{}", i + 1), e.to_string()))?;
        cases.push(case);
    }
    Ok(cases)
}

/// Cases from CSV with a header row. Columns (any order, all optional): `name`,
/// `method`, `ruri`, `from`, `to`, `call_id`, `repeat`, `code`, `reason`, `outcome`,
/// `within`, and one column per answer field, headed by its JSON pointer (`/route`).
/// A field cell is: empty (not checked), `+` (present), `-` (absent), `~PATTERN`
/// (matches), `=TEXT` or any other text (equals).
///
/// # Errors
///
/// An unknown column, or a cell that does not parse (named by row and column).
pub fn from_csv(text: &str, origin: &str) -> Result<Vec<Case>, CaseError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| error(origin, format!("header row: {e}")))?
        .clone();
    const COLUMNS: [&str; 11] = [
        "name", "method", "ruri", "from", "to", "call_id", "repeat", "code", "reason", "outcome",
        "within",
    ];
    for h in &headers {
        if !h.starts_with('/') && !COLUMNS.contains(&h) {
            return Err(error(
                origin,
                format!(
                    "column {h:?}: expected one of {} or a JSON pointer (/field)",
                    COLUMNS.join(", ")
                ),
            ));
        }
    }
    let mut cases = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| error(origin, e.to_string()))?;
        let line = row.position().map_or(0, csv::Position::line);
        let at = |col: &str| format!("{origin}:{line} column {col}");
        let mut case = Case::default();
        for (h, cell) in headers.iter().zip(row.iter()) {
            if cell.is_empty() {
                continue;
            }
            let text = Some(cell.to_owned());
            match h {
                "name" => case.name = text,
                "method" => case.method = text,
                "ruri" => case.ruri = text,
                "from" => case.from = text,
                "to" => case.to = text,
                "call_id" => case.call_id = text,
                "repeat" => {
                    case.repeat = Some(cell.parse().map_err(|e| error(at(h), format!("{e}")))?);
                }
                "code" => {
                    case.expect.code =
                        Some(cell.parse().map_err(|e| error(at(h), format!("{e}")))?);
                }
                "reason" => case.expect.reason = text,
                "outcome" => {
                    case.expect.outcome = Some(
                        serde_json::from_value(serde_json::Value::String(cell.to_owned()))
                            .map_err(|_| error(at(h), "expected answered, timed_out or no_app"))?,
                    );
                }
                "within" => {
                    case.expect.within = Some(
                        humantime::parse_duration(cell)
                            .map_err(|e| error(at(h), format!("{e}; use e.g. 200ms")))?,
                    );
                }
                pointer => {
                    case.expect
                        .fields
                        .insert(pointer.to_owned(), field_cell(cell));
                }
            }
        }
        cases.push(case);
    }
    Ok(cases)
}

/// A CSV field cell as a check.
fn field_cell(cell: &str) -> FieldCheck {
    match cell {
        "+" => FieldCheck {
            present: Some(true),
            ..FieldCheck::default()
        },
        "-" => FieldCheck {
            present: Some(false),
            ..FieldCheck::default()
        },
        _ => match cell.strip_prefix('~') {
            Some(pattern) => FieldCheck {
                matches: Some(pattern.to_owned()),
                ..FieldCheck::default()
            },
            None => FieldCheck {
                equals: Some(serde_json::Value::String(
                    cell.strip_prefix('=').unwrap_or(cell).to_owned(),
                )),
                ..FieldCheck::default()
            },
        },
    }
}

/// One field check, ready: its pointer and what it wants.
#[derive(Debug, Clone)]
enum Want {
    Equals(serde_json::Value),
    Matches(regex::Regex),
    Present(bool),
}

/// A case, checked and ready to judge its calls.
#[derive(Debug, Clone)]
pub struct Checks {
    /// The case's name.
    pub name: String,
    /// The case as written (its SIP fields).
    pub case: Case,
    fields: Vec<(String, Want)>,
}

/// Check `cases` and make them ready: names, patterns, pointers, codes; at most
/// [`MAX_CALLS`] calls in all.
///
/// # Errors
///
/// A case that can never pass as written (a bad pattern or pointer, a code outside
/// 100..=699, a field check with no or several members), named by the case.
pub fn prepare(cases: &[Case]) -> Result<Vec<Checks>, CaseError> {
    let mut calls = 0u64;
    let mut ready = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let name = case
            .name
            .clone()
            .unwrap_or_else(|| format!("case {}", i + 1));
        let at = |what: &str| format!("case {name:?} {what}");
        let repeat = case.repeat.unwrap_or(1);
        if repeat == 0 {
            return Err(error(at("repeat"), "must be at least 1"));
        }
        calls = calls.saturating_add(repeat);
        if calls > MAX_CALLS {
            return Err(error(
                at("repeat"),
                format!("the cases make more than {MAX_CALLS} calls"),
            ));
        }
        if let Some(code) = case.expect.code {
            if !(100..=699).contains(&code) {
                return Err(error(at("code"), format!("{code} is not a SIP code")));
            }
        }
        let mut fields = Vec::new();
        for (pointer, check) in &case.expect.fields {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(error(
                    at(&format!("field {pointer:?}")),
                    "a JSON pointer starts with / (e.g. /route)",
                ));
            }
            let want = match (&check.equals, &check.matches, check.present) {
                (Some(v), None, None) => Want::Equals(v.clone()),
                (None, Some(p), None) => Want::Matches(
                    regex::Regex::new(p)
                        .map_err(|e| error(at(&format!("field {pointer}")), e.to_string()))?,
                ),
                (None, None, Some(p)) => Want::Present(p),
                _ => {
                    return Err(error(
                        at(&format!("field {pointer}")),
                        "give exactly one of equals, matches, present",
                    ))
                }
            };
            fields.push((pointer.clone(), want));
        }
        ready.push(Checks {
            name,
            case: case.clone(),
            fields,
        });
    }
    Ok(ready)
}

/// How one call ended, as the judge sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended<'a> {
    /// The final reply's code.
    pub code: u16,
    /// Its reason phrase.
    pub reason: &'a str,
    /// How it ended.
    pub ending: Ending,
    /// From the event to the answer, when answered.
    pub latency: Option<Duration>,
    /// The app's answer, when answered.
    pub answer: Option<&'a [u8]>,
}

/// One thing a call got that its case did not want.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// What was checked (`code`, `reason`, `outcome`, `within`, or a JSON pointer).
    pub what: String,
    /// What the case wanted.
    pub expected: String,
    /// What came.
    pub actual: String,
}

impl Checks {
    /// What `call` got that this case did not want (empty: it passed).
    #[must_use]
    pub fn judge(&self, call: &Ended<'_>) -> Vec<Mismatch> {
        let mut out = Vec::new();
        let mut differ = |what: &str, expected: String, actual: String| {
            out.push(Mismatch {
                what: what.to_owned(),
                expected,
                actual,
            });
        };
        let expect = &self.case.expect;
        if let Some(code) = expect.code {
            if code != call.code {
                differ("code", code.to_string(), call.code.to_string());
            }
        }
        if let Some(reason) = &expect.reason {
            if reason != call.reason {
                differ("reason", reason.clone(), call.reason.to_owned());
            }
        }
        if let Some(ending) = expect.outcome {
            if ending != call.ending {
                differ(
                    "outcome",
                    ending.name().to_owned(),
                    call.ending.name().to_owned(),
                );
            }
        }
        if let Some(within) = expect.within {
            match call.latency {
                Some(took) if took <= within => {}
                Some(took) => differ("within", format!("{within:?}"), format!("{took:?}")),
                None => differ("within", format!("{within:?}"), "no answer".to_owned()),
            }
        }
        if self.fields.is_empty() {
            return out;
        }
        let parsed = call.answer.map(serde_json::from_slice::<serde_json::Value>);
        let answer = match parsed {
            Some(Ok(v)) => v,
            Some(Err(_)) | None => {
                let actual = if call.answer.is_some() {
                    "an answer that is not JSON"
                } else {
                    "no answer"
                };
                for (pointer, want) in &self.fields {
                    differ(pointer, want.describe(), actual.to_owned());
                }
                return out;
            }
        };
        for (pointer, want) in &self.fields {
            let got = answer.pointer(pointer);
            let ok = match (want, got) {
                (Want::Present(p), got) => *p == got.is_some(),
                (Want::Equals(v), Some(got)) => equal(v, got),
                (Want::Matches(re), Some(got)) => re.is_match(&text_of(got)),
                (_, None) => false,
            };
            if !ok {
                let actual = got.map_or_else(|| "absent".to_owned(), ToString::to_string);
                differ(pointer, want.describe(), actual);
            }
        }
        out
    }
}

impl Want {
    fn describe(&self) -> String {
        match self {
            Self::Equals(v) => v.to_string(),
            Self::Matches(re) => format!("matching /{}/", re.as_str()),
            Self::Present(true) => "present".to_owned(),
            Self::Present(false) => "absent".to_owned(),
        }
    }
}

/// JSON equality, where a string also equals a number or boolean written as that text.
fn equal(want: &serde_json::Value, got: &serde_json::Value) -> bool {
    match (want, got) {
        (serde_json::Value::String(w), serde_json::Value::String(_)) => got.as_str() == Some(w),
        (
            serde_json::Value::String(w),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_),
        ) => serde_json::from_str::<serde_json::Value>(w).is_ok_and(|v| v == *got),
        _ => want == got,
    }
}

/// A value's text: a string as it is, anything else as JSON.
fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The verdict on one case: its calls, and what the failed ones got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseVerdict {
    /// The case's name.
    pub name: String,
    /// Calls made of it.
    pub calls: u64,
    /// Calls that got what it wanted.
    pub passed: u64,
    /// What the first failed call got (field by field); empty when all passed.
    pub mismatches: Vec<Mismatch>,
    /// The slowest answer of its calls, microseconds (0: none answered).
    pub slowest_us: u64,
}

impl CaseVerdict {
    /// An empty verdict for `name`, before its calls end.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            calls: 0,
            passed: 0,
            mismatches: Vec::new(),
            slowest_us: 0,
        }
    }

    /// Count one call of the case, that got `mismatches`, answered after `latency`.
    pub fn count(&mut self, mismatches: Vec<Mismatch>, latency: Option<Duration>) {
        self.calls += 1;
        if let Some(l) = latency {
            let us = u64::try_from(l.as_micros()).unwrap_or(u64::MAX);
            self.slowest_us = self.slowest_us.max(us);
        }
        if mismatches.is_empty() {
            self.passed += 1;
        } else if self.mismatches.is_empty() {
            self.mismatches = mismatches;
        }
    }

    /// Whether every call of the case passed (and there was one).
    #[must_use]
    pub fn ok(&self) -> bool {
        self.calls > 0 && self.passed == self.calls
    }

    /// "code: expected 486, got 200; /route: expected "gw1", got absent".
    #[must_use]
    pub fn why(&self) -> String {
        if self.calls == 0 {
            return "no call of this case ended".to_owned();
        }
        let fields: Vec<String> = self
            .mismatches
            .iter()
            .map(|m| format!("{}: expected {}, got {}", m.what, m.expected, m.actual))
            .collect();
        format!(
            "{} of {} call(s) failed; {}",
            self.calls - self.passed,
            self.calls,
            fields.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(case: serde_json::Value) -> Checks {
        let case: Case = serde_json::from_value(case).unwrap();
        prepare(&[case]).unwrap().remove(0)
    }

    fn answered<'a>(code: u16, answer: &'a str) -> Ended<'a> {
        Ended {
            code,
            reason: "Busy Here",
            ending: Ending::Answered,
            latency: Some(Duration::from_millis(5)),
            answer: Some(answer.as_bytes()),
        }
    }

    fn whats(m: &[Mismatch]) -> Vec<&str> {
        m.iter().map(|m| m.what.as_str()).collect()
    }

    #[test]
    fn codes_reasons_and_endings_are_checked() {
        let c = one(
            serde_json::json!({"expect": {"code": 486, "reason": "Busy Here", "outcome": "answered"}}),
        );
        assert!(c.judge(&answered(486, "{}")).is_empty());
        let got = c.judge(&answered(200, "{}"));
        assert_eq!(
            got,
            vec![Mismatch {
                what: "code".into(),
                expected: "486".into(),
                actual: "200".into()
            }]
        );
        let timed_out = Ended {
            code: 408,
            reason: "Request Timeout",
            ending: Ending::TimedOut,
            latency: None,
            answer: None,
        };
        assert_eq!(whats(&c.judge(&timed_out)), ["code", "reason", "outcome"]);
    }

    #[test]
    fn fields_equal_match_and_are_present_or_absent() {
        let c = one(serde_json::json!({"expect": {"fields": {
            "/route": {"equals": "gw1"},
            "/acct": {"matches": "^[0-9]+$"},
            "/n": {"equals": "7"},
            "/debug": {"present": false},
            "/data/x": {"present": true}
        }}}));
        let good = r#"{"route":"gw1","acct":"123","n":7,"data":{"x":null}}"#;
        assert!(c.judge(&answered(200, good)).is_empty());
        let bad = r#"{"route":"gw2","acct":"12a","n":8,"debug":1}"#;
        let got = c.judge(&answered(200, bad));
        assert_eq!(whats(&got), ["/acct", "/data/x", "/debug", "/n", "/route"]);
        assert_eq!(got[4].expected, "\"gw1\"");
        assert_eq!(got[4].actual, "\"gw2\"");
        assert_eq!(got[1].actual, "absent");
        let none = c.judge(&Ended {
            answer: None,
            latency: None,
            ..answered(408, "")
        });
        assert!(none.iter().all(|m| m.actual == "no answer"), "{none:?}");
    }

    #[test]
    fn within_bounds_the_answer_time() {
        let c = one(serde_json::json!({"expect": {"within": "2ms"}}));
        let got = c.judge(&answered(200, "{}"));
        assert_eq!(got[0].what, "within");
        assert_eq!(got[0].actual, "5ms");
    }

    #[test]
    fn cases_that_cannot_pass_are_refused_by_name() {
        let bad = |v: serde_json::Value| {
            let case: Case = serde_json::from_value(v).unwrap();
            prepare(&[case]).unwrap_err().to_string()
        };
        let e =
            bad(serde_json::json!({"name": "x", "expect": {"fields": {"/a": {"matches": "("}}}}));
        assert!(e.starts_with("case \"x\" field /a"), "{e}");
        let e = bad(serde_json::json!({"expect": {"fields": {"a": {"present": true}}}}));
        assert!(e.contains("starts with /"), "{e}");
        let e =
            bad(serde_json::json!({"expect": {"fields": {"/a": {"present": true, "equals": 1}}}}));
        assert!(e.contains("exactly one"), "{e}");
        let e = bad(serde_json::json!({"expect": {"code": 99}}));
        assert!(e.contains("not a SIP code"), "{e}");
        let e = bad(serde_json::json!({"repeat": 2_000_000}));
        assert!(e.contains("more than"), "{e}");
        assert!(serde_json::from_value::<Case>(serde_json::json!({"expect": {"cod": 1}})).is_err());
    }

    #[test]
    fn csv_rows_are_cases() {
        let text = "name,ruri,code,/route,/acct,/debug,repeat\n\
                    # a comment\n\
                    odd,sip:1001@x,486,,,-,\n\
                    even,sip:1002@x,200,gw1,~^[0-9]+$,,3\n";
        let cases = from_csv(text, "calls.csv").unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].name.as_deref(), Some("odd"));
        assert_eq!(cases[0].expect.code, Some(486));
        assert_eq!(cases[0].expect.fields["/debug"].present, Some(false));
        assert_eq!(cases[1].repeat, Some(3));
        assert_eq!(cases[1].expect.fields["/route"].equals, Some("gw1".into()));
        assert_eq!(
            cases[1].expect.fields["/acct"].matches.as_deref(),
            Some("^[0-9]+$")
        );
        let e = from_csv("nme,code\nx,1\n", "c.csv").unwrap_err();
        assert!(e.reason.contains("column \"nme\""), "{e}");
        let e = from_csv("name,code\nx,abc\n", "c.csv").unwrap_err();
        assert!(e.at.starts_with("c.csv:2 column code"), "{e}");
    }

    #[test]
    fn jsonl_lines_are_cases_and_errors_name_the_line() {
        let text = "{\"name\":\"a\",\"expect\":{\"code\":200}}\n\n# skip\n{\"name\":\"b\"}\n";
        let cases = from_jsonl(text, "c.jsonl").unwrap();
        assert_eq!(cases.len(), 2);
        let e = from_jsonl("{}\n{\"nme\":1}\n", "c.jsonl").unwrap_err();
        assert_eq!(e.at, "c.jsonl:2");
    }

    #[test]
    fn a_verdict_keeps_the_first_failure() {
        let mut v = CaseVerdict::new("odd");
        v.count(Vec::new(), Some(Duration::from_millis(3)));
        let m = Mismatch {
            what: "code".into(),
            expected: "486".into(),
            actual: "200".into(),
        };
        v.count(vec![m.clone()], None);
        v.count(
            vec![Mismatch {
                actual: "500".into(),
                ..m
            }],
            None,
        );
        assert!(!v.ok());
        assert_eq!(
            v.why(),
            "2 of 3 call(s) failed; code: expected 486, got 200"
        );
        assert_eq!(v.slowest_us, 3000);
    }
}
