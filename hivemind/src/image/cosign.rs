//! cosign signatures, verified offline: a signed image's registry holds, under the tag
//! `sha256-<hex of the image digest>.sig`, a manifest whose layers are "simple signing"
//! payloads (JSON naming the image digest), each with its ECDSA P-256 signature (base64 DER,
//! SHA-256) in the `dev.cosignproject.cosign/signature` annotation. A signature counts when a
//! trusted key verifies it and its payload names the image's digest.

use base64::Engine as _;

use super::manifest::parse_manifest;
use super::registry::Remote;
use super::{ImageError, Reference, normalize_reference};

/// The annotation holding a layer's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The DER prefix of an ECDSA P-256 SubjectPublicKeyInfo, before the 65-byte point.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// Most signatures read for one image.
const MAX_SIGNATURES: usize = 64;

/// One signature of an image, as its registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub payload: Vec<u8>,
    /// Base64 of the DER signature.
    pub signature: String,
}

/// The uncompressed point of an ECDSA P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`,
/// as `cosign generate-key-pair` writes `cosign.pub`), or why it is not one.
pub fn parse_public_key(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PUBLIC KEY-----")
        .collect();
    if body.is_empty() {
        return Err("no PEM \"PUBLIC KEY\" block (cosign.pub has one)".to_string());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the PEM block is not base64: {e}"))?;
    match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
        Some(point) if point.len() == 65 && point[0] == 4 => Ok(point.to_vec()),
        _ => Err("not an ECDSA P-256 public key (cosign's keys are)".to_string()),
    }
}

/// Checks one signature against the image digest and the trusted keys (name, point): the
/// name of the key that verifies it, or why none does.
pub fn verify(
    signature: &Signature,
    digest: &str,
    keys: &[(String, Vec<u8>)],
) -> Result<String, String> {
    let payload: serde_json::Value = serde_json::from_slice(&signature.payload)
        .map_err(|e| format!("the signed payload is not JSON: {e}"))?;
    let critical = &payload["critical"];
    if critical["type"] != "cosign container image signature" {
        return Err(format!(
            "the payload is not a cosign image signature (type {})",
            critical["type"]
        ));
    }
    let named = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if named != digest {
        return Err(format!("the payload signs {named:?}, not {digest}"));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature.signature.trim())
        .map_err(|e| format!("the signature is not base64: {e}"))?;
    for (name, point) in keys {
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            point,
        );
        if key.verify(&signature.payload, &der).is_ok() {
            return Ok(name.clone());
        }
    }
    Err("no trusted key verifies it".to_string())
}

/// Whether `name`'s tag is a cosign signature's (`sha256-<64 hex>.sig`).
pub fn is_signature_tag(name: &str) -> bool {
    let tag = name.rsplit_once(':').map_or("", |(_, tag)| tag);
    tag.strip_prefix("sha256-")
        .and_then(|t| t.strip_suffix(".sig"))
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The signatures in one signature manifest: each layer with the annotation, its payload read
/// by `read`.
async fn signatures_of<F, Fut>(
    manifest: &super::manifest::Manifest,
    read: F,
) -> Result<Vec<Signature>, ImageError>
where
    F: Fn(super::manifest::Descriptor) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, ImageError>>,
{
    let mut out = Vec::new();
    for layer in manifest.layers.iter().take(MAX_SIGNATURES) {
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        out.push(Signature {
            payload: read(layer.clone()).await?,
            signature: signature.clone(),
        });
    }
    Ok(out)
}

/// The cosign signatures of `digest` kept in containerd with the image (imported from an
/// archive with it): the image record `<repo>:sha256-<hex>.sig`.
pub async fn local(
    cd: &crate::containerd::Containerd,
    reference: &str,
    digest: &str,
) -> Result<Vec<Signature>, ImageError> {
    let parsed = Reference::parse(&normalize_reference(reference)?)?;
    let name = format!("{}:{}.sig", parsed.name(), digest.replace(':', "-"));
    let Some(target) = super::unpack::get_image(cd, &name).await? else {
        return Ok(Vec::new());
    };
    let Some(bytes) = super::content::read_document(cd, &target.digest).await? else {
        return Ok(Vec::new());
    };
    let manifest = parse_manifest(&target.digest, &bytes)?;
    let name = &name;
    signatures_of(&manifest, |layer| async move {
        super::content::read_document(cd, &layer.digest)
            .await?
            .map(|b| b.to_vec())
            .ok_or_else(|| ImageError::NotLocal {
                reference: format!("{name} (payload {})", layer.digest),
            })
    })
    .await
}

/// The cosign signatures of `digest` in the registry of `reference` (none when its `.sig`
/// tag does not exist).
pub async fn fetch(
    http: &reqwest::Client,
    insecure: &[String],
    reference: &str,
    digest: &str,
) -> Result<Vec<Signature>, ImageError> {
    let parsed = Reference::parse(&normalize_reference(reference)?)?;
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let sig_ref = Reference {
        tag: Some(tag.clone()),
        digest: None,
        ..parsed
    };
    let remote = Remote::new(http, &sig_ref, insecure);
    let fetched = match remote.manifest(&tag, None).await {
        Ok(fetched) => fetched,
        Err(ImageError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let manifest = parse_manifest(&fetched.digest, &fetched.data)?;
    let remote = &remote;
    signatures_of(&manifest, |layer| async move {
        Ok(remote.blob_bytes(&layer.digest, layer.size).await?.to_vec())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    fn key() -> EcdsaKeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn pem(key: &EcdsaKeyPair) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(key.public_key().as_ref());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }

    fn sign(key: &EcdsaKeyPair, digest: &str) -> Signature {
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "registry/app"},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"
            },
            "optional": null
        }))
        .unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signature = key.sign(&rng, &payload).unwrap();
        Signature {
            payload,
            signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        }
    }

    #[test]
    fn a_signature_counts_from_a_trusted_key_for_its_digest_only() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let (trusted, other) = (key(), key());
        let keys = vec![(
            "release".to_string(),
            parse_public_key(&pem(&trusted)).unwrap(),
        )];
        assert_eq!(
            verify(&sign(&trusted, &digest), &digest, &keys),
            Ok("release".into())
        );
        let error = verify(&sign(&other, &digest), &digest, &keys).unwrap_err();
        assert!(error.contains("no trusted key"), "{error}");
        let elsewhere = format!("sha256:{}", "b".repeat(64));
        let error = verify(&sign(&trusted, &elsewhere), &digest, &keys).unwrap_err();
        assert!(error.contains("not sha256:aaa"), "{error}");
        let mut tampered = sign(&trusted, &digest);
        tampered.payload.push(b' ');
        assert!(verify(&tampered, &digest, &keys).is_err());
        assert!(
            parse_public_key("nothing")
                .unwrap_err()
                .contains("PUBLIC KEY")
        );
        let hex = "a".repeat(64);
        assert!(is_signature_tag(&format!(
            "registry:5000/app:sha256-{hex}.sig"
        )));
        assert!(!is_signature_tag("registry:5000/app:1"));
        assert!(!is_signature_tag("registry:5000/app:sha256-abc.sig"));
        let rsa = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END PUBLIC KEY-----";
        assert!(parse_public_key(rsa).unwrap_err().contains("P-256"));
    }
}
