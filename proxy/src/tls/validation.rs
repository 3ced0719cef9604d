//! TLS, peer validation: an Envoy `CertificateValidationContext` → the trust bundles and SAN
//! matchers a verifier checks the peer's certificate against.
//!
//! Everything that would loosen or change verification and is not implemented (CRLs, SPKI or
//! hash pinning, `ACCEPT_UNTRUSTED`, custom validators other than SPIFFE, ...) is an error naming
//! its path: a proxy that silently verified less than configured would be a security hole.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    certificate_validation_context::TrustChainVerification, subject_alt_name_matcher,
    CertificateValidationContext, SpiffeCertValidatorConfig, SubjectAltNameMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use remora_certs::{
    CertInfo, SanMatcher, SanType, StringMatcher as SanString, TrustBundle, TrustBundleSet,
    TrustDomain,
};

use crate::config::parse::{any_type_name, unpack_any, ParseOptions};
use crate::config::{ConfigError, ConfigErrors, Path};
use crate::secrets::source::{read, Data};

const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";

/// What a peer certificate is checked against.
#[derive(Debug, Clone)]
pub struct Validation {
    pub bundles: TrustBundleSet,
    /// Empty: any certificate that chains to a trusted root.
    pub matchers: Vec<SanMatcher>,
    /// The trusted roots, for expiry reporting.
    pub roots: Vec<CertInfo>,
}

/// Translates a validation context, reading `trusted_ca`. `None`: the context asks for no
/// verification at all (no trusted CA, no matchers), which Envoy allows.
pub fn build(
    v: &CertificateValidationContext,
    path: &Path,
) -> Result<Option<Validation>, ConfigErrors> {
    let trusted = v
        .trusted_ca
        .as_ref()
        .map(|ds| read(ds, &path.field("trusted_ca")))
        .transpose()?;
    build_with(v, path, trusted.as_ref())
}

/// [`build`] with `trusted_ca` already read.
#[allow(deprecated)]
pub fn build_with(
    v: &CertificateValidationContext,
    path: &Path,
    trusted: Option<&Data>,
) -> Result<Option<Validation>, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    unsupported(v, path, &mut errs);

    let mut matchers = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        if let Some(m) = typed_matcher(
            m,
            &path.field("match_typed_subject_alt_names").index(i),
            &mut errs,
        ) {
            matchers.push(m);
        }
    }
    // The deprecated untyped matchers compare against every SAN kind, as Envoy does.
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        let p = path.field("match_subject_alt_names").index(i);
        if let Some(sm) = string_matcher(m, &p, &mut errs) {
            for t in [
                SanType::Dns,
                SanType::Uri,
                SanType::Email,
                SanType::IpAddress,
            ] {
                matchers.push(SanMatcher::typed(t, sm.clone()));
            }
        }
    }

    let mut bundles = TrustBundleSet::new();
    let mut roots = Vec::new();
    if let Some(data) = trusted {
        match TrustBundle::from_pem(&data.origin, &data.bytes) {
            Ok(b) => {
                collect_roots(&b, &mut roots);
                bundles = bundles.with_default(b);
            }
            Err(e) => errs.push(path.field("trusted_ca"), e.to_string()),
        }
    }
    if let Some(custom) = &v.custom_validator_config {
        let cpath = path.field("custom_validator_config");
        let kind = custom
            .typed_config
            .as_ref()
            .map(any_type_name)
            .unwrap_or_default();
        if custom.name != SPIFFE_VALIDATOR
            && kind != "envoy.extensions.transport_sockets.tls.v3.SpiffeCertValidatorConfig"
        {
            errs.push(
                &cpath,
                format!(
                    "certificate validator \"{}\" is not supported (only {SPIFFE_VALIDATOR})",
                    custom.name
                ),
            );
        } else if trusted.is_some() {
            errs.push(path.field("trusted_ca"), "trusted_ca cannot be combined with the SPIFFE certificate validator; give each trust domain its trust_bundle");
        } else {
            match custom
                .typed_config
                .as_ref()
                .map(|a| unpack_any::<SpiffeCertValidatorConfig>(a, ParseOptions::default()))
            {
                Some(Ok(cfg)) => spiffe_bundles(
                    &cfg,
                    &cpath.field("typed_config"),
                    &mut bundles,
                    &mut roots,
                    &mut errs,
                ),
                Some(Err(e)) => errs.push(cpath.field(&e.path), e.message),
                None => errs.push(
                    cpath.field("typed_config"),
                    "the SPIFFE validator needs a typed_config",
                ),
            }
        }
    }
    if bundles.is_empty() && !matchers.is_empty() {
        errs.push(path, "SAN-based verification of peer certificates without trusted CA is insecure and not allowed");
    }
    errs.finish(())?;
    if bundles.is_empty() {
        return Ok(None);
    }
    Ok(Some(Validation {
        bundles,
        matchers,
        roots,
    }))
}

fn collect_roots(b: &TrustBundle, roots: &mut Vec<CertInfo>) {
    if let Ok(infos) = b.cert_infos() {
        roots.extend(infos);
    }
}

fn spiffe_bundles(
    cfg: &SpiffeCertValidatorConfig,
    path: &Path,
    bundles: &mut TrustBundleSet,
    roots: &mut Vec<CertInfo>,
    errs: &mut ConfigErrors,
) {
    if cfg.trust_bundles.is_some() {
        errs.push(
            path.field("trust_bundles"),
            "SPIFFE trust bundle maps are not supported; list trust_domains",
        );
    }
    for (i, td) in cfg.trust_domains.iter().enumerate() {
        let p = path.field("trust_domains").index(i);
        let domain = match TrustDomain::new(&td.name) {
            Ok(d) => d,
            Err(e) => {
                errs.push(p.field("name"), e.to_string());
                continue;
            }
        };
        let Some(ds) = &td.trust_bundle else {
            errs.push(p.field("trust_bundle"), "a trust_bundle is required");
            continue;
        };
        let bundle = read(ds, &p.field("trust_bundle"))
            .map_err(ConfigErrors::from)
            .and_then(|d| {
                TrustBundle::from_pem(&d.origin, &d.bytes)
                    .map_err(|e| ConfigError::new(p.field("trust_bundle"), e.to_string()).into())
            });
        match bundle {
            Ok(b) => {
                collect_roots(&b, roots);
                bundles.insert(domain, b);
            }
            Err(e) => errs.extend(e),
        }
    }
}

fn unsupported(v: &CertificateValidationContext, path: &Path, errs: &mut ConfigErrors) {
    let mut reject = |cond: bool, field: &str, what: &str| {
        if cond {
            errs.push(path.field(field), format!("{what} is not supported"));
        }
    };
    reject(
        v.ca_certificate_provider_instance.is_some(),
        "ca_certificate_provider_instance",
        "a CA certificate provider",
    );
    reject(
        v.system_root_certs.is_some(),
        "system_root_certs",
        "trusting the system root certificates",
    );
    reject(
        !v.verify_certificate_spki.is_empty(),
        "verify_certificate_spki",
        "SPKI pinning",
    );
    reject(
        !v.verify_certificate_hash.is_empty(),
        "verify_certificate_hash",
        "certificate hash pinning",
    );
    reject(
        v.require_signed_certificate_timestamp
            .is_some_and(|b| b.value),
        "require_signed_certificate_timestamp",
        "requiring signed certificate timestamps",
    );
    reject(v.crl.is_some(), "crl", "a certificate revocation list");
    reject(
        v.allow_expired_certificate,
        "allow_expired_certificate",
        "accepting expired certificates",
    );
    reject(
        v.max_verify_depth.is_some(),
        "max_verify_depth",
        "limiting the verification depth",
    );
    if v.trust_chain_verification == TrustChainVerification::AcceptUntrusted as i32 {
        errs.push(
            path.field("trust_chain_verification"),
            "ACCEPT_UNTRUSTED is not supported: peers are always verified against the trusted CA",
        );
    }
    if v.suppress_client_ca_list {
        tracing::warn!(path = %path.field("suppress_client_ca_list"), "the client CA list is still sent");
    }
}

fn typed_matcher(
    m: &SubjectAltNameMatcher,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<SanMatcher> {
    use subject_alt_name_matcher::SanType as T;
    let san_type = match T::try_from(m.san_type) {
        Ok(T::Dns) => SanType::Dns,
        Ok(T::Uri) => SanType::Uri,
        Ok(T::Email) => SanType::Email,
        Ok(T::IpAddress) => SanType::IpAddress,
        Ok(T::OtherName) => {
            errs.push(
                path.field("san_type"),
                "OTHER_NAME SAN matchers are not supported",
            );
            return None;
        }
        Ok(T::Unspecified) | Err(_) => {
            errs.push(
                path.field("san_type"),
                "a san_type (DNS, URI, EMAIL or IP_ADDRESS) is required",
            );
            return None;
        }
    };
    let Some(sm) = &m.matcher else {
        errs.push(path.field("matcher"), "a matcher is required");
        return None;
    };
    string_matcher(sm, &path.field("matcher"), errs).map(|s| SanMatcher::typed(san_type, s))
}

/// Envoy's `type.matcher.v3.StringMatcher` as the certs crate's matcher.
pub fn string_matcher(
    m: &StringMatcher,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<SanString> {
    let built = match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => SanString::exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => SanString::prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => SanString::suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => SanString::contains(s.clone()),
        Some(MatchPattern::SafeRegex(r)) => match SanString::safe_regex(&r.regex) {
            Ok(s) => s,
            Err(e) => {
                errs.push(path.field("safe_regex").field("regex"), e.to_string());
                return None;
            }
        },
        Some(MatchPattern::Custom(_)) => {
            errs.push(
                path.field("custom"),
                "custom string matchers are not supported",
            );
            return None;
        }
        None => {
            errs.push(
                path,
                "a match pattern (exact, prefix, suffix, contains, safe_regex) is required",
            );
            return None;
        }
    };
    Some(built.ignore_case(m.ignore_case))
}
