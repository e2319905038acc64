//! The simulator's certificates: a cluster CA (like `/etc/pve/pve-root-ca.pem`) and a node leaf
//! (like `pve-ssl.pem`), generated with rcgen. The leaf can be rotated at run time (a renewed
//! certificate) to test pin mismatches; the CA stays.
//!
//! Invariant: `fingerprint()` is the SHA-256 of the leaf currently served, in the `AA:BB:…` form
//! `pvenode cert info` prints.

use std::sync::{Arc, RwLock};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

pub struct CertStore {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_pem: String,
    names: Vec<String>,
    current: RwLock<Leaf>,
}

#[derive(Clone)]
struct Leaf {
    key: Arc<CertifiedKey>,
    pem: String,
    fingerprint: String,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

pub fn format_fingerprint(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl CertStore {
    /// `names`: DNS names and IP addresses for the leaf's SAN (node names, localhost, 127.0.0.1).
    pub fn generate(names: Vec<String>) -> Result<CertStore, String> {
        let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Proxmox Virtual Environment");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "pve-sim");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "PVE Cluster Manager CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
        let ca_pem = ca_cert.pem();
        let leaf = make_leaf(&ca_params, &ca_key, &names)?;
        Ok(CertStore {
            ca_key,
            ca_params,
            ca_pem,
            names,
            current: RwLock::new(leaf),
        })
    }

    pub fn fingerprint(&self) -> String {
        self.current.read().expect("cert lock").fingerprint.clone()
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn leaf_pem(&self) -> String {
        self.current.read().expect("cert lock").pem.clone()
    }

    /// Issues a new leaf from the same CA (a renewed node certificate); returns its fingerprint.
    pub fn rotate(&self) -> Result<String, String> {
        let leaf = make_leaf(&self.ca_params, &self.ca_key, &self.names)?;
        let fp = leaf.fingerprint.clone();
        *self.current.write().expect("cert lock") = leaf;
        Ok(fp)
    }
}

fn make_leaf(
    ca_params: &CertificateParams,
    ca_key: &KeyPair,
    names: &[String],
) -> Result<Leaf, String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "PVE Cluster Node");
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_params(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    let der: CertificateDer<'static> = cert.der().clone();
    let fingerprint = format_fingerprint(&der);
    let pkey = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = any_supported_type(&pkey).map_err(|e| e.to_string())?;
    Ok(Leaf {
        key: Arc::new(CertifiedKey::new(vec![der], signer)),
        pem: cert.pem(),
        fingerprint,
    })
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().ok()?.key.clone())
    }
}

/// A rustls server config serving the store's current leaf, HTTP/1.1 only (pveproxy has no h2).
pub fn server_config(store: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}
