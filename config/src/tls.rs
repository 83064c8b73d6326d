//! TLS material, read from its PEM files and checked at compile time:
//! a listener's (certificates parse, keys match them, none has expired,
//! and each certificate's DNS names are known for SNI) and a cluster's
//! (the roots to verify endpoints with, and an optional client
//! certificate).
//!
//! What is kept is independent of any rustls `ServerConfig` or
//! `ClientConfig`: the gateway builds them per worker from it (each with its
//! own session cache).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// TLS termination settings of one listener.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Certificates, the first the default for an unknown or missing SNI.
    pub certificates: Vec<TlsCertificate>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// Lowest version accepted.
    pub min_version: TlsVersion,
    /// Client certificate verification, if asked for.
    pub client_auth: Option<ClientAuth>,
    /// Header that carries the verified client identity upstream (and to
    /// routing); any copy the client sends is removed first.
    pub identity_header: Option<String>,
}

impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        self.certificates == other.certificates
            && self.alpn == other.alpn
            && self.min_version == other.min_version
            && self.client_auth == other.client_auth
            && self.identity_header == other.identity_header
    }
}

impl Eq for Tls {}

/// One certificate chain with its key.
#[derive(Debug, Clone)]
pub struct TlsCertificate {
    /// DNS names of its subjectAltName, lower case; `*.example.com` for a
    /// wildcard.
    pub names: Vec<String>,
    /// The chain and its signing key.
    pub key: Arc<CertifiedKey>,
}

impl PartialEq for TlsCertificate {
    fn eq(&self, other: &TlsCertificate) -> bool {
        self.names == other.names && self.key.cert == other.key.cert
    }
}

/// The lowest TLS version a listener, or a cluster's client side, accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// TLS from the gateway to a cluster's endpoints.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The CA certificates an endpoint's certificate must chain to: the
    /// cluster's `ca` bundle, else the system's roots.
    pub roots: Vec<CertificateDer<'static>>,
    /// The name sent (SNI) and verified for every endpoint; each
    /// endpoint's own host when `None`.
    pub server_name: Option<String>,
    /// The certificate and key presented when an endpoint asks for one.
    pub client_identity: Option<Arc<CertifiedKey>>,
    /// Lowest version accepted.
    pub min_version: TlsVersion,
    /// ALPN protocols offered: the cluster's protocol only.
    pub alpn: Vec<Vec<u8>>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &UpstreamTls) -> bool {
        self.roots == other.roots
            && self.server_name == other.server_name
            && self.client_identity.as_ref().map(|k| &k.cert)
                == other.client_identity.as_ref().map(|k| &k.cert)
            && self.min_version == other.min_version
            && self.alpn == other.alpn
    }
}

impl Eq for UpstreamTls {}

/// Client certificate verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The CA certificates a client certificate must chain to.
    pub roots: Vec<CertificateDer<'static>>,
    /// Refuse the handshake without a client certificate (else optional).
    pub required: bool,
}

/// Parses every certificate in PEM `bytes`.
pub(crate) fn parse_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (\"BEGIN CERTIFICATE\") in the file".to_owned());
    }
    Ok(certs)
}

/// Parses the private key in PEM `bytes`.
pub(crate) fn parse_key(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| format!("no usable PEM private key: {e}"))
}

/// The DNS names of a leaf certificate and whether it has expired by
/// `now` (Unix seconds), checked.
pub(crate) fn leaf_names(der: &CertificateDer<'_>, now: i64) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let not_after = cert.validity().not_after;
    if not_after.timestamp() < now {
        return Err(format!("the certificate expired on {not_after}"));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// The certificates of `certs` that can serve as trust anchors; the
/// others (a system bundle may hold a few rustls cannot use) are dropped.
pub(crate) fn usable_roots(certs: Vec<CertificateDer<'static>>) -> Vec<CertificateDer<'static>> {
    certs
        .into_iter()
        .filter(|c| rustls::RootCertStore::empty().add(c.clone()).is_ok())
        .collect()
}

/// The system's trust anchors (`SSL_CERT_FILE`/`SSL_CERT_DIR` respected),
/// or why there are none.
pub(crate) fn system_roots() -> Result<Vec<CertificateDer<'static>>, String> {
    let found = rustls_native_certs::load_native_certs();
    let roots = usable_roots(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        return Err(format!(
            "no usable system root certificates{why}; name a PEM bundle with `ca`"
        ));
    }
    Ok(roots)
}

/// The cryptography every TLS session of the gateway uses. aws-lc-rs over
/// ring, by measurement (benches/RESULTS.md, "ring vs aws-lc-rs"): server
/// handshakes 26% (TLS 1.3) and 36% (TLS 1.2) cheaper, AES-GCM on full
/// records 1.5-1.7x faster, and the X25519MLKEM768 hybrid key exchange.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The chain and key together, checked to match.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, String> {
    CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not match the certificate".to_owned()
        }
        other => format!("unusable private key: {other}"),
    })
}

/// The identity of a verified client certificate: its first URI SAN
/// (SPIFFE style), else its first DNS SAN.
pub fn client_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut dns = None;
    for name in &san.value.general_names {
        match name {
            x509_parser::extensions::GeneralName::URI(u) => return Some((*u).to_owned()),
            x509_parser::extensions::GeneralName::DNSName(d) if dns.is_none() => {
                dns = Some((*d).to_owned());
            }
            _ => {}
        }
    }
    dns
}
