//! The throw-away PKI of one local control plane: a CA, the API server's serving certificate, the
//! admin client certificate and the service-account signing key, all generated in memory.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::{Error, Result};

/// User name of the admin client certificate.
pub const ADMIN_USER: &str = "azureml-operator:admin";

/// Group of the admin client certificate: RBAC's built-in superuser group, bound to `cluster-admin`
/// without any RoleBinding, so the admin works from the first request on.
pub const ADMIN_GROUP: &str = "system:masters";

/// Names the serving certificate is valid for: the loopback address the server binds to, and the
/// in-cluster names a client may use as TLS server name.
const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// PEM-encoded key material for one control plane.
pub struct Pki {
    /// The CA that signed the serving and the admin certificates; clients trust it, and the API
    /// server accepts client certificates signed by it.
    pub ca_cert: String,
    /// The API server's serving certificate.
    pub serving_cert: String,
    /// The serving certificate's private key (PKCS#8).
    pub serving_key: String,
    /// The admin client certificate (see [`ADMIN_USER`], [`ADMIN_GROUP`]).
    pub admin_cert: String,
    /// The admin certificate's private key (PKCS#8).
    pub admin_key: String,
    /// The private key that signs service-account tokens (PKCS#8, ECDSA P-256).
    pub service_account_key: String,
    /// Its public key (SPKI), which the API server uses to verify the tokens.
    pub service_account_public_key: String,
}

impl Pki {
    /// Generates fresh keys and certificates (ECDSA P-256, which Go and rustls both accept).
    pub fn generate() -> Result<Self> {
        let ca = CertifiedIssuer::self_signed(ca_params()?, KeyPair::generate()?)?;

        let serving_key = KeyPair::generate()?;
        let mut serving =
            CertificateParams::new(SERVING_NAMES.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        // The API server's x509 authenticator reads the user from CN and the groups from O.
        admin.distinguished_name.push(DnType::CommonName, ADMIN_USER);
        admin.distinguished_name.push(DnType::OrganizationName, ADMIN_GROUP);
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &ca)?;

        let service_account = KeyPair::generate()?;

        Ok(Self {
            ca_cert: ca.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            service_account_key: service_account.serialize_pem(),
            service_account_public_key: service_account.public_key_pem(),
        })
    }
}

fn ca_params() -> Result<CertificateParams> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "azureml-operator local control plane CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(ca)
}

impl From<rcgen::Error> for Error {
    fn from(source: rcgen::Error) -> Self {
        Error::Pki { source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece is PEM of the kind the API server's flags expect, and each run makes new keys
    /// (two control planes must never share a CA or a token signing key).
    #[test]
    fn generates_distinct_pem_material() {
        let a = Pki::generate().expect("generate");
        let b = Pki::generate().expect("generate");
        for cert in [&a.ca_cert, &a.serving_cert, &a.admin_cert] {
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        }
        for key in [&a.serving_key, &a.admin_key, &a.service_account_key] {
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        }
        assert!(a.service_account_public_key.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_ne!(a.ca_cert, b.ca_cert);
        assert_ne!(a.service_account_key, b.service_account_key);
    }
}
