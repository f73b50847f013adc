//! Who may do what through the API: bearer tokens (random, stored hashed,
//! named, with a role or a policy and an optional expiry), the built-in roles
//! and custom policies that allow or deny verbs on kinds of resources by
//! name pattern (deny wins), and the permission each API route needs.
//!
//! Pure: the API's middleware looks tokens up in the replicated `tokens`
//! table and asks [`allows`] about each request.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::validation::ValidationError;

/// What a request does to a resource.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Read,
    /// Create, update, scale, restart, pull, import, join.
    Write,
    Delete,
}

/// The kinds of resources the API exposes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Apps,
    Containers,
    Logs,
    Services,
    Volumes,
    Policies,
    Images,
    Nodes,
    Metrics,
    Tokens,
    Audit,
    /// Secrets' metadata and values: nobody reads a value back.
    Secrets,
    /// The data plane's maps and policy traces (`hivemind debug`): admins only by default.
    Debug,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Apps,
        Kind::Containers,
        Kind::Logs,
        Kind::Services,
        Kind::Volumes,
        Kind::Policies,
        Kind::Images,
        Kind::Nodes,
        Kind::Metrics,
        Kind::Tokens,
        Kind::Audit,
        Kind::Secrets,
        Kind::Debug,
    ];
}

/// What one request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: Verb,
    pub kind: Kind,
    /// The resource's name when the request names one.
    pub name: Option<String>,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.verb {
            Verb::Read => "read",
            Verb::Write => "write",
            Verb::Delete => "delete",
        };
        write!(f, "{verb} {}", kind_name(self.kind))?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Apps => "apps",
        Kind::Containers => "containers",
        Kind::Logs => "logs",
        Kind::Services => "services",
        Kind::Volumes => "volumes",
        Kind::Policies => "policies",
        Kind::Images => "images",
        Kind::Nodes => "nodes",
        Kind::Metrics => "metrics",
        Kind::Tokens => "tokens",
        Kind::Audit => "audit",
        Kind::Secrets => "secrets",
        Kind::Debug => "debug",
    }
}

/// The built-in roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Apps (deploy, scale, restart, delete, logs), volumes, network
    /// policies, images and secrets (by name: no value is ever read back);
    /// reads everything but tokens and the audit log.
    Deployer,
    /// Reads everything but tokens and the audit log; environment values
    /// are hidden (secret values are never shown to anyone).
    Viewer,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "deployer" => Ok(Self::Deployer),
            "viewer" => Ok(Self::Viewer),
            other => Err(format!(
                "{other:?} is not a role: use admin, deployer or viewer"
            )),
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// One rule of a custom policy: `names` are patterns with `*` (any run of
/// characters); no names means every name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub effect: Effect,
    pub verbs: Vec<Verb>,
    pub kinds: Vec<Kind>,
    #[serde(default)]
    pub names: Vec<String>,
}

/// A named set of rules a token can carry instead of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclPolicy {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// Most rules in one policy, and most names in one rule.
pub const MAX_RULES: usize = 100;
pub const MAX_NAMES: usize = 100;

impl AclPolicy {
    pub fn validate(&self) -> Result<(), ValidationError> {
        crate::model::validate_name("name", &self.name)?;
        if self.rules.is_empty() || self.rules.len() > MAX_RULES {
            return Err(ValidationError::new(
                "rules",
                format!("give 1 to {MAX_RULES} rules"),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.verbs.is_empty() || rule.kinds.is_empty() {
                return Err(ValidationError::new(
                    format!("rules[{i}]"),
                    "a rule needs at least one verb and one kind",
                ));
            }
            if rule.names.len() > MAX_NAMES {
                return Err(ValidationError::new(
                    format!("rules[{i}].names"),
                    format!("at most {MAX_NAMES} names"),
                ));
            }
            for (j, name) in rule.names.iter().enumerate() {
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*'
                    });
                if !ok {
                    return Err(ValidationError::new(
                        format!("rules[{i}].names[{j}]"),
                        format!(
                            "{name:?} is not a name pattern: lowercase letters, digits, '-' and '*'"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `pattern` (with `*` wildcards) matches `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().unwrap_or((&"", &[]));
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

impl Rule {
    fn applies(&self, permission: &Permission) -> bool {
        self.verbs.contains(&permission.verb)
            && self.kinds.contains(&permission.kind)
            && (self.names.is_empty()
                || permission
                    .name
                    .as_deref()
                    .is_some_and(|name| self.names.iter().any(|p| matches(p, name))))
    }
}

/// What a token grants: a role, or a policy's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Role(Role),
    Policy(AclPolicy),
}

/// Whether `grant` allows `permission`. Policies: some rule must allow it
/// and no rule may deny it.
pub fn allows(grant: &Grant, permission: &Permission) -> bool {
    match grant {
        Grant::Role(Role::Admin) => true,
        Grant::Role(Role::Deployer) => match permission.verb {
            Verb::Read => !matches!(permission.kind, Kind::Tokens | Kind::Audit | Kind::Debug),
            Verb::Write | Verb::Delete => matches!(
                permission.kind,
                Kind::Apps | Kind::Volumes | Kind::Policies | Kind::Images | Kind::Secrets
            ),
        },
        Grant::Role(Role::Viewer) => {
            permission.verb == Verb::Read
                && !matches!(permission.kind, Kind::Tokens | Kind::Audit | Kind::Debug)
        }
        Grant::Policy(policy) => {
            let applying = policy.rules.iter().filter(|r| r.applies(permission));
            let mut allowed = false;
            for rule in applying {
                match rule.effect {
                    Effect::Deny => return false,
                    Effect::Allow => allowed = true,
                }
            }
            allowed
        }
    }
}

/// Whether `grant` may see environment values (and, later, secrets):
/// those who may change the app may read what it holds.
pub fn sees_values(grant: &Grant, app: &str) -> bool {
    allows(
        grant,
        &Permission {
            verb: Verb::Write,
            kind: Kind::Apps,
            name: Some(app.to_string()),
        },
    )
}

/// A token as handed to its holder: `hm_<id>_<secret>`, the id public (it
/// is the table key), the secret 256 random bits of which only a hash is
/// stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenText {
    pub id: String,
    pub secret: String,
}

const TOKEN_PREFIX: &str = "hm_";
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 64;

impl TokenText {
    /// A new random token.
    pub fn generate() -> Self {
        use rand::Rng as _;
        let mut id = [0u8; ID_HEX / 2];
        let mut secret = [0u8; SECRET_HEX / 2];
        let mut rng = rand::rng();
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        Self {
            id: hex::encode(id),
            secret: hex::encode(secret),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix(TOKEN_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        (hex(id, ID_HEX) && hex(secret, SECRET_HEX)).then(|| Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The stored form of the secret.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }
}

impl fmt::Display for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}{}_{}", self.id, self.secret)
    }
}

/// A join token as handed to an operator: `hmjoin_<id>_<secret>_<ca>`, a
/// [`TokenText`]'s id and secret plus the SHA-256 of the cluster's CA
/// certificate, which the joining node pins before it sends the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenText {
    pub token: TokenText,
    pub ca_sha256: String,
}

const JOIN_PREFIX: &str = "hmjoin_";

impl JoinTokenText {
    pub fn generate(ca_sha256: &str) -> Self {
        Self {
            token: TokenText::generate(),
            ca_sha256: ca_sha256.to_string(),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix(JOIN_PREFIX)?;
        let (token, ca) = rest.rsplit_once('_')?;
        let ca_ok = ca.len() == 64
            && ca
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        Some(Self {
            token: TokenText::parse(&format!("{TOKEN_PREFIX}{token}"))?,
            ca_sha256: ca_ok.then(|| ca.to_string())?,
        })
    }
}

impl fmt::Display for JoinTokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{JOIN_PREFIX}{}_{}_{}",
            self.token.id, self.token.secret, self.ca_sha256
        )
    }
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes in time independent of where they differ.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(verb: Verb, kind: Kind, name: Option<&str>) -> Permission {
        Permission {
            verb,
            kind,
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn roles_grant_what_their_names_say() {
        let all_verbs = [Verb::Read, Verb::Write, Verb::Delete];
        for kind in Kind::ALL {
            for verb in all_verbs {
                let p = permission(verb, kind, None);
                assert!(allows(&Grant::Role(Role::Admin), &p), "admin {p}");
                let secret_kind = matches!(kind, Kind::Tokens | Kind::Audit | Kind::Debug);
                assert_eq!(
                    allows(&Grant::Role(Role::Viewer), &p),
                    verb == Verb::Read && !secret_kind,
                    "viewer {p}"
                );
                let deployer_writes = matches!(
                    kind,
                    Kind::Apps | Kind::Volumes | Kind::Policies | Kind::Images | Kind::Secrets
                );
                let expected = if verb == Verb::Read {
                    !secret_kind
                } else {
                    deployer_writes
                };
                assert_eq!(
                    allows(&Grant::Role(Role::Deployer), &p),
                    expected,
                    "deployer {p}"
                );
            }
        }
    }

    #[test]
    fn policies_allow_by_pattern_and_deny_wins() {
        let policy = AclPolicy {
            name: "web-team".into(),
            rules: vec![
                Rule {
                    effect: Effect::Allow,
                    verbs: vec![Verb::Read, Verb::Write],
                    kinds: vec![Kind::Apps],
                    names: vec!["web-*".into()],
                },
                Rule {
                    effect: Effect::Deny,
                    verbs: vec![Verb::Write],
                    kinds: vec![Kind::Apps],
                    names: vec!["web-prod".into()],
                },
            ],
        };
        policy.validate().unwrap();
        let grant = Grant::Policy(policy);
        assert!(allows(
            &grant,
            &permission(Verb::Write, Kind::Apps, Some("web-dev"))
        ));
        assert!(!allows(
            &grant,
            &permission(Verb::Write, Kind::Apps, Some("web-prod"))
        ));
        assert!(allows(
            &grant,
            &permission(Verb::Read, Kind::Apps, Some("web-prod"))
        ));
        assert!(!allows(
            &grant,
            &permission(Verb::Write, Kind::Apps, Some("db"))
        ));
        assert!(
            !allows(&grant, &permission(Verb::Read, Kind::Apps, None)),
            "a list is not web-*"
        );
        assert!(!allows(
            &grant,
            &permission(Verb::Delete, Kind::Apps, Some("web-dev"))
        ));
        assert!(sees_values(&grant, "web-dev") && !sees_values(&grant, "web-prod"));
    }

    #[test]
    fn patterns() {
        assert!(matches("web", "web") && !matches("web", "webs"));
        assert!(matches("*", "") && matches("*", "anything"));
        assert!(matches("web-*", "web-1") && !matches("web-*", "db-1"));
        assert!(matches("*-prod", "api-prod") && !matches("*-prod", "api-dev"));
        assert!(matches("a*b*c", "axxbyyc") && !matches("a*b*c", "acb"));
        assert!(!matches("ab*ba", "aba"), "the ends may not overlap");
    }

    #[test]
    fn tokens_round_trip_and_only_their_hash_is_kept() {
        let token = TokenText::generate();
        let text = token.to_string();
        assert_eq!(TokenText::parse(&text), Some(token.clone()));
        assert_eq!(text.len(), 3 + ID_HEX + 1 + SECRET_HEX);
        let join = JoinTokenText::generate(&"ab".repeat(32));
        assert_eq!(JoinTokenText::parse(&join.to_string()), Some(join.clone()));
        assert!(JoinTokenText::parse(&text).is_none());
        assert!(JoinTokenText::parse(&join.to_string()[..100]).is_none());
        assert!(!token.secret_hash().contains(&token.secret));
        assert!(same_hash(&token.secret_hash(), &hash_secret(&token.secret)));
        assert!(!same_hash(&token.secret_hash(), &hash_secret("other")));
        for bad in [
            "",
            "hm_",
            "hm_abc_def",
            "xx_0123456789ab_00",
            &text.to_uppercase(),
        ] {
            assert_eq!(TokenText::parse(bad), None, "{bad}");
        }
        assert_ne!(TokenText::generate(), TokenText::generate());
    }
}
