//! Certificates and keys from PEM files, for every TLS setup of the toolkit (the event
//! socket's server side, the clients, the bridge).

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file gave nothing usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The file could not be read or is not PEM.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The file holds no block of the kind wanted.
    #[error("{}: no {wanted} block in the file", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The kind of block (`CERTIFICATE`, `PRIVATE KEY`).
        wanted: &'static str,
    },
    /// A certificate in a CA file is not a usable trust anchor.
    #[error("{}: not a usable CA certificate", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
}

/// Every certificate in a PEM file, in order.
///
/// # Errors
///
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let read = |source| PemError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(PemError::Missing {
            path: path.to_owned(),
            wanted: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
///
/// The file cannot be read or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::Missing {
            path: path.to_owned(),
            wanted: "PRIVATE KEY",
        },
        source => PemError::Read {
            path: path.to_owned(),
            source,
        },
    })
}

/// A root store of every certificate in a PEM file.
///
/// # Errors
///
/// The file cannot be read, or a certificate in it is not a usable trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| PemError::Ca {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[test]
    fn errors_name_the_file_and_print_their_cause_once() {
        let dir = std::env::temp_dir().join(format!("evapi-ops-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = load_certs(&missing).unwrap_err();
        let text = chain(&err);
        assert!(text.starts_with(&missing.display().to_string()), "{text}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        assert!(chain(&load_certs(&empty).unwrap_err()).contains("no CERTIFICATE block"));
        assert!(chain(&load_key(&empty).unwrap_err()).contains("no PRIVATE KEY block"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
