//! Certificate facts for operators: serial, validity and SANs of a certificate, as the admin
//! `/certs` endpoint and the `server.days_until_first_cert_expiring` gauge report them.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use crate::error::CertError;
use crate::pem::certs_from_pem;
use crate::spiffe::SpiffeId;

const SECONDS_PER_DAY: i64 = 24 * 60 * 60;

/// What one X.509 certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    serial: String,
    subject: String,
    issuer: String,
    not_before: SystemTime,
    not_after: SystemTime,
    is_ca: bool,
    uri_sans: Vec<String>,
    dns_sans: Vec<String>,
    email_sans: Vec<String>,
    ip_sans: Vec<IpAddr>,
    key_kind: Option<&'static str>,
}

/// The TLS 1.3 signature scheme a key of this certificate signs with, in BoringSSL's spelling
/// (what Envoy's `ssl.sigalgs.<name>` stats use): from the SPKI algorithm and EC curve.
fn signature_scheme(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<&'static str> {
    use x509_parser::oid_registry as oids;
    let spki = &cert.tbs_certificate.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())?;
        if curve == oids::OID_EC_P256 {
            Some("ecdsa_secp256r1_sha256")
        } else if curve == oids::OID_NIST_EC_P384 {
            Some("ecdsa_secp384r1_sha384")
        } else {
            None
        }
    } else if *alg == oids::OID_SIG_ED25519 {
        Some("ed25519")
    } else if *alg == oids::OID_PKCS1_RSAENCRYPTION {
        Some("rsa_pss_rsae_sha256")
    } else {
        None
    }
}

impl CertInfo {
    /// Parses one DER certificate. `origin` and `index` only name it in errors.
    pub fn parse(origin: &str, index: usize, der: &CertificateDer<'_>) -> Result<Self, CertError> {
        let bad = |reason: String| CertError::Certificate {
            origin: origin.to_string(),
            index,
            reason,
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| bad(e.to_string()))?;
        let mut info = CertInfo {
            serial: serial_hex(cert.raw_serial()),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: to_system_time(cert.validity().not_before.timestamp()),
            not_after: to_system_time(cert.validity().not_after.timestamp()),
            is_ca: cert.is_ca(),
            uri_sans: Vec::new(),
            dns_sans: Vec::new(),
            email_sans: Vec::new(),
            ip_sans: Vec::new(),
            key_kind: signature_scheme(&cert),
        };
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| bad(format!("subjectAltName: {e}")))?;
        for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::URI(uri) => info.uri_sans.push(uri.to_string()),
                GeneralName::DNSName(dns) => info.dns_sans.push(dns.to_string()),
                GeneralName::RFC822Name(email) => info.email_sans.push(email.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        info.ip_sans.push(ip);
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// The TLS 1.3 signature scheme this certificate's key signs with (`ecdsa_secp256r1_sha256`,
    /// `ed25519`, `rsa_pss_rsae_sha256`), when known.
    pub fn signature_scheme(&self) -> Option<&'static str> {
        self.key_kind
    }

    /// Parses every certificate of a PEM file's contents, in order.
    pub fn from_pem(origin: &str, pem: &[u8]) -> Result<Vec<Self>, CertError> {
        certs_from_pem(origin, pem)?
            .iter()
            .enumerate()
            .map(|(i, der)| Self::parse(origin, i, der))
            .collect()
    }

    /// The serial number in lowercase hex without separators or leading zero bytes, as Envoy's
    /// admin `/certs` prints it.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The subject distinguished name (RFC 4514 style, `CN=...`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The issuer distinguished name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the validity period.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether basicConstraints says this is a CA.
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// URI SANs in certificate order.
    pub fn uri_sans(&self) -> &[String] {
        &self.uri_sans
    }

    /// DNS SANs in certificate order.
    pub fn dns_sans(&self) -> &[String] {
        &self.dns_sans
    }

    /// Email (rfc822Name) SANs in certificate order.
    pub fn email_sans(&self) -> &[String] {
        &self.email_sans
    }

    /// IP address SANs in certificate order.
    pub fn ip_sans(&self) -> &[IpAddr] {
        &self.ip_sans
    }

    /// Whether the certificate has any SAN of a kind remora understands.
    pub fn has_sans(&self) -> bool {
        !(self.uri_sans.is_empty()
            && self.dns_sans.is_empty()
            && self.email_sans.is_empty()
            && self.ip_sans.is_empty())
    }

    /// The SPIFFE ID of an X.509-SVID: its only `spiffe://` URI SAN, if that parses.
    ///
    /// The SPIFFE X.509-SVID specification allows exactly one URI SAN; a certificate with two
    /// SPIFFE URIs has no identity rather than an arbitrary one.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        let mut spiffe = self.uri_sans.iter().filter(|u| u.starts_with("spiffe://"));
        match (spiffe.next(), spiffe.next()) {
            (Some(uri), None) => SpiffeId::parse(uri).ok(),
            _ => None,
        }
    }

    /// Seconds from `now` until `not_after`; negative once expired.
    pub fn seconds_until_expiry_at(&self, now: SystemTime) -> i64 {
        signed_seconds(self.not_after) - signed_seconds(now)
    }

    /// Seconds from now until `not_after`; negative once expired.
    pub fn seconds_until_expiry(&self) -> i64 {
        self.seconds_until_expiry_at(SystemTime::now())
    }

    /// Whole days from `now` until `not_after`, rounded down, and 0 once expired (Envoy's
    /// `days_until_expiration`).
    pub fn days_until_expiry_at(&self, now: SystemTime) -> u64 {
        u64::try_from(self.seconds_until_expiry_at(now) / SECONDS_PER_DAY).unwrap_or(0)
    }

    /// Whole days from now until `not_after`, rounded down, and 0 once expired.
    pub fn days_until_expiry(&self) -> u64 {
        self.days_until_expiry_at(SystemTime::now())
    }

    /// Whether `now` lies within the validity period.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

fn serial_hex(raw: &[u8]) -> String {
    // DER integers carry a 0x00 sign byte when the high bit is set; it is not part of the number.
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02x}")).collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

fn signed_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_drop_the_sign_byte_and_print_lowercase() {
        assert_eq!(serial_hex(&[0x00, 0xAB, 0x01]), "ab01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x7f, 0x00]), "7f00");
    }

    #[test]
    fn times_before_the_epoch_survive() {
        assert_eq!(signed_seconds(to_system_time(-5)), -5);
        assert_eq!(signed_seconds(to_system_time(1_700_000_000)), 1_700_000_000);
    }
}
