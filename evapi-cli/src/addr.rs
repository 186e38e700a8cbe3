//! One grammar for every address flag.
//!
//! Accepted: `IP` (v4 or v6), `IP:port`, `[v6]:port`, `[v6]`, `host:port` and `host`;
//! a missing port is the flag's default (8448 for evapi sockets, as Kamailio's
//! `bind_addr`). Host names are resolved once, at start-up.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Default port of an evapi socket (Kamailio's evapi `bind_addr` default).
pub const EVAPI_PORT: u16 = 8448;

/// `text` with `default_port` added when it names no port, ready for a resolver.
#[must_use]
pub fn with_port(text: &str, default_port: u16) -> String {
    let text = text.trim();
    if text.parse::<SocketAddr>().is_ok() {
        return text.to_owned();
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return SocketAddr::new(ip, default_port).to_string();
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return format!("[{inner}]:{default_port}");
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => text.to_owned(),
        _ => format!("{text}:{default_port}"),
    }
}

/// What is wrong with the port `text` names, if it names one that is not a port:
/// `host:abc`, `127.0.0.1:99999`, `[::1]:0`. (A bare IPv6 address has colons but no
/// port.)
fn port_problem(text: &str) -> Option<String> {
    let text = text.trim();
    if text.parse::<IpAddr>().is_ok() {
        return None;
    }
    let port = match text.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").map(|(_, port)| port)?,
        None => match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => port,
            _ => return None,
        },
    };
    // 0 is a port to bind to: the system picks one.
    match port.parse::<u32>() {
        Ok(n) if n <= 65_535 => None,
        Ok(_) => Some(format!(
            "{text:?}: port {port} is out of range (0 to 65535)"
        )),
        Err(_) => Some(format!(
            "{text:?}: port {port:?} is not a number (0 to 65535)"
        )),
    }
}

/// Resolve `text` to its first socket address, `default_port` where none is given.
///
/// # Errors
///
/// A message naming the text, for what is not an address or a name that does not
/// resolve.
pub fn resolve(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Some(problem) = port_problem(text) {
        return Err(problem);
    }
    let full = with_port(text, default_port);
    full.to_socket_addrs()
        .map_err(|e| {
            format!(
                "{text:?} is not a usable address ({e}); use IP, IP:port, [v6]:port or host:port"
            )
        })?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A clap value parser for evapi socket addresses (default port 8448).
///
/// # Errors
///
/// As [`resolve`].
pub fn evapi(text: &str) -> Result<SocketAddr, String> {
    resolve(text, EVAPI_PORT)
}

/// A clap value parser for addresses to connect to: the text with the default port
/// added, resolved when connecting (so a name may move between retries); or
/// `unix:PATH` for a Unix domain socket, as it is.
///
/// # Errors
///
/// Never for well-formed text; empty text (or an empty path) is refused.
pub fn evapi_text(text: &str) -> Result<String, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a path, e.g. unix:/run/evapi.sock".to_owned());
        }
        return Ok(text.to_owned());
    }
    if text.trim().is_empty() {
        return Err(
            "an empty address; use IP, IP:port, [v6]:port, host:port or unix:PATH".to_owned(),
        );
    }
    if let Some(problem) = port_problem(text) {
        return Err(problem);
    }
    Ok(with_port(text, EVAPI_PORT))
}

/// A clap value parser for SIP addresses (default port 5060, RFC 3261 section 19.1.2).
///
/// # Errors
///
/// As [`resolve`].
pub fn sip(text: &str) -> Result<SocketAddr, String> {
    resolve(text, 5060)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_is_accepted_with_the_default_port() {
        let cases = [
            ("127.0.0.1", "127.0.0.1:8448"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("::1", "[::1]:8448"),
            ("[::1]", "[::1]:8448"),
            ("[::1]:9000", "[::1]:9000"),
            ("localhost:9000", "localhost:9000"),
            ("localhost", "localhost:8448"),
        ];
        for (text, full) in cases {
            assert_eq!(with_port(text, EVAPI_PORT), full, "{text}");
        }
        assert_eq!(evapi("127.0.0.1").map(|a| a.port()), Ok(8448));
        assert_eq!(
            evapi("[::1]:9000"),
            Ok("[::1]:9000".parse().expect("address"))
        );
        assert_eq!(evapi("localhost:9000").map(|a| a.port()), Ok(9000));
        assert_eq!(sip("127.0.0.1").map(|a| a.port()), Ok(5060));
    }

    #[test]
    fn nonsense_is_refused_with_the_text() {
        assert_eq!(
            evapi("127.0.0.1:99999").expect_err("port out of range"),
            "\"127.0.0.1:99999\": port 99999 is out of range (0 to 65535)"
        );
        assert_eq!(
            evapi_text("localhost:abc").expect_err("not a port"),
            "\"localhost:abc\": port \"abc\" is not a number (0 to 65535)"
        );
        assert!(evapi_text("[::1]:70000").is_err());
        assert_eq!(
            evapi("127.0.0.1:0").map(|a| a.port()),
            Ok(0),
            "bind: any port"
        );
        assert_eq!(evapi_text("::1"), Ok("[::1]:8448".to_owned()));
        assert!(evapi("no such host.invalid").is_err());
    }
}
