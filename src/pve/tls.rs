//! TLS trust for the PVE API connection: a configured CA chain, else a pinned leaf fingerprint.
//!
//! Owns the rustls `ClientConfig` (ring provider, HTTP/1.1 ALPN only) and its
//! [`PinningVerifier`], following the proxmox-backup-client convention (reference §7 "TLS"):
//! 1. if a CA is configured and normal WebPKI validation (chain, validity, name) succeeds, accept;
//! 2. otherwise the SHA-256 over the leaf certificate's DER must equal the pinned fingerprint;
//! 3. otherwise fail closed. There is no insecure mode.
//!
//! Handshake signatures are always verified with the provider's algorithms, so a pinned
//! certificate is only accepted from a peer holding its private key. On rejection the presented
//! fingerprint is stored in a shared [`PresentedFingerprint`] slot so the caller can report it.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// SHA-256 of a DER certificate.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Format a fingerprint like `pvenode cert info`: upper-case hex pairs joined by `:`.
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    let mut out = String::with_capacity(95);
    for (i, b) in fp.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Parse a SHA-256 fingerprint written as `AA:BB:…` (32 pairs) or as 64 plain hex digits,
/// either letter case. Surrounding whitespace is ignored.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let t = s.trim();
    let hex: String = if t.contains(':') {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() != 32 || parts.iter().any(|p| p.len() != 2) {
            return Err(format!(
                "invalid fingerprint '{t}': expected 32 colon-separated hex pairs (AA:BB:...) or 64 hex digits"
            ));
        }
        parts.concat()
    } else {
        t.to_string()
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid fingerprint '{t}': expected 32 colon-separated hex pairs (AA:BB:...) or 64 hex digits"
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("invalid fingerprint '{t}'"))?;
    }
    Ok(out)
}

/// A certificate the verifier rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// SHA-256 of the presented leaf.
    pub fingerprint: [u8; 32],
    /// Operator-facing reason (see [`rejection_message`]).
    pub message: String,
}

/// Shared slot holding the last certificate the verifier rejected.
#[derive(Clone, Default)]
pub struct PresentedFingerprint(Arc<Mutex<Option<Rejection>>>);

impl PresentedFingerprint {
    fn set(&self, r: Rejection) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }

    /// Take (and clear) the last rejection.
    pub fn take(&self) -> Option<Rejection> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl fmt::Debug for PresentedFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresentedFingerprint")
    }
}

/// Why the TLS settings could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    /// Neither a CA nor a pin: the connection could never be trusted.
    #[error(
        "no TLS trust configured: set [pve] fingerprint (from `pvenode cert info`) or a CA file"
    )]
    NoTrust,
    /// The CA PEM had no usable certificate.
    #[error("CA file: {0}")]
    BadCa(String),
    /// rustls rejected the configuration.
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// Server certificate verifier: CA chain first, then the pinned leaf fingerprint.
pub struct PinningVerifier {
    ca: Option<Arc<WebPkiServerVerifier>>,
    pin: Option<[u8; 32]>,
    algs: WebPkiSupportedAlgorithms,
    presented: PresentedFingerprint,
}

impl fmt::Debug for PinningVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinningVerifier")
            .field("ca", &self.ca.is_some())
            .field("pin", &self.pin.as_ref().map(format_fingerprint))
            .finish()
    }
}

/// The rejection reason carried inside the rustls error.
#[derive(Debug)]
struct Rejected(String);

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

impl PinningVerifier {
    /// Build the verifier. `ca_pem` holds one or more PEM certificates.
    pub fn new(
        provider: &Arc<CryptoProvider>,
        pin: Option<[u8; 32]>,
        ca_pem: Option<&[u8]>,
        presented: PresentedFingerprint,
    ) -> Result<Self, TlsSetupError> {
        let ca = match ca_pem {
            None => None,
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(TlsSetupError::BadCa("no PEM certificate found".into()));
                }
                let v = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(provider),
                )
                .build()
                .map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
                Some(v)
            }
        };
        if ca.is_none() && pin.is_none() {
            return Err(TlsSetupError::NoTrust);
        }
        Ok(Self {
            ca,
            pin,
            algs: provider.signature_verification_algorithms,
            presented,
        })
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut ca_failure = None;
        if let Some(ca) = &self.ca {
            match ca.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            {
                Ok(ok) => return Ok(ok),
                Err(e) => ca_failure = Some(e.to_string()),
            }
        }
        let fp = cert_fingerprint(end_entity.as_ref());
        if self.pin == Some(fp) {
            return Ok(ServerCertVerified::assertion());
        }
        let msg = rejection_message(&fp, self.pin.as_ref(), ca_failure.as_deref());
        self.presented.set(Rejection {
            fingerprint: fp,
            message: msg.clone(),
        });
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(Rejected(msg)))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The operator-facing text for a rejected server certificate.
pub fn rejection_message(
    presented: &[u8; 32],
    pin: Option<&[u8; 32]>,
    ca_failure: Option<&str>,
) -> String {
    let presented = format_fingerprint(presented);
    match (pin, ca_failure) {
        (Some(pin), _) => format!(
            "server certificate fingerprint is {presented}, expected {}; if the node certificate was renewed, update [pve] fingerprint",
            format_fingerprint(pin)
        ),
        (None, Some(ca)) => format!(
            "server certificate is not trusted by the configured CA ({ca}) and no [pve] fingerprint is pinned; its fingerprint is {presented}"
        ),
        (None, None) => format!(
            "server certificate fingerprint is {presented} and no trust is configured; set [pve] fingerprint"
        ),
    }
}

/// Build the rustls client configuration (ring, HTTP/1.1 ALPN) around a [`PinningVerifier`].
pub fn client_config(
    pin: Option<[u8; 32]>,
    ca_pem: Option<&[u8]>,
    presented: PresentedFingerprint,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinningVerifier::new(&provider, pin, ca_pem, presented)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9";

    #[test]
    fn parse_colon_form_and_format_back() {
        let fp = parse_fingerprint(FP).unwrap();
        assert_eq!(fp[0], 0x0A);
        assert_eq!(fp[31], 0xF9);
        assert_eq!(format_fingerprint(&fp), FP);
    }

    #[test]
    fn parse_lower_case_and_plain_hex() {
        let a = parse_fingerprint(&FP.to_lowercase()).unwrap();
        let b = parse_fingerprint(&FP.replace(':', "")).unwrap();
        let c = parse_fingerprint(&format!("  {}\n", FP.replace(':', "").to_lowercase())).unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(format_fingerprint(&a), FP);
    }

    #[test]
    fn parse_rejects_bad_input() {
        for bad in [
            "",
            "AA:BB",
            &FP[3..],                               // 31 pairs
            &format!("{FP}:00"),                    // 33 pairs
            &FP.replace("0A:1B", "0A1:B"),          // misplaced colon
            &FP.replace(':', "").replace('A', "G"), // non-hex
            &FP.replace(':', "")[1..],              // 63 digits
            &FP.replace(':', "-"),
        ] {
            let e = parse_fingerprint(bad).unwrap_err();
            assert!(e.starts_with("invalid fingerprint"), "{bad:?} -> {e}");
        }
    }

    #[test]
    fn messages() {
        let p = [0xAB; 32];
        let q = [0x01; 32];
        assert_eq!(
            rejection_message(&p, Some(&q), None),
            format!(
                "server certificate fingerprint is {}, expected {}; if the node certificate was renewed, update [pve] fingerprint",
                ["AB"; 32].join(":"),
                ["01"; 32].join(":")
            )
        );
        assert!(
            rejection_message(&p, None, Some("invalid peer certificate: UnknownIssuer"))
                .starts_with("server certificate is not trusted by the configured CA (invalid peer certificate: UnknownIssuer)")
        );
    }

    #[test]
    fn setup_requires_trust() {
        let e = client_config(None, None, PresentedFingerprint::default()).unwrap_err();
        assert_eq!(e, TlsSetupError::NoTrust);
        let e = client_config(None, Some(b"not pem"), PresentedFingerprint::default()).unwrap_err();
        assert_eq!(e, TlsSetupError::BadCa("no PEM certificate found".into()));
        let cfg = client_config(Some([0; 32]), None, PresentedFingerprint::default()).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
