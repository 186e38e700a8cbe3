//! TLS for the event socket, with rustls (no OpenSSL): loading PEM files into a
//! server configuration, optional client certificates (mutual TLS), and the client's
//! identity taken from its certificate.
//!
//! The handshake itself runs in each connection's own task, bounded by
//! [`Config::handshake_timeout`](crate::Config::handshake_timeout), so a client that
//! opens a connection and never finishes its handshake holds one slot for that long
//! and delays nobody else.

use std::path::PathBuf;
use std::sync::Arc;

use evapi_ops::pem::{load_certs, load_key, load_roots, PemError};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

pub use rustls;

/// Where the server's certificate, key and (optional) client CA are, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Require client certificates signed by one of these CAs (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error(transparent)]
    File(#[from] PemError),
    /// The client CA file cannot verify clients.
    #[error("{}: cannot verify clients with it", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the certificate, key or CA set.
    #[error("{context}")]
    Rustls {
        /// What was being set up.
        context: &'static str,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
}

/// The rustls crypto provider used throughout (ring), passed explicitly so an
/// embedder's process-wide default does not matter. AES-128-GCM comes first: as
/// strong as needed here and cheaper per byte than AES-256 (the server picks by its
/// own order).
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// A server configuration from PEM files: TLS 1.2 and 1.3, and client certificates
/// required and verified when `files.client_ca` is set (expired, not yet valid or
/// untrusted certificates fail the handshake).
///
/// # Errors
///
/// A file cannot be read or parsed, or the key does not fit the certificate.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "TLS protocol versions",
            source,
        })?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|source| TlsError::ClientCa {
                    path: ca.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            context: "the certificate and key do not make a usable pair",
            source,
        })?;
    Ok(Arc::new(config))
}

/// A client's identity from its (already verified) certificate: the subject's common
/// name, or the whole subject when it has none.
pub(crate) fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| subject.to_string());
    Some(name)
}
