//! Image references in Docker's rules: `busybox` is
//! `docker.io/library/busybox:latest`, a first component with a dot, a colon
//! or equal to `localhost` names a registry, `@sha256:...` pins a digest.

use std::fmt;

use super::ImageError;

/// The registry every unqualified name lives in.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `ghcr.io`...
    pub registry: String,
    /// `library/busybox`, `hm/test-app`...
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(invalid("reference is empty"));
        }
        if input.chars().any(char::is_whitespace) {
            return Err(invalid("reference must not contain whitespace"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|reason| invalid(&reason))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // The tag is after the last colon of the last path component.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|reason| invalid(&reason))?;
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                validate_registry(first).map_err(|reason| invalid(&reason))?;
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        validate_repository(&repository).map_err(|reason| invalid(&reason))?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        let reference = Self {
            registry,
            repository,
            tag,
            digest,
        };
        if reference.name().len() > MAX_NAME_LEN {
            return Err(invalid("repository name must be at most 255 characters"));
        }
        Ok(reference)
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest when
    /// pinned, else the tag.
    pub fn object(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest,
            (None, Some(tag)) => tag,
            (None, None) => "latest",
        }
    }

    /// Host (and port) of the registry's HTTP API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Normalizes `input` in Docker's rules, e.g. `busybox` to
/// `docker.io/library/busybox:latest`.
pub fn normalize_reference(input: &str) -> Result<String, ImageError> {
    Reference::parse(input).map(|r| r.to_string())
}

/// Checks a `sha256:<64 lowercase hex>` digest.
pub fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest \"{digest}\" must look like sha256:<64 hex digits>"
        ));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm \"{algorithm}\" is not supported, only sha256"
        ));
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest \"{digest}\" must have 64 lowercase hex digits after sha256:"
        ));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-';
    let first_ok = tag
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if tag.is_empty() || tag.len() > 128 || !first_ok || !tag.chars().all(valid_char) {
        return Err(format!(
            "tag \"{tag}\" must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // [ipv6]:port
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("registry \"{registry}\" has an unclosed '['"));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "registry \"{registry}\" is not a valid IPv6 address"
            ));
        }
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return Err(format!("registry \"{registry}\" is malformed")),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!(
            "registry port \"{port}\" must be a number up to 65535"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !host.is_empty() && !host.split('.').all(label_ok) {
        return Err(format!(
            "registry host \"{host}\" must be a hostname or an IP address"
        ));
    }
    Ok(())
}

fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("repository name is empty".to_string());
    }
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository must be lowercase".to_string());
    }
    for component in repository.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "path component \"{component}\" must be lowercase letters and digits, separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_docker_names() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("index.docker.io/user/app", "docker.io/user/app:latest"),
            ("localhost/a", "localhost/a:latest"),
            ("localhost:5000/a/b:1", "localhost:5000/a/b:1"),
            ("127.0.0.1:5000/hm/x", "127.0.0.1:5000/hm/x:latest"),
            ("[::1]:5000/hm/x:2", "[::1]:5000/hm/x:2"),
            ("ghcr.io/o/r/deep/path:t", "ghcr.io/o/r/deep/path:t"),
            (
                "my-app_x.y__z---w",
                "docker.io/library/my-app_x.y__z---w:latest",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_reference(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.object(), D);
        let r = Reference::parse(&format!("localhost:5000/a:1@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("localhost:5000/a:1@{D}"));
        assert_eq!(r.object(), D);
        assert_eq!(r.tag.as_deref(), Some("1"));
    }

    #[test]
    fn rejects_with_clear_messages() {
        let cases = [
            ("FOO", "repository must be lowercase"),
            ("", "empty"),
            ("busybox:", "tag \"\""),
            ("busybox:-x", "tag"),
            ("busy box", "whitespace"),
            ("a//b", "path component \"\""),
            ("a/-b", "path component"),
            ("busybox@sha256:abc", "64 lowercase hex"),
            ("busybox@md5:abc", "only sha256"),
            ("localhost:99999/a", "port"),
            ("exa_mple.com/a", "registry host"),
        ];
        for (input, want) in cases {
            let err = normalize_reference(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(
                err.starts_with(&format!("invalid image reference \"{input}\"")),
                "{err}"
            );
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(normalize_reference(&long).is_err());
    }

    #[test]
    fn api_host() {
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            DOCKER_HUB_API
        );
        assert_eq!(
            Reference::parse("localhost:5000/a").unwrap().api_host(),
            "localhost:5000"
        );
    }
}
