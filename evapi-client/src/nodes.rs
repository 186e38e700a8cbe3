//! The nodes an app serves: several SIP nodes (Kamailio or the simulator), each with its
//! own evapi socket, named so that events and logs say which node they concern. Every
//! node has its own connection, reconnected on its own (jittered exponential backoff),
//! and answers go back on the connection their event came on, never to another node.

use crate::backoff::Backoff;

/// A node: a name and its evapi socket's address, from `NAME=ADDR` or `ADDR` (the name
/// is then the address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What events and logs call it.
    pub name: String,
    /// Where to connect (`host:port`, `[v6]:port`, `unix:PATH`).
    pub addr: String,
}

impl Node {
    /// A node named by its address.
    #[must_use]
    pub fn at(addr: impl Into<String>) -> Self {
        let addr = addr.into();
        Self {
            name: addr.clone(),
            addr,
        }
    }

    /// `NAME=ADDR` or `ADDR`; `addr` checks (and completes) the address part.
    ///
    /// # Errors
    ///
    /// An empty name, a name with other than letters, digits, `-`, `_` and `.`, or
    /// what `addr` says of the address.
    pub fn parse(
        text: &str,
        addr: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Self, String> {
        match text.split_once('=') {
            Some((name, rest)) => {
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    return Err(format!(
                        "{name:?}: a node name is letters, digits, '-', '_' and '.', at most 64 (NAME=ADDR)"
                    ));
                }
                Ok(Self {
                    name: name.to_owned(),
                    addr: addr(rest)?,
                })
            }
            None => Ok(Self::at(addr(text)?)),
        }
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name == self.addr {
            f.write_str(&self.addr)
        } else {
            write!(f, "{} ({})", self.name, self.addr)
        }
    }
}

/// One node's connection over its whole life: connected again whenever it is lost
/// (jittered backoff, for ever), saying when it is connected, lost, and back (with how
/// long it was away). Every app that serves several nodes keeps one per node.
#[derive(Debug)]
pub struct Link<'a> {
    node: &'a Node,
    config: &'a crate::ClientConfig,
    lost_at: Option<std::time::Instant>,
}

impl<'a> Link<'a> {
    /// The link to `node`, not connected yet.
    #[must_use]
    pub fn new(node: &'a Node, config: &'a crate::ClientConfig) -> Self {
        Self {
            node,
            config,
            lost_at: None,
        }
    }

    /// A connection to the node, once it answers (tried for ever).
    ///
    /// # Errors
    ///
    /// A setting that can never work (a TLS setup refused): not a node that is away.
    pub async fn connect(&mut self) -> Result<crate::Client, crate::ClientError> {
        let forever = Backoff {
            attempts: None,
            ..Backoff::default()
        };
        let client =
            crate::Client::connect_with_retry(&self.node.addr, self.config, &forever).await?;
        match self.lost_at.take() {
            Some(at) => {
                tracing::warn!(node = %self.node.name, down_for = ?at.elapsed(), "node back")
            }
            None => tracing::info!(node = %self.node.name, addr = %self.node.addr, "connected"),
        }
        Ok(client)
    }

    /// The connection ended: `why` is `None` when the node closed it.
    pub fn lost(&mut self, why: Option<&crate::ClientError>) {
        match why {
            None => {
                tracing::warn!(node = %self.node.name, "the node closed the connection; reconnecting")
            }
            Some(e) => {
                tracing::warn!(node = %self.node.name, error = %e, "connection lost; reconnecting")
            }
        }
        self.lost_at = Some(std::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    #[test]
    fn names_and_addresses() {
        assert_eq!(
            Node::parse("sip-a=10.0.0.1:8448", ok),
            Ok(Node {
                name: "sip-a".into(),
                addr: "10.0.0.1:8448".into()
            })
        );
        assert_eq!(
            Node::parse("10.0.0.1:8448", ok),
            Ok(Node::at("10.0.0.1:8448"))
        );
        assert!(Node::parse("=10.0.0.1", ok).is_err());
        assert!(Node::parse("a b=10.0.0.1", ok).is_err());
        let refused = Node::parse("a=x", |_| Err("bad address".to_owned()));
        assert_eq!(refused, Err("bad address".to_owned()));
        assert_eq!(
            Node::parse("sip-a=h:1", ok).unwrap().to_string(),
            "sip-a (h:1)"
        );
    }
}
