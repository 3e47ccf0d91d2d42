//! Mutual TLS with a cluster CA (design item 23).
//!
//! Every node holds a certificate issued by the cluster's CA, whose subject alternative
//! name (and common name) is the node's name and whose organizational unit is its [`Role`]
//! (`node` or `client`). The mesh binds a peer's hello to it: the name claimed must be in
//! the certificate, the node id must be `NodeId::of_name` of that name, and a client
//! certificate can only claim a client name ([`CLIENT_NAME_SUFFIX`]). Both directions are
//! authenticated:
//!
//! * the server side ([`TlsConfig::server_config`]) *requires* a client certificate and
//!   verifies it against the CA (rustls `WebPkiClientVerifier`); a peer without one, or
//!   with one from another CA, is refused during the handshake, and the refusal is logged
//!   with `tracing::warn!` (by the verifier for a bad certificate, by the endpoint's accept
//!   path for every failed handshake);
//! * the client side ([`TlsConfig::client_config`]) trusts only the CA (no system roots),
//!   checks that the server's certificate names the node it meant to reach, and presents
//!   its own certificate.
//!
//! TLS 1.3 only, with the `ring` provider. The ALPN protocol is [`ALPN`].
//!
//! [`TlsConfig::insecure_dev`] turns verification *off* (any peer gets in) for local
//! experiments; it logs `tracing::error!` every time a configuration is built from it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName as TlsDn, RootCertStore, SignatureScheme};

/// The ALPN protocol id Cairn nodes speak.
pub const ALPN: &[u8] = b"cairn/1";

/// The server name a seed known only by its address (`--join 127.0.0.1:7400`) is dialed
/// under. No certificate carries it (none may be issued for it): for this name the dialing
/// side accepts any *node* certificate the cluster CA signed, checked for its own name
/// (`ClusterServerVerifier`), and the seed's name and id are then learned from its hello,
/// which must match that certificate like every hello. Every other name is checked as TLS
/// checks a host name, so a node dialed as `n2` must present `n2`'s certificate.
pub const SEED_SERVER_NAME: &str = "cairn-seed";

/// Names of client nodes end with this: placement never makes a client the owner of an
/// object, and a certificate of role [`Role::Client`] can only claim such a name.
pub const CLIENT_NAME_SUFFIX: &str = ".client";

/// What a certificate allows its holder to be, in its subject's organizational unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A member that may own objects and names.
    Node,
    /// A client: it sends and calls, and never owns objects (its name ends with
    /// [`CLIENT_NAME_SUFFIX`]).
    Client,
}

impl Role {
    /// The role a name implies: [`Role::Client`] for names ending with
    /// [`CLIENT_NAME_SUFFIX`].
    pub fn of_name(name: &str) -> Role {
        if name.ends_with(CLIENT_NAME_SUFFIX) {
            Role::Client
        } else {
            Role::Node
        }
    }

    /// Its spelling in certificates and on the command line: `node` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "node" => Ok(Role::Node),
            "client" => Ok(Role::Client),
            other => Err(format!("unknown role {other:?} (node or client)")),
        }
    }
}

/// Lifetime of issued certificates unless the issuer says otherwise: 90 days, so that a
/// stolen key is good for a bounded time even if its revocation is missed. Renew before it
/// ends (peers refuse an expired certificate at the handshake; rotation needs no restart).
pub const DEFAULT_CERT_DAYS: u32 = 90;

/// File name of the CA certificate in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Errors building, saving, loading or using certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate of this role cannot carry this name (client names end with
    /// [`CLIENT_NAME_SUFFIX`]; node names do not, and are not [`SEED_SERVER_NAME`]).
    #[error("a {role} certificate cannot be issued for {name:?}: {why}")]
    BadName {
        /// The name asked for.
        name: String,
        /// The role asked for.
        role: Role,
        /// What is wrong.
        why: &'static str,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier error: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the rustls configuration (e.g. no TLS 1.3 cipher suite).
    #[error("QUIC crypto configuration error: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A node's own certificate is not valid now: expired, or not valid yet (a clock
    /// behind, or a certificate issued for later). Peers would refuse it at the handshake.
    #[error("the certificate of {name:?} is {why} (valid from {not_before} until {not_after}, now {now}); issue a new one (`cairn-node cert issue`)")]
    NotValidNow {
        /// The holder's name.
        name: String,
        /// `expired` or `not valid yet`.
        why: &'static str,
        /// Its validity, as RFC 3339 times (UTC).
        not_before: String,
        /// See `not_before`.
        not_after: String,
        /// The local clock.
        now: String,
    },
    /// A private key that is not the certificate's (e.g. the CA's key given as a node's).
    #[error("the private key is not the key of the certificate for {0:?}")]
    KeyMismatch(String),
    /// Reading or writing a CA directory failed.
    #[error("CA file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The cluster's certificate authority: signs every node's certificate.
pub struct ClusterCa {
    /// The CA certificate as issued (what peers trust).
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    /// An rcgen view of the CA for signing; for a loaded CA it is re-derived from the saved
    /// certificate (same subject and key, so issued certificates chain to `cert_der`).
    issuer: rcgen::Certificate,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a new self-signed CA (ECDSA P-256).
    pub fn generate() -> Result<ClusterCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Cairn cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
            issuer: cert,
        })
    }

    /// Loads a CA saved by [`ClusterCa::save`] from `dir` (`ca.pem`, `ca.key`).
    pub fn load(dir: &Path) -> Result<ClusterCa, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let cert_pem = read(CA_CERT_FILE)?;
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)?;
        let params = CertificateParams::from_ca_cert_pem(&cert_pem)?;
        let cert_der = CertificateDer::from(pem_to_der(&cert_pem)?);
        let issuer = params.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem,
            cert_der,
            key,
            issuer,
        })
    }

    /// Saves the CA to `dir` (created if missing): `ca.pem` and `ca.key`. The key file is
    /// created readable by its owner only on Unix.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let io_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cert_path = dir.join(CA_CERT_FILE);
        std::fs::write(&cert_path, &self.cert_pem).map_err(io_err(&cert_path))?;
        let key_path = dir.join(CA_KEY_FILE);
        write_private(&key_path, self.key.serialize_pem().as_bytes()).map_err(io_err(&key_path))
    }

    /// The CA certificate (DER), which every node trusts.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `node_name` (its common name and its one subject
    /// alternative name), valid for both server and client authentication,
    /// with the role its name implies ([`Role::of_name`]).
    /// Valid for [`DEFAULT_CERT_DAYS`].
    pub fn issue(&self, node_name: &str) -> Result<NodeCert, TlsError> {
        self.issue_as(node_name, Role::of_name(node_name), DEFAULT_CERT_DAYS)
    }

    /// Issues a certificate for `name` in `role`, valid from an hour ago (clock skew) for
    /// `days` days (see [`ClusterCa::issue`]). A client's name must end with
    /// [`CLIENT_NAME_SUFFIX`], a node's must not; neither may be [`SEED_SERVER_NAME`].
    pub fn issue_as(&self, name: &str, role: Role, days: u32) -> Result<NodeCert, TlsError> {
        self.issue_in(name, role, days, None)
    }

    /// [`ClusterCa::issue_as`] with the holder's region in the certificate (the subject's
    /// locality): a node whose certificate names a region can claim no other.
    pub fn issue_in(
        &self,
        name: &str,
        role: Role,
        days: u32,
        region: Option<&str>,
    ) -> Result<NodeCert, TlsError> {
        let bad = |why| TlsError::BadName {
            name: name.to_owned(),
            role,
            why,
        };
        if name == SEED_SERVER_NAME {
            return Err(bad(
                "that name is what seeds known by address are dialed under",
            ));
        }
        if Role::of_name(name) != role {
            return Err(bad(match role {
                Role::Client => "client names end with \".client\"",
                Role::Node => "names ending with \".client\" are for clients",
            }));
        }
        // One name only: a certificate speaks for its holder and no one else.
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        if let Some(region) = region {
            if region.is_empty() || region.len() > 64 {
                return Err(bad("a region has 1 to 64 bytes"));
            }
            dn.push(DnType::LocalityName, region);
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let at = |secs: u64| {
            i64::try_from(secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .ok_or_else(|| bad("its validity dates are out of range"))
        };
        params.not_before = at(now.saturating_sub(3600))?;
        params.not_after = at(now + u64::from(days) * 86_400)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(NodeCert {
            name: name.to_owned(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a new file: narrow an existing one too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// `t` as an RFC 3339 time in UTC (seconds).
fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} s after the epoch"),
    }
}

/// The DER bytes of the first certificate in `pem`.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|e| TlsError::Rustls(rustls::Error::General(format!("bad CA PEM: {e}"))))
}

/// A node's certificate and private key, issued by a [`ClusterCa`].
#[derive(Clone)]
pub struct NodeCert {
    name: String,
    cert_der: CertificateDer<'static>,
    /// PKCS#8 DER.
    key_der: Vec<u8>,
    /// The same two as PEM, for saving to files.
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeCert {
    /// Saves the certificate and its key to `dir` (created if missing) as `<name>.pem` and
    /// `<name>.key`, the key readable by its owner only on Unix; returns the two paths.
    pub fn save(&self, dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), TlsError> {
        let io_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cert_path = dir.join(format!("{}.pem", self.name));
        std::fs::write(&cert_path, &self.cert_pem).map_err(io_err(&cert_path))?;
        let key_path = dir.join(format!("{}.key", self.name));
        write_private(&key_path, self.key_pem.as_bytes()).map_err(io_err(&key_path))?;
        Ok((cert_path, key_path))
    }

    /// The node name the certificate was issued for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// What the certificate says of its holder (name, role, serial, region); `None` if it
    /// does not parse.
    pub fn identity(&self) -> Option<CertIdentity> {
        CertIdentity::of_cert(self.cert_der.as_ref())
    }

    /// Builds a node certificate from PEM text (certificate and PKCS#8 private key), e.g.
    /// files made by [`NodeCert::cert_pem`] / [`NodeCert::key_pem`] or by another tool.
    /// Fails with [`TlsError::KeyMismatch`] when the key is not the certificate's.
    pub fn from_pem(name: &str, cert_pem: &str, key_pem: &str) -> Result<NodeCert, TlsError> {
        use rustls::pki_types::pem::PemObject;
        let cert_der = CertificateDer::from(pem_to_der(cert_pem)?);
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::Rustls(rustls::Error::General(format!("bad key PEM: {e}"))))?
            .secret_pkcs8_der()
            .to_vec();
        // A certificate and a key written one after the other (a rotation in progress), or
        // the wrong key file, would only fail every handshake: refuse them here.
        let public = KeyPair::try_from(key_der.as_slice())?;
        let matches =
            x509_parser::parse_x509_certificate(cert_der.as_ref()).is_ok_and(|(_, cert)| {
                *cert.public_key().subject_public_key.data == *public.public_key_raw()
            });
        if !matches {
            return Err(TlsError::KeyMismatch(name.to_owned()));
        }
        Ok(NodeCert {
            name: name.to_owned(),
            cert_der,
            key_der,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The certificate's validity: (not before, not after); `None` if it does not parse.
    pub fn validity(&self) -> Option<(SystemTime, SystemTime)> {
        let (_, cert) = x509_parser::parse_x509_certificate(self.cert_der.as_ref()).ok()?;
        let at = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            match u64::try_from(secs) {
                Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
                Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
            }
        };
        let validity = cert.validity();
        Some((at(validity.not_before), at(validity.not_after)))
    }

    /// Whether the certificate is valid at `now`: how long it stays valid, or
    /// [`TlsError::NotValidNow`] (expired, or not valid yet).
    pub fn valid_at(&self, now: SystemTime) -> Result<Duration, TlsError> {
        let Some((not_before, not_after)) = self.validity() else {
            return Err(TlsError::Rustls(rustls::Error::General(format!(
                "the certificate of {:?} does not parse",
                self.name
            ))));
        };
        let why = if now < not_before {
            "not valid yet"
        } else if now > not_after {
            "expired"
        } else {
            return Ok(not_after.duration_since(now).unwrap_or_default());
        };
        Err(TlsError::NotValidNow {
            name: self.name.clone(),
            why,
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            now: rfc3339(now),
        })
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key as PEM (PKCS#8). Keep it secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Everything a node needs for mutual TLS: the CA it trusts and its own certificate.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    ca_cert: CertificateDer<'static>,
    node: NodeCert,
    insecure_dev: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// Mutual TLS from PEM: trust the CA certificate `ca_pem` only, present `node`.
    pub fn from_pem(ca_pem: &str, node: NodeCert) -> Result<TlsConfig, TlsError> {
        Ok(TlsConfig::new(
            CertificateDer::from(pem_to_der(ca_pem)?),
            node,
        ))
    }

    /// Mutual TLS: trust `ca_cert` only, present `node`.
    pub fn new(ca_cert: CertificateDer<'static>, node: NodeCert) -> TlsConfig {
        TlsConfig {
            ca_cert,
            node,
            insecure_dev: false,
        }
    }

    /// **Development only**: skip verifying peers (any certificate, or none, is accepted).
    /// Logs `tracing::error!` now and whenever a configuration is built from it.
    pub fn insecure_dev(node: NodeCert) -> TlsConfig {
        tracing::error!(
            node = node.name(),
            "INSECURE: TLS peer verification is DISABLED (insecure_dev); any peer can join"
        );
        TlsConfig {
            ca_cert: node.cert_der.clone(),
            node,
            insecure_dev: true,
        }
    }

    /// This node's certificate.
    pub fn node(&self) -> &NodeCert {
        &self.node
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert.clone())?;
        Ok(Arc::new(roots))
    }

    /// The server side: requires a client certificate signed by the CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = provider();
        let verifier: Arc<dyn ClientCertVerifier> = if self.insecure_dev {
            tracing::error!("INSECURE: accepting QUIC peers without verifying their certificates");
            Arc::new(AcceptAnyClient {
                provider: Arc::clone(&provider),
            })
        } else {
            let inner =
                WebPkiClientVerifier::builder_with_provider(self.roots()?, Arc::clone(&provider))
                    .build()?;
            Arc::new(LoggingClientVerifier { inner })
        };
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.node.cert_der.clone()], self.node.key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls)?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
    }

    /// The client side: trusts only the CA and presents this node's certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = if self.insecure_dev {
            tracing::error!("INSECURE: connecting to QUIC peers without verifying them");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer { provider }))
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ClusterServerVerifier::new(
                    self.roots()?,
                    provider,
                )?))
        };
        let mut tls =
            builder.with_client_auth_cert(vec![self.node.cert_der.clone()], self.node.key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls)?;
        Ok(quinn::ClientConfig::new(Arc::new(quic)))
    }
}

/// The handshake-signature methods, the same in every verifier here: checked by the
/// wrapped verifier (`inner`), or with the crypto provider's algorithms (`provider`, for the
/// insecure development verifiers, which still make a peer prove it holds its key).
macro_rules! signatures_checked_by {
    (inner) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
    (provider) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Wraps the WebPKI client verifier to log refusals (`tracing::warn!`).
#[derive(Debug)]
struct LoggingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for LoggingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[TlsDn] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|error| {
                tracing::warn!(%error, "refused a peer: client certificate not signed by the cluster CA");
            })
    }

    signatures_checked_by!(inner);
}

/// `insecure_dev` server side: accepts any client certificate (still checks signatures, so
/// the peer holds the key of the certificate it shows).
#[derive(Debug)]
struct AcceptAnyClient {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AcceptAnyClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[TlsDn] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    signatures_checked_by!(provider);
}

/// The name every node certificate carried besides its own before certificates named their
/// holder only: a certificate that still carries it cannot go by it.
const LEGACY_SHARED_NAME: &str = "cairn-node";

/// The dialing side's check of a node's certificate: chained to the cluster CA, valid now,
/// for server authentication, and naming the node dialed. A seed dialed by address only
/// ([`SEED_SERVER_NAME`]) may be any node: its certificate is checked for the name it
/// carries (a client certificate is refused: clients host nothing), and the hello binds
/// that name to the connection.
#[derive(Debug)]
struct ClusterServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ClusterServerVerifier {
    fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClusterServerVerifier, TlsError> {
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        Ok(ClusterServerVerifier { inner })
    }
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seed = matches!(server_name, ServerName::DnsName(n) if n.as_ref() == SEED_SERVER_NAME);
        let own_name;
        let name = if seed {
            own_name = CertIdentity::of_cert(end_entity)
                .filter(|id| id.role == Role::Node)
                .and_then(|id| id.names.into_iter().find(|n| n != LEGACY_SHARED_NAME))
                .and_then(|name| ServerName::try_from(name).ok())
                .ok_or_else(|| {
                    tracing::warn!("refused a seed: its certificate names no node");
                    rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                })?;
            &own_name
        } else {
            server_name
        };
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    signatures_checked_by!(inner);
}

/// `insecure_dev` client side: accepts any server certificate.
#[derive(Debug)]
struct AcceptAnyServer {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    signatures_checked_by!(provider);
}

/// Who a peer's certificate says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// Its DNS names (subject alternative names).
    pub names: Vec<String>,
    /// Its role (organizational unit `client`; anything else is a node).
    pub role: Role,
    /// Its serial number (what a revocation list names).
    pub serial: Serial,
    /// Its region (the subject's locality), when issued with one.
    pub region: Option<String>,
}

/// A certificate serial number: big-endian bytes without leading zeros, written as
/// lowercase hex (`cairn-node cert issue` prints it; a revocation list holds one a line).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// From the DER integer's bytes (leading zero bytes dropped).
    pub fn from_bytes(bytes: &[u8]) -> Serial {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        Serial(bytes[start..].to_vec())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Serial {
    type Err = String;

    /// Hex, either case, with optional `:` between bytes (as `openssl x509 -serial`
    /// and browsers print it) and an optional `0x`.
    fn from_str(s: &str) -> Result<Serial, String> {
        let s = s.trim();
        let hex: String = s
            .strip_prefix("0x")
            .unwrap_or(s)
            .chars()
            .filter(|&c| c != ':')
            .collect();
        if hex.is_empty() || hex.len() > 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "{s:?} is not a certificate serial (hex, at most 32 bytes)"
            ));
        }
        let padded = if hex.len() % 2 == 1 {
            format!("0{hex}")
        } else {
            hex
        };
        let bytes = (0..padded.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).map_err(|e| e.to_string()))
            .collect::<Result<Vec<u8>, String>>()?;
        Ok(Serial::from_bytes(&bytes))
    }
}

impl CertIdentity {
    /// Whether the holder may go by `name`: the certificate carries it, it is not the
    /// seed dialing name [`SEED_SERVER_NAME`] (which older certificates carried as a shared
    /// second name), and a client certificate claims a client name.
    pub fn allows(&self, name: &str) -> bool {
        name != SEED_SERVER_NAME
            && name != LEGACY_SHARED_NAME
            && self.names.iter().any(|n| n == name)
            && (self.role == Role::Node || Role::of_name(name) == Role::Client)
    }

    /// Reads the first certificate in `pem`; `None` if there is none or it does not parse.
    pub fn of_pem(pem: &str) -> Option<CertIdentity> {
        CertIdentity::of_cert(&pem_to_der(pem).ok()?)
    }

    /// Reads a certificate (DER); `None` if it does not parse.
    pub fn of_cert(der: &[u8]) -> Option<CertIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = match cert.subject_alternative_name().ok()? {
            Some(san) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let client = cert
            .subject()
            .iter_organizational_unit()
            .any(|ou| ou.as_str().ok() == Some(Role::Client.as_str()));
        let role = if client { Role::Client } else { Role::Node };
        let region = cert
            .subject()
            .iter_locality()
            .find_map(|l| l.as_str().ok().map(str::to_owned));
        Some(CertIdentity {
            names,
            role,
            serial: Serial::from_bytes(cert.raw_serial()),
            region,
        })
    }
}

/// The identity in the certificate the peer of `conn` presented, so a node's claimed name
/// can be checked against what the cluster CA signed. `None` when the peer presented no
/// certificate (only in insecure dev mode) or it does not parse (TLS has already verified
/// it, so that does not happen in practice).
pub fn peer_identity(conn: &quinn::Connection) -> Option<CertIdentity> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    CertIdentity::of_cert(certs.first()?.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_issue() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate().unwrap();
        ca.save(dir.path()).unwrap();
        let loaded = ClusterCa::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_der(), ca.cert_der());
        // A certificate issued by the loaded CA verifies against the original CA cert.
        let node = loaded.issue("node-a").unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(node.cert_der(), &[], UnixTime::now())
            .unwrap();
        // One from another CA does not.
        let other = ClusterCa::generate().unwrap().issue("node-a").unwrap();
        assert!(verifier
            .verify_client_cert(other.cert_der(), &[], UnixTime::now())
            .is_err());
        TlsConfig::new(ca.cert_der().clone(), node.clone())
            .server_config()
            .unwrap();
        TlsConfig::new(ca.cert_der().clone(), node)
            .client_config()
            .unwrap();
    }

    #[test]
    fn certificates_carry_the_name_and_role_and_allow_only_that_name() {
        let ca = ClusterCa::generate().unwrap();
        let node = CertIdentity::of_cert(ca.issue("n1").unwrap().cert_der()).unwrap();
        assert_eq!(node.role, Role::Node);
        assert_eq!(node.names, ["n1"], "a certificate names its holder only");
        assert!(node.allows("n1"));
        assert!(!node.allows("n2"));
        // An older certificate that still carries the once-shared name cannot go by it,
        // nor by the seed dialing name.
        let legacy = CertIdentity {
            names: vec!["n1".into(), LEGACY_SHARED_NAME.into()],
            ..node.clone()
        };
        assert!(legacy.allows("n1"));
        assert!(!legacy.allows(LEGACY_SHARED_NAME));
        assert!(!legacy.allows(SEED_SERVER_NAME));
        let client = ca.issue_as("ops.client", Role::Client, 30).unwrap();
        let client = CertIdentity::of_cert(client.cert_der()).unwrap();
        assert_eq!(client.role, Role::Client);
        assert_eq!(client.names, ["ops.client"]);
        assert!(client.allows("ops.client"));
        // A client certificate never passes for a node, whatever names it carries.
        let forged = CertIdentity {
            names: vec!["n1".into(), "ops.client".into()],
            role: Role::Client,
            serial: Serial::from_bytes(&[1]),
            region: None,
        };
        assert!(!forged.allows("n1"));
        // Issuing refuses names that do not fit the role.
        assert!(matches!(
            ca.issue_as("ops", Role::Client, 30),
            Err(TlsError::BadName { .. })
        ));
        assert!(matches!(
            ca.issue_as("n1.client", Role::Node, 30),
            Err(TlsError::BadName { .. })
        ));
        assert!(matches!(
            ca.issue(SEED_SERVER_NAME),
            Err(TlsError::BadName { .. })
        ));
        assert_eq!(
            ca.issue("x.client").map(|c| c.name().to_owned()).unwrap(),
            "x.client"
        );
        assert_eq!("client".parse::<Role>(), Ok(Role::Client));
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn certificates_are_valid_for_the_days_asked() {
        let ca = ClusterCa::generate().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (cert, days) in [
            // 90 days unless asked otherwise.
            (ca.issue("n1").unwrap(), 90),
            (ca.issue_as("n2", Role::Node, 7).unwrap(), 7),
        ] {
            let (_, parsed) = x509_parser::parse_x509_certificate(cert.cert_der()).unwrap();
            let validity = parsed.validity();
            let until = validity.not_after.timestamp();
            assert!(
                (until - (now + days * 86_400)).abs() < 120,
                "{until} for {days} days"
            );
            assert!(validity.not_before.timestamp() <= now);
        }
    }

    #[test]
    fn a_certificate_is_valid_between_its_dates_only_and_its_key_must_match() {
        let ca = ClusterCa::generate().unwrap();
        let cert = ca.issue_as("n1", Role::Node, 2).unwrap();
        let now = SystemTime::now();
        let left = cert.valid_at(now).unwrap();
        assert!(left > Duration::from_secs(86_400) && left <= Duration::from_secs(2 * 86_400));
        // Issued valid from an hour ago (clock skew): two hours back it is not valid yet.
        let early = cert.valid_at(now - Duration::from_secs(7200)).unwrap_err();
        assert!(
            matches!(
                early,
                TlsError::NotValidNow {
                    why: "not valid yet",
                    ..
                }
            ),
            "{early}"
        );
        let late = cert
            .valid_at(now + Duration::from_secs(3 * 86_400))
            .unwrap_err();
        assert!(
            matches!(late, TlsError::NotValidNow { why: "expired", .. }),
            "{late}"
        );
        assert!(
            late.to_string().contains("is expired (valid from 20"),
            "{late}"
        );
        // Another key with this certificate (a CA key handed over by mistake, or a rotation
        // half written) is refused.
        let other = ca.issue("n2").unwrap();
        assert!(matches!(
            NodeCert::from_pem("n1", cert.cert_pem(), other.key_pem()),
            Err(TlsError::KeyMismatch(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        ca.save(dir.path()).unwrap();
        let ca_key = std::fs::read_to_string(dir.path().join(CA_KEY_FILE)).unwrap();
        assert!(NodeCert::from_pem("n1", cert.cert_pem(), &ca_key).is_err());
    }

    #[test]
    fn node_certificates_round_trip_through_pem() {
        let ca = ClusterCa::generate().unwrap();
        let node = ca.issue("n1").unwrap();
        let back = NodeCert::from_pem("n1", node.cert_pem(), node.key_pem()).unwrap();
        assert_eq!(back.cert_der(), node.cert_der());
        assert_eq!(back.key_der, node.key_der);
        let tls = TlsConfig::from_pem(ca.cert_pem(), back).unwrap();
        tls.server_config().unwrap();
        tls.client_config().unwrap();
        assert!(NodeCert::from_pem("n1", "not a pem", node.key_pem()).is_err());
        assert!(NodeCert::from_pem("n1", node.cert_pem(), "not a pem").is_err());
    }
}
