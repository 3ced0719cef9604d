//! Secrets, loading: Envoy `DataSource`s read into bytes, and a `Secret` turned into what a TLS
//! context uses (a rustls `CertifiedKey`, or a validation context with its files read).

use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use remora_certs::{certified_key_from_pem, leaf_info, CertInfo};
use rustls::sign::CertifiedKey;

use crate::config::{ConfigError, ConfigErrors, Path};

/// The bytes of one `DataSource`, with where they came from.
#[derive(Debug, Clone)]
pub struct Data {
    pub bytes: Vec<u8>,
    /// A file path, or a label such as `inline` naming the config path, for error messages.
    pub origin: String,
    /// The file read, when the source is a `filename` (watched for rotation under SDS).
    pub file: Option<PathBuf>,
}

/// Reads a `DataSource` (`filename`, `inline_bytes`, `inline_string`, `environment_variable`).
pub fn read(ds: &DataSource, path: &Path) -> Result<Data, ConfigError> {
    match &ds.specifier {
        Some(data_source::Specifier::Filename(f)) => {
            let bytes = std::fs::read(f).map_err(|e| {
                ConfigError::new(path.field("filename"), format!("cannot read {f}: {e}"))
            })?;
            Ok(Data {
                bytes,
                origin: f.clone(),
                file: Some(PathBuf::from(f)),
            })
        }
        Some(data_source::Specifier::InlineBytes(b)) => Ok(Data {
            bytes: b.clone(),
            origin: path.field("inline_bytes").to_string(),
            file: None,
        }),
        Some(data_source::Specifier::InlineString(s)) => Ok(Data {
            bytes: s.as_bytes().to_vec(),
            origin: path.field("inline_string").to_string(),
            file: None,
        }),
        Some(data_source::Specifier::EnvironmentVariable(v)) => match std::env::var(v) {
            Ok(s) => Ok(Data {
                bytes: s.into_bytes(),
                origin: format!("environment variable {v}"),
                file: None,
            }),
            Err(_) => Err(ConfigError::new(
                path.field("environment_variable"),
                format!("environment variable {v} is not set"),
            )),
        },
        None => Err(ConfigError::new(path, "a data source needs one of filename, inline_bytes, inline_string or environment_variable")),
    }
}

/// A certificate chain and key, ready to present.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub leaf: CertInfo,
    /// Files the chain and key were read from.
    pub files: Vec<PathBuf>,
}

/// A validation context whose `DataSource`s have been read and inlined, so that merging it with a
/// `combined_validation_context` default and building verifiers never touch the filesystem again.
#[derive(Debug)]
pub struct LoadedValidation {
    pub proto: CertificateValidationContext,
    pub roots: Vec<CertInfo>,
    pub files: Vec<PathBuf>,
}

/// What a named secret holds once loaded.
#[derive(Debug, Clone)]
pub enum SecretValue {
    TlsCertificate(Arc<LoadedCert>),
    Validation(Arc<LoadedValidation>),
}

impl SecretValue {
    /// Files whose change means the secret must be read again.
    pub fn files(&self) -> &[PathBuf] {
        match self {
            SecretValue::TlsCertificate(c) => &c.files,
            SecretValue::Validation(v) => &v.files,
        }
    }

    /// Every certificate it holds (leaf, or trusted roots), for expiry reporting.
    pub fn cert_infos(&self) -> Vec<&CertInfo> {
        match self {
            SecretValue::TlsCertificate(c) => vec![&c.leaf],
            SecretValue::Validation(v) => v.roots.iter().collect(),
        }
    }
}

/// Loads a `Secret` (`path` names it). Only `tls_certificate` and `validation_context` secrets
/// are supported.
pub fn load_secret(s: &Secret, path: &Path) -> Result<SecretValue, ConfigErrors> {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => Ok(SecretValue::TlsCertificate(Arc::new(
            load_certificate(c, &path.field("tls_certificate"))?,
        ))),
        Some(secret::Type::ValidationContext(v)) => Ok(SecretValue::Validation(Arc::new(
            load_validation(v, &path.field("validation_context"))?,
        ))),
        Some(secret::Type::SessionTicketKeys(_)) => Err(ConfigError::new(
            path.field("session_ticket_keys"),
            "session ticket key secrets are not supported",
        )
        .into()),
        Some(secret::Type::GenericSecret(_)) => Err(ConfigError::new(
            path.field("generic_secret"),
            "generic secrets are not supported",
        )
        .into()),
        None => Err(ConfigError::new(
            path,
            format!(
                "secret \"{}\" has no tls_certificate or validation_context",
                s.name
            ),
        )
        .into()),
    }
}

/// Loads a `TlsCertificate`: chain and key from their data sources, checked to belong together.
pub fn load_certificate(c: &TlsCertificate, path: &Path) -> Result<LoadedCert, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    if c.private_key_provider.is_some() {
        errs.push(
            path.field("private_key_provider"),
            "private key providers are not supported",
        );
    }
    if c.pkcs12.is_some() {
        errs.push(
            path.field("pkcs12"),
            "PKCS#12 certificates are not supported; use certificate_chain and private_key",
        );
    }
    if c.password.is_some() {
        errs.push(
            path.field("password"),
            "encrypted private keys are not supported",
        );
    }
    if c.tls_params.is_some() {
        errs.push(
            path.field("tls_params"),
            "per-certificate tls_params are not supported",
        );
    }
    if !c.signed_certificate_timestamp.is_empty() {
        tracing::warn!(path = %path.field("signed_certificate_timestamp"), "signed certificate timestamps are not sent");
    }
    if c.ocsp_staple.is_some() {
        tracing::warn!(path = %path.field("ocsp_staple"), "OCSP staples are not sent");
    }
    let chain = match &c.certificate_chain {
        Some(ds) => read(ds, &path.field("certificate_chain"))
            .map_err(|e| errs.0.push(e))
            .ok(),
        None => {
            errs.push(
                path.field("certificate_chain"),
                "a certificate_chain is required",
            );
            None
        }
    };
    let key = match &c.private_key {
        Some(ds) => read(ds, &path.field("private_key"))
            .map_err(|e| errs.0.push(e))
            .ok(),
        None => {
            if c.private_key_provider.is_none() {
                errs.push(path.field("private_key"), "a private_key is required");
            }
            None
        }
    };
    let (Some(chain), Some(key)) = (chain, key) else {
        return Err(errs);
    };
    errs.finish(())?;
    let certified = certified_key_from_pem(&chain.origin, &chain.bytes, &key.origin, &key.bytes)
        .map_err(|e| ConfigError::new(path, e.to_string()))?;
    let leaf = leaf_info(&certified).map_err(|e| ConfigError::new(path, e.to_string()))?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        leaf,
        files: chain.file.into_iter().chain(key.file).collect(),
    })
}

/// Reads the data sources of a validation context and checks that it translates.
pub fn load_validation(
    v: &CertificateValidationContext,
    path: &Path,
) -> Result<LoadedValidation, ConfigErrors> {
    let mut proto = v.clone();
    let trusted = v
        .trusted_ca
        .as_ref()
        .map(|ds| read(ds, &path.field("trusted_ca")))
        .transpose()?;
    let built = crate::tls::validation::build_with(v, path, trusted.as_ref())?;
    let mut files = Vec::new();
    if let Some(data) = trusted {
        files.extend(data.file);
        proto.trusted_ca = Some(DataSource {
            watched_directory: None,
            specifier: Some(data_source::Specifier::InlineBytes(data.bytes)),
        });
    }
    let roots = built.map(|b| b.roots).unwrap_or_default();
    Ok(LoadedValidation {
        proto,
        roots,
        files,
    })
}
