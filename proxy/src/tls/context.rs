//! TLS, context: Envoy's `CommonTlsContext` → the certificate, validation and parameters a server
//! or client context is built from, with secrets referenced through the [`SecretStore`].

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, CertificateValidationContext, CommonTlsContext,
};

use super::params::{self, Params, Side};
use super::validation::{self, Validation};
use crate::config::parse::merge;
use crate::config::{ConfigErrors, Path};
use crate::secrets::source::{load_certificate, read};
use crate::secrets::{LoadedCert, SecretEntry, SecretSource, SecretStore, SecretValue};

/// Where the peer validation comes from.
#[derive(Debug)]
pub enum ValidationRef {
    /// An inline `validation_context`.
    Fixed(Validation),
    /// `validation_context_sds_secret_config`, or `combined_validation_context` (the secret merged
    /// over `default`, as Envoy merges them).
    Secret {
        default: Option<Box<CertificateValidationContext>>,
        entry: Arc<SecretEntry>,
        path: String,
    },
}

/// Why a context cannot be built yet.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("secret \"{0}\" is not available yet")]
    Missing(String),
    #[error("secret \"{name}\" does not hold a {expected}")]
    WrongKind {
        name: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

impl ValidationRef {
    /// The validation to apply now (`Ok(None)`: the context verifies nothing).
    pub fn current(&self) -> Result<Option<Validation>, NotReady> {
        match self {
            ValidationRef::Fixed(v) => Ok(Some(v.clone())),
            ValidationRef::Secret {
                default,
                entry,
                path,
            } => {
                let value = entry
                    .current()
                    .ok_or_else(|| NotReady::Missing(entry.name().to_string()))?;
                let SecretValue::Validation(v) = value.as_ref() else {
                    return Err(NotReady::WrongKind {
                        name: entry.name().to_string(),
                        expected: "validation_context",
                    });
                };
                let merged = match default {
                    Some(d) => {
                        merge(d.as_ref(), &v.proto).map_err(|e| NotReady::Invalid(e.to_string()))?
                    }
                    None => v.proto.clone(),
                };
                validation::build(&merged, &Path::root(path))
                    .map_err(|e| NotReady::Invalid(e.to_string()))
            }
        }
    }
}

/// The certificate entry's current value.
pub fn current_cert(entry: &SecretEntry) -> Result<Arc<LoadedCert>, NotReady> {
    let value = entry
        .current()
        .ok_or_else(|| NotReady::Missing(entry.name().to_string()))?;
    match value.as_ref() {
        SecretValue::TlsCertificate(c) => Ok(c.clone()),
        SecretValue::Validation(_) => Err(NotReady::WrongKind {
            name: entry.name().to_string(),
            expected: "tls_certificate",
        }),
    }
}

/// What both sides take from `common_tls_context`.
#[derive(Debug)]
pub struct Common {
    pub cert: Option<Arc<SecretEntry>>,
    pub validation: Option<ValidationRef>,
    pub alpn: Vec<Vec<u8>>,
    pub params: Params,
}

impl Common {
    /// Whether a secret comes from an SDS file. Envoy reads a bootstrap's SDS files only once
    /// every configured context exists, so each context counts the first load as an
    /// `ssl_context_update_by_sds`; remora has read them by the time the context is built, and
    /// counts that load when the context binds its stats. (A context added later by LDS or CDS
    /// over an already loaded file counts it too, where Envoy's does not.)
    pub fn uses_sds_file(&self) -> bool {
        let from_file = |e: &SecretEntry| matches!(e.key().source, SecretSource::File(_));
        self.cert.as_deref().is_some_and(from_file)
            || matches!(&self.validation, Some(ValidationRef::Secret { entry, .. }) if from_file(entry))
    }
}

/// Translates `common_tls_context` (`path` points at it).
#[allow(deprecated)]
pub fn build_common(
    c: &CommonTlsContext,
    side: Side,
    path: &Path,
    secrets: &SecretStore,
    errs: &mut ConfigErrors,
) -> Common {
    let params = params::build(c.tls_params.as_ref(), side, &path.field("tls_params"), errs);
    let mut reject = |cond: bool, field: &str, what: &str| {
        if cond {
            errs.push(path.field(field), format!("{what} is not supported"));
        }
    };
    reject(
        c.tls_certificate_provider_instance.is_some(),
        "tls_certificate_provider_instance",
        "a certificate provider",
    );
    reject(
        c.tls_certificate_certificate_provider.is_some(),
        "tls_certificate_certificate_provider",
        "a certificate provider",
    );
    reject(
        c.tls_certificate_certificate_provider_instance.is_some(),
        "tls_certificate_certificate_provider_instance",
        "a certificate provider",
    );
    reject(
        c.custom_tls_certificate_selector.is_some(),
        "custom_tls_certificate_selector",
        "a custom certificate selector",
    );
    reject(
        c.custom_handshaker.is_some(),
        "custom_handshaker",
        "a custom handshaker",
    );
    if c.key_log.is_some() {
        tracing::warn!(path = %path.field("key_log"), "TLS key logging is not supported; no keys are logged");
    }

    let mut certs = Vec::new();
    for (i, tc) in c.tls_certificates.iter().enumerate() {
        match load_certificate(tc, &path.field("tls_certificates").index(i)) {
            Ok(loaded) => certs.push(secrets.fixed(SecretValue::TlsCertificate(Arc::new(loaded)))),
            Err(e) => errs.extend(e),
        }
    }
    for (i, sds) in c.tls_certificate_sds_secret_configs.iter().enumerate() {
        match secrets.resolve(
            sds,
            &path.field("tls_certificate_sds_secret_configs").index(i),
        ) {
            Ok(entry) => certs.push(entry),
            Err(e) => errs.extend(e),
        }
    }
    if certs.len() > 1 {
        errs.push(path.field("tls_certificates"), "only one certificate per context is supported (tls_certificates and tls_certificate_sds_secret_configs together)");
    }

    let vpath = |f: &str| path.field(f);
    let validation = match &c.validation_context_type {
        None => None,
        Some(ValidationContextType::ValidationContext(v)) => {
            match validation::build(v, &vpath("validation_context")) {
                Ok(v) => v.map(ValidationRef::Fixed),
                Err(e) => {
                    errs.extend(e);
                    None
                }
            }
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
            let p = vpath("validation_context_sds_secret_config");
            match secrets.resolve(sds, &p) {
                Ok(entry) => Some(ValidationRef::Secret {
                    default: None,
                    entry,
                    path: p.to_string(),
                }),
                Err(e) => {
                    errs.extend(e);
                    None
                }
            }
        }
        Some(ValidationContextType::CombinedValidationContext(cv)) => {
            let p = vpath("combined_validation_context");
            if cv.validation_context_certificate_provider.is_some()
                || cv
                    .validation_context_certificate_provider_instance
                    .is_some()
            {
                errs.push(&p, "validation certificate providers are not supported");
            }
            let default = cv
                .default_validation_context
                .as_ref()
                .and_then(|d| inline_trusted_ca(d, &p.field("default_validation_context"), errs))
                .map(Box::new);
            match &cv.validation_context_sds_secret_config {
                Some(sds) => {
                    match secrets.resolve(sds, &p.field("validation_context_sds_secret_config")) {
                        Ok(entry) => Some(ValidationRef::Secret {
                            default,
                            entry,
                            path: p.to_string(),
                        }),
                        Err(e) => {
                            errs.extend(e);
                            None
                        }
                    }
                }
                None => {
                    errs.push(
                        p.field("validation_context_sds_secret_config"),
                        "a validation_context_sds_secret_config is required",
                    );
                    None
                }
            }
        }
        Some(_) => {
            errs.push(path, "validation certificate providers are not supported");
            None
        }
    };

    Common {
        cert: certs.into_iter().next(),
        validation,
        alpn: c
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
        params,
    }
}

/// A default validation context with its `trusted_ca` file read now (the default is static).
fn inline_trusted_ca(
    d: &CertificateValidationContext,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<CertificateValidationContext> {
    let mut d = d.clone();
    if let Some(ds) = &d.trusted_ca {
        match read(ds, &path.field("trusted_ca")) {
            Ok(data) => {
                d.trusted_ca = Some(DataSource {
                    watched_directory: None,
                    specifier: Some(data_source::Specifier::InlineBytes(data.bytes)),
                })
            }
            Err(e) => {
                errs.0.push(e);
                return None;
            }
        }
    }
    Some(d)
}
