//! Generates the emulator's certificate authority and server certificate, and the rustls server config.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// A freshly generated CA and a server certificate it signed.
pub(crate) struct Certificates {
    /// PEM text of the CA certificate that clients must trust.
    pub ca_pem: String,
    /// The TLS configuration presenting the server certificate (and the CA, as a chain).
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Creates a CA and a server certificate valid for loopback names, both with ECDSA P-256 keys.
///
/// The server certificate names `127.0.0.1`, `::1`, `localhost` and `*.localhost`, so clients may use
/// per-service host names such as `login.localhost` while still reaching the single listener.
pub(crate) fn generate() -> Result<Certificates, Error> {
    let tls = |e: rcgen::Error| Error::Tls(e.to_string());

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.distinguished_name.push(DnType::CommonName, "Azure ML Emulator CA");
    ca_params.distinguished_name.push(DnType::OrganizationName, "azureml-emulator");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().map_err(tls)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let names = ["127.0.0.1", "::1", "localhost", "*.localhost"].map(String::from).to_vec();
    let mut server_params = CertificateParams::new(names).map_err(tls)?;
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().map_err(tls)?;
    let server_cert = server_params.signed_by(&server_key, &issuer).map_err(tls)?;

    let chain = vec![server_cert.der().clone(), CertificateDer::from(ca_cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Certificates { ca_pem, server_config: Arc::new(config) })
}
