//! Webhook deliveries as Git hosts send them: the body signed with HMAC-SHA256 under a shared
//! key, in `X-Hub-Signature-256: sha256=<hex>` (GitHub, Gitea, Forgejo, Gogs) or
//! `X-Gitea-Signature: <hex>`; a push event names the ref it moved and its new commit.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The headers a signature may come in, in the order they are tried.
pub const SIGNATURE_HEADERS: [&str; 2] = ["x-hub-signature-256", "x-gitea-signature"];

/// Checks `signature` (a header's value) against the body, in constant time.
pub fn verify(key: &[u8], body: &[u8], signature: &str) -> Result<(), &'static str> {
    let hex_part = signature
        .strip_prefix("sha256=")
        .unwrap_or(signature)
        .trim();
    let tag = hex::decode(hex_part).map_err(|_| "the signature is not hex")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "the key is unusable")?;
    mac.update(body);
    mac.verify_slice(&tag)
        .map_err(|_| "the signature does not match the body under the pipeline's webhook key")
}

/// The signature of `body` as a Git host writes it (`sha256=<hex>`).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A push to `branch`, with the new commit when the body names it.
    Push {
        branch: String,
        commit: Option<String>,
    },
    /// Anything else: a ping, a tag, another event.
    Other,
}

/// Reads a delivery's JSON body: a push has `ref: refs/heads/<branch>` and `after` (the new
/// commit; all zeros when the branch was deleted, which is not a push to build).
pub fn parse(body: &[u8]) -> Result<Delivery, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Some(reference) = value.get("ref").and_then(|r| r.as_str()) else {
        return Ok(Delivery::Other);
    };
    let Some(branch) = reference.strip_prefix("refs/heads/") else {
        return Ok(Delivery::Other);
    };
    let commit = value
        .get("after")
        .and_then(|a| a.as_str())
        .filter(|c| super::git::is_commit(c))
        .map(str::to_string);
    if commit
        .as_deref()
        .is_some_and(|c| c.bytes().all(|b| b == b'0'))
    {
        return Ok(Delivery::Other);
    }
    Ok(Delivery::Push {
        branch: branch.to_string(),
        commit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_body_and_key() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let signature = sign(b"key", body);
        assert!(verify(b"key", body, &signature).is_ok());
        // Gitea's header has no prefix.
        assert!(verify(b"key", body, signature.trim_start_matches("sha256=")).is_ok());
        assert!(verify(b"other", body, &signature).is_err());
        assert!(verify(b"key", b"{}", &signature).is_err());
        assert!(verify(b"key", body, "sha256=zz").is_err());
        // The RFC 4231 test case 2 vector.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pushes_name_their_branch_and_commit() {
        let commit = "a".repeat(40);
        let push = format!(r#"{{"ref":"refs/heads/main","after":"{commit}"}}"#);
        assert_eq!(
            parse(push.as_bytes()).unwrap(),
            Delivery::Push {
                branch: "main".into(),
                commit: Some(commit)
            }
        );
        let deleted = format!(
            r#"{{"ref":"refs/heads/main","after":"{}"}}"#,
            "0".repeat(40)
        );
        assert_eq!(parse(deleted.as_bytes()).unwrap(), Delivery::Other);
        assert_eq!(parse(br#"{"zen":"hi"}"#).unwrap(), Delivery::Other);
        assert_eq!(
            parse(br#"{"ref":"refs/tags/v1"}"#).unwrap(),
            Delivery::Other
        );
        assert!(parse(b"not json").is_err());
    }
}
