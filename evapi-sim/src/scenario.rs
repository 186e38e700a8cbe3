//! Scenario files: what traffic to generate, how the "routing script" relays it, who
//! answers, and what the run must end with. JSON, documented in
//! `docs/scenario.schema.json`; unknown fields are errors so typos do not pass silently.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use evapi_proto::{AnswerReader, Framing, IdFields};
use evapi_server::UnicastPolicy;
use serde::{Deserialize, Deserializer};

use crate::router::RouterConfig;
pub use crate::router::{Action, Outcome};
use crate::template::Template;
use crate::tm::{TmConfig, DEFAULT_FR_INV_TIMER, DEFAULT_FR_TIMER, DEFAULT_TIMEOUT_CODE};

/// The demo's event template, also the default.
pub const DEFAULT_EVENT: &str = r#"{"event":"suspend","tindex":"$T(id_index)","tlabel":"$T(id_label)","rm":"$rm","ru":"$ru","fu":"$fu","ci":"$ci"}"#;

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the summary.
    #[serde(default = "default_name")]
    pub name: String,
    /// The embedded event socket.
    #[serde(default)]
    pub server: ServerSettings,
    /// Requests to generate.
    #[serde(default)]
    pub traffic: Traffic,
    /// What the routing script does with each request.
    #[serde(default)]
    pub route: Route,
    /// How answers are read.
    #[serde(default)]
    pub answers: Answers,
    /// Built-in apps, real evapi clients over TCP.
    #[serde(default)]
    pub responders: Vec<BuiltinApp>,
    /// Outside apps to wait for before the traffic starts.
    #[serde(default)]
    pub external: usize,
    /// How long to wait for the outside apps before giving up (the run then cannot
    /// start: exit 2).
    #[serde(default = "default_external_timeout", deserialize_with = "duration")]
    pub external_timeout: Duration,
    /// tm timers.
    #[serde(default)]
    pub timers: Timers,
    /// After the last final reply, keep reading answers this long, so late and
    /// duplicate continues are counted too.
    #[serde(default, deserialize_with = "duration")]
    pub linger: Duration,
    /// What the run must end with.
    #[serde(default)]
    pub expect: Expect,
    /// Calls with what each must get ([`crate::cases`]): when given (here or in
    /// `cases_file`), they are the traffic, one call per case (or `repeat`), and each
    /// is judged and reported by name.
    #[serde(default)]
    pub cases: Vec<crate::cases::Case>,
    /// A file of cases: CSV (`.csv`) or JSON Lines; relative to the scenario file.
    #[serde(default)]
    pub cases_file: Option<String>,
}

fn default_name() -> String {
    "scenario".to_owned()
}

/// Settings of the embedded evapi socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Listen address; `127.0.0.1:0` picks a free port (printed).
    pub bind: String,
    /// Framing.
    pub framing: Framing,
    /// Kamailio's max_clients.
    pub max_clients: usize,
    /// Kamailio's workers.
    pub workers: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:0".to_owned(),
            framing: Framing::Netstring,
            max_clients: 8,
            workers: 1,
        }
    }
}

/// Requests to generate. `{n}` in the URIs is the request's number (0-based).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Traffic {
    /// SIP method.
    pub method: String,
    /// How many requests.
    pub count: u64,
    /// Requests per second; 0 = as fast as `concurrency` allows.
    pub rate: u64,
    /// Most transactions waiting for their final reply at once; 0 = no limit.
    pub concurrency: u64,
    /// From URI.
    pub from: String,
    /// To URI.
    pub to: String,
    /// Request URI.
    pub ruri: String,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            method: "INVITE".to_owned(),
            count: 100,
            rate: 0,
            concurrency: 1000,
            from: "sip:caller{n}@example.org".to_owned(),
            to: "sip:callee{n}@example.com".to_owned(),
            ruri: "sip:callee{n}@example.com".to_owned(),
        }
    }
}

/// The routing script.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Route {
    /// What to do.
    pub action: Action,
    /// Tag for multicast / unicast.
    pub tag: Option<String>,
    /// Event template (pseudo-variables allowed).
    pub event: String,
    /// Final code of a fire-and-forget `relay`.
    pub relay_code: u16,
    /// Which app of the tag an `async_unicast` goes to: `first` (Kamailio),
    /// `round-robin`, `least-queued`, or `hash` (by Call-ID).
    #[serde(deserialize_with = "policy")]
    pub unicast_policy: UnicastPolicy,
    /// End a suspended request whose event reached no app at once with this code
    /// (e.g. 503) instead of waiting for `fr_inv_timer`.
    pub no_app_reply: Option<u16>,
}

impl Default for Route {
    fn default() -> Self {
        Self {
            action: Action::AsyncRelay,
            tag: None,
            event: DEFAULT_EVENT.to_owned(),
            relay_code: 200,
            unicast_policy: UnicastPolicy::First,
            no_app_reply: None,
        }
    }
}

fn policy<'de, D: Deserializer<'de>>(d: D) -> Result<UnicastPolicy, D::Error> {
    let name = String::deserialize(d)?;
    UnicastPolicy::from_name(&name).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unicast_policy {name:?}: expected first, round-robin, least-queued or hash"
        ))
    })
}

/// How the app's answers are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Answers {
    /// Dotted path of the index field.
    pub index_field: String,
    /// Dotted path of the label field.
    pub label_field: String,
    /// `{"action": NAME, ...}` answers: the final reply each action leads to.
    pub actions: BTreeMap<String, Outcome>,
}

impl Default for Answers {
    fn default() -> Self {
        let mut actions = BTreeMap::new();
        actions.insert(
            "forward".to_owned(),
            Outcome {
                code: 200,
                reason: Some("OK".to_owned()),
            },
        );
        actions.insert(
            "reject".to_owned(),
            Outcome {
                code: 403,
                reason: Some("Forbidden".to_owned()),
            },
        );
        Self {
            index_field: "tindex".to_owned(),
            label_field: "tlabel".to_owned(),
            actions,
        }
    }
}

impl Answers {
    /// The id fields answers carry.
    #[must_use]
    pub fn id_fields(&self) -> IdFields {
        IdFields::new(&self.index_field, &self.label_field)
    }

    /// The answer reader: the scenario's id fields first, then every default shape, so
    /// an answer that mirrors the event is understood whatever the template's shape.
    #[must_use]
    pub fn reader(&self) -> AnswerReader {
        AnswerReader::with_fields([self.id_fields()])
    }
}

/// A built-in app.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum BuiltinApp {
    /// Answer every suspend with `code` after `delay`.
    Answer {
        /// SIP code.
        #[serde(default = "ok")]
        code: u16,
        /// Reason phrase.
        #[serde(default)]
        reason: Option<String>,
        /// Wait before answering.
        #[serde(default, deserialize_with = "duration")]
        delay: Duration,
        /// Register this tag first (`{"tag": T}`).
        #[serde(default)]
        tag: Option<String>,
    },
    /// Connect and never answer.
    Silent {
        /// Register this tag first.
        #[serde(default)]
        tag: Option<String>,
    },
    /// Answer `after` suspends, then disconnect.
    Disconnect {
        /// Answers before disconnecting.
        after: u64,
        /// SIP code of those answers.
        #[serde(default = "ok")]
        code: u16,
    },
    /// Answer every suspend with something that is not a valid answer.
    Garbage,
}

fn ok() -> u16 {
    200
}

/// tm timers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    /// Final response timeout, non-INVITE.
    #[serde(deserialize_with = "duration")]
    pub fr_timer: Duration,
    /// Final response timeout, INVITE.
    #[serde(deserialize_with = "duration")]
    pub fr_inv_timer: Duration,
    /// Code of the final reply on timeout.
    pub timeout_code: u16,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            fr_timer: DEFAULT_FR_TIMER,
            fr_inv_timer: DEFAULT_FR_INV_TIMER,
            timeout_code: DEFAULT_TIMEOUT_CODE,
        }
    }
}

impl Timers {
    /// As tm settings.
    #[must_use]
    pub fn tm(&self) -> TmConfig {
        TmConfig {
            fr_timer: self.fr_timer,
            fr_inv_timer: self.fr_inv_timer,
            timeout_code: self.timeout_code,
            ..TmConfig::default()
        }
    }
}

/// Expected outcome; every field given is checked, absent ones are not.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Final replies per code, e.g. `{"200": 990, "408": 10}`.
    pub codes: BTreeMap<String, u64>,
    /// Transactions ended by their timer.
    pub timeouts: Option<u64>,
    /// Continues refused (unknown, late, already resumed, ...).
    pub refused: Option<u64>,
    /// Messages from apps that were not valid answers.
    pub invalid_answers: Option<u64>,
}

/// Default `external_timeout`: long enough to start an app by hand, short enough that
/// a CI job whose app never came fails in a minute instead of at the job's time limit.
pub const DEFAULT_EXTERNAL_TIMEOUT: Duration = Duration::from_secs(60);

fn default_external_timeout() -> Duration {
    DEFAULT_EXTERNAL_TIMEOUT
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); use e.g. 500ms, 5s"
        ))
    })
}

/// An optional duration (`"200ms"`), for fields that may be left out.
pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn check_tag(at: &str, tag: Option<&str>) -> Result<(), String> {
    match tag {
        Some(t) if t.is_empty() || t.len() > evapi_server::config::MAX_TAG_LEN => Err(format!(
            "{at}.tag: a tag is 1 to {} bytes, got {}",
            evapi_server::config::MAX_TAG_LEN,
            t.len()
        )),
        _ => Ok(()),
    }
}

/// A scenario that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ScenarioError {
    /// The file (or "embedded").
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// A scenario with its templates checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The scenario.
    pub scenario: Scenario,
    /// The parsed event template.
    pub event: Template,
    /// The cases, checked (empty: the run generates `traffic.count` calls).
    pub cases: Vec<crate::cases::Checks>,
}

impl Loaded {
    /// The async-relay core's settings for this scenario.
    #[must_use]
    pub fn router_config(&self) -> RouterConfig {
        let sc = &self.scenario;
        RouterConfig {
            action: sc.route.action,
            tag: sc.route.tag.clone(),
            relay_code: sc.route.relay_code,
            event: self.event.clone(),
            reason: None,
            reader: sc.answers.reader(),
            actions: sc.answers.actions.clone(),
            tm: sc.timers.tm(),
            max_transactions: None,
            unicast_policy: sc.route.unicast_policy,
            no_app_reply: sc.route.no_app_reply,
        }
    }
}

impl Scenario {
    /// Read and check a scenario file.
    ///
    /// # Errors
    ///
    /// A [`ScenarioError`] naming the file and the reason.
    pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            path: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new(""));
        Self::parse_in(&text, &path.display().to_string(), base)
    }

    /// Parse and check scenario text; `origin` names it in errors.
    ///
    /// # Errors
    ///
    /// A [`ScenarioError`].
    pub fn parse(text: &str, origin: &str) -> Result<Loaded, ScenarioError> {
        Self::parse_in(text, origin, Path::new(""))
    }

    /// [`Scenario::parse`], with `cases_file` relative to `base`.
    ///
    /// # Errors
    ///
    /// A [`ScenarioError`].
    pub fn parse_in(text: &str, origin: &str, base: &Path) -> Result<Loaded, ScenarioError> {
        let err = |reason: String| ScenarioError {
            path: origin.to_owned(),
            reason,
        };
        let scenario: Scenario = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let event =
            Template::parse(&scenario.route.event).map_err(|e| err(format!("route.event: {e}")))?;
        if matches!(
            scenario.route.action,
            Action::AsyncMulticast | Action::AsyncUnicast
        ) && scenario.route.tag.is_none()
        {
            return Err(err(format!(
                "route.tag is required for {}",
                scenario.route.action.name()
            )));
        }
        if scenario.traffic.count == 0 {
            return Err(err("traffic.count must be at least 1".to_owned()));
        }
        for code in scenario.expect.codes.keys() {
            if code.parse::<u16>().is_err() {
                return Err(err(format!("expect.codes: {code:?} is not a SIP code")));
            }
        }
        scenario.check_replies().map_err(err)?;
        let mut cases = scenario.cases.clone();
        if let Some(file) = &scenario.cases_file {
            let from = crate::cases::read_file(&base.join(file))
                .map_err(|e| err(format!("cases_file: {e}")))?;
            cases.extend(from);
        }
        let cases = crate::cases::prepare(&cases).map_err(|e| err(format!("cases: {e}")))?;
        Ok(Loaded {
            scenario,
            event,
            cases,
        })
    }

    /// Every code and reason the scenario can put in a final reply follows the same
    /// rules as an app's answer (a final code 200-699, a one-line reason phrase), so a
    /// mistake fails at load time instead of leaving every call to its timer.
    fn check_replies(&self) -> Result<(), String> {
        let code = |what: &str, code: u16| {
            evapi_proto::check_final_code(u64::from(code))
                .map(|_| ())
                .map_err(|e| format!("{what}: {e}"))
        };
        let reason = |what: &str, r: Option<&str>| match r {
            Some(r) => evapi_proto::check_reason(r).map_err(|e| format!("{what}: {e}")),
            None => Ok(()),
        };
        code("route.relay_code", self.route.relay_code)?;
        code("timers.timeout_code", self.timers.timeout_code)?;
        for (name, o) in &self.answers.actions {
            code(&format!("answers.actions.{name}.code"), o.code)?;
            reason(
                &format!("answers.actions.{name}.reason"),
                o.reason.as_deref(),
            )?;
        }
        for (i, r) in self.responders.iter().enumerate() {
            let at = format!("responders[{i}]");
            match r {
                BuiltinApp::Answer {
                    code: c,
                    reason: why,
                    tag,
                    ..
                } => {
                    code(&format!("{at}.code"), *c)?;
                    reason(&format!("{at}.reason"), why.as_deref())?;
                    check_tag(&at, tag.as_deref())?;
                }
                BuiltinApp::Disconnect { code: c, .. } => code(&format!("{at}.code"), *c)?,
                BuiltinApp::Silent { tag } => check_tag(&at, tag.as_deref())?,
                BuiltinApp::Garbage => {}
            }
        }
        check_tag("route", self.route.tag.as_deref())
    }

    /// The demo: 10,000 INVITEs through async_relay, one built-in responder answering 200.
    #[must_use]
    pub fn demo() -> Loaded {
        let text = r#"{
            "name": "demo: 10,000 INVITEs suspended, relayed, answered 200, resumed",
            "server": { "bind": "127.0.0.1:8448" },
            "traffic": { "count": 10000, "concurrency": 2000 },
            "responders": [ { "kind": "answer", "code": 200 } ],
            "expect": { "codes": { "200": 10000 }, "timeouts": 0, "refused": 0 }
        }"#;
        Self::parse(text, "embedded demo").expect("the embedded demo scenario is valid")
    }
}
