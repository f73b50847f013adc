//! The CLI's contexts, as kubeconfig keeps them: a server and a token under
//! a name, and which one is current. `hivemind login` writes them; every
//! command uses the current one unless `--server`/`--token` (or
//! `HIVEMIND_SERVER`/`HIVEMIND_TOKEN`) say otherwise.
//!
//! The file (`$HIVEMIND_CONFIG`, else `~/.config/hivemind/config`) is JSON,
//! readable by its owner only: it holds tokens.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ClientError;
use super::client::Trust;

/// Where a server is when nothing says.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:3000";
/// The CA of a node on this machine with the default data dir: trusted when
/// nothing else says, so the CLI works on a node as it is.
pub const LOCAL_CA: &str = "/var/lib/hivemind/pki/ca.crt";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub name: String,
    pub server: String,
    pub token: String,
    /// The SHA-256 of the server's CA, pinned at login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
}

pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HIVEMIND_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/hivemind/config"))
}

impl Config {
    /// The config file, or an empty config when there is none.
    pub fn load() -> Result<Self, ClientError> {
        let Some(path) = path() else {
            return Ok(Self::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                ClientError::Usage(format!("{} is not a hivemind config: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ClientError::Other(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn save(&self) -> Result<PathBuf, ClientError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let path = path().ok_or_else(|| {
            ClientError::Usage("set HOME or HIVEMIND_CONFIG to keep contexts".to_string())
        })?;
        let io =
            |e: std::io::Error| ClientError::Other(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text =
            serde_json::to_string_pretty(self).map_err(|e| ClientError::Other(e.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        Ok(path)
    }

    pub fn current(&self) -> Option<&Context> {
        let name = self.current.as_ref()?;
        self.contexts.iter().find(|c| &c.name == name)
    }

    /// Adds or replaces a context and makes it current.
    pub fn put(&mut self, context: Context) {
        self.current = Some(context.name.clone());
        self.contexts.retain(|c| c.name != context.name);
        self.contexts.push(context);
    }
}

/// The server, token and trust a command uses: flags and environment
/// first, then the current context, then the default server without a
/// token. The CA trusted: `--ca-cert`, else the one the context pinned (for
/// its server), else this machine's node's, else the public roots.
pub fn resolve(
    server: Option<&str>,
    token: Option<&str>,
    ca_cert: Option<&std::path::Path>,
) -> Result<(String, Option<String>, Trust), ClientError> {
    let config = Config::load()?;
    let context = config.current();
    let server = server
        .map(|s| s.trim_end_matches('/').to_string())
        .or_else(|| context.map(|c| c.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = token
        .map(str::to_string)
        .or_else(|| context.map(|c| c.token.clone()));
    let pinned = context
        .filter(|c| c.server == server)
        .and_then(|c| c.ca_sha256.clone());
    let trust = match (ca_cert, pinned) {
        (Some(path), _) => Trust::CaFile(path.to_path_buf()),
        (None, Some(fingerprint)) => Trust::Pinned(fingerprint),
        (None, None) if std::path::Path::new(LOCAL_CA).exists() => Trust::CaFile(LOCAL_CA.into()),
        (None, None) => Trust::Roots,
    };
    Ok((server, token, trust))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_replaces_a_context_of_the_same_name_and_becomes_current() {
        let mut config = Config::default();
        let context = |name: &str, token: &str| Context {
            name: name.into(),
            server: format!("https://{name}:3000"),
            token: token.into(),
            ca_sha256: None,
        };
        config.put(context("a", "1"));
        config.put(context("b", "2"));
        config.put(context("a", "3"));
        assert_eq!(config.contexts.len(), 2);
        assert_eq!(config.current().map(|c| c.token.as_str()), Some("3"));
    }
}
