//! A SIP transaction simulator for Kamailio-style evapi async relay.
//!
//! It stands in for Kamailio when you test an evapi app: requests are suspended, an
//! event goes out on the embedded evapi socket, the app answers, the transaction resumes
//! with the app's decision, and the run checks what every transaction ended with.
//!
//! # Layout
//!
//! - [`tm`]: the transaction table (sans-I/O): ids, suspend, continue, timers.
//! - [`template`]: event templates with Kamailio pseudo-variables.
//! - [`request`]: the request fields routing reads.
//! - [`scenario`]: scenario files.
//! - [`answer`]: reading an app's answer.
//! - [`engine`]: a scenario run; [`responders`]: built-in apps; [`report`]: the result.
//! - [`sip`], [`uas`]: SIP over UDP (`evapi-sim sip`), so sipp can drive the same model.
//! - [`apps`]: the evapi-side routes and the tag registration convention.
//! - [`load`]: a SIP UAC load generator with microsecond latency (`evapi-sim load`).

pub mod answer;
pub mod apps;
pub mod engine;
pub mod load;
pub mod progress;
pub mod report;
pub mod request;
pub mod responders;
pub mod scenario;
pub mod sip;
pub mod template;
pub mod tm;
pub mod uas;
