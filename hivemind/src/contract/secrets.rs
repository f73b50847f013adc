//! /api/security/secrets: values go in, only metadata ever comes out.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::ValidationError;

/// A secret's value as a request carries it: text (`value`) or any bytes
/// (`value_base64`), exactly one of the two.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// The value as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value's bytes in standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl std::fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretInput(<hidden>)")
    }
}

impl SecretInput {
    /// The value's bytes; the error names the field at fault.
    pub fn bytes(&self) -> Result<Vec<u8>, ValidationError> {
        use base64::Engine as _;
        match (&self.value, &self.value_base64) {
            (Some(text), None) => Ok(text.as_bytes().to_vec()),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| ValidationError::new("value_base64", "is not standard base64")),
            _ => Err(ValidationError::new(
                "value",
                "give exactly one of value and value_base64",
            )),
        }
    }

    /// Any bytes, as `value_base64`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        use base64::Engine as _;
        Self {
            value: None,
            value_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }
}

/// The body of `POST /api/security/secrets`: a name and a value as in
/// [`SecretInput`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// Lowercase letters, digits and '-', starting with a letter, at most 40.
    pub name: String,
    /// The value as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value's bytes in standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl std::fmt::Debug for CreateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreateSecret({}, <hidden>)", self.name)
    }
}

impl CreateSecret {
    pub fn new(name: &str, input: SecretInput) -> Self {
        Self {
            name: name.to_string(),
            value: input.value,
            value_base64: input.value_base64,
        }
    }

    pub fn input(&self) -> SecretInput {
        SecretInput {
            value: self.value.clone(),
            value_base64: self.value_base64.clone(),
        }
    }
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    pub name: String,
    /// 1 at creation, one more at each rotation.
    pub version: u32,
    /// Bytes of the value.
    pub size: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// Apps that use it (as files or variables).
    pub used_by: Vec<String>,
}

/// Answer of creating or rotating a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretAnswer {
    pub success: bool,
    pub name: String,
    pub version: u32,
    pub message: String,
}

/// A certificate for the HTTPS ingress (`security tls add`): PEM text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTlsCert {
    /// The domain it serves (an app's `--service`), or `*.example.com`.
    pub domain: String,
    /// The certificate chain, PEM, leaf first.
    pub cert: String,
    /// The leaf's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

impl std::fmt::Debug for AddTlsCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddTlsCert")
            .field("domain", &self.domain)
            .field("key", &"<hidden>")
            .finish_non_exhaustive()
    }
}

/// A stored certificate: never its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TlsCertView {
    pub domain: String,
    /// The DNS names the certificate holds.
    pub names: Vec<String>,
    pub issuer: String,
    /// Validity, seconds since the epoch.
    pub not_before: u64,
    pub not_after: u64,
    /// SHA-256 of the leaf certificate (DER), hex.
    pub fingerprint: String,
    /// Apps whose `--service` domain it covers.
    pub serves: Vec<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Answer of adding a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TlsCertAnswer {
    pub success: bool,
    pub message: String,
    pub certificate: TlsCertView,
}
