//! Fetching a branch with the `git` command: `file://` paths and smart HTTP(S), a token sent as
//! HTTP basic auth (through git's environment, never its arguments). Only those transports are
//! allowed (`GIT_ALLOW_PROTOCOL`), no prompt is ever shown, and neither the user's nor the
//! system's git configuration is read.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use tokio::process::Command;

/// How long a fetch or a look at the branch may take.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// A repository URL git may fetch from: `file://`, `http://` or `https://`.
pub fn validate_repository(url: &str) -> Result<(), String> {
    let ok_scheme = ["file:///", "http://", "https://"]
        .iter()
        .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len());
    if !ok_scheme {
        return Err(format!(
            "{url:?} is not a repository URL Hivemind fetches: use file:///path, http:// or https://"
        ));
    }
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be at most 2048 characters, without spaces".to_string());
    }
    Ok(())
}

/// A branch name as `git check-ref-format --branch` takes it (the common rules).
pub fn validate_branch(branch: &str) -> Result<(), String> {
    let bad = branch.is_empty()
        || branch.len() > 255
        || branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch
            .chars()
            .any(|c| c.is_control() || " ~^:?*[\\".contains(c));
    if bad {
        return Err(format!("{branch:?} is not a valid branch name"));
    }
    Ok(())
}

/// Whether `text` is a full commit id.
pub fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a git command left behind when it failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GitError(pub String);

fn git(token: Option<&str>) -> Command {
    let mut command = Command::new("git");
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ALLOW_PROTOCOL", "file:http:https")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            );
    }
    command
}

/// Runs git, returns its stdout; on failure, its stderr's last lines.
async fn run(mut command: Command, what: &str) -> Result<String, GitError> {
    let child = command.spawn().map_err(|e| {
        GitError(format!(
            "{what}: cannot run git: {e} (install git on this node)"
        ))
    })?;
    let output = tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            GitError(format!(
                "{what}: git took more than {}s",
                GIT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| GitError(format!("{what}: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(GitError(format!("{what}: {}", tail.join("; "))));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Clones the tip of `branch` into `dest` (which must not exist), without history; returns
/// the commit.
pub async fn fetch(
    repository: &str,
    branch: &str,
    token: Option<&str>,
    dest: &Path,
) -> Result<String, GitError> {
    let mut clone = git(token);
    clone
        .args([
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--single-branch",
            "--no-tags",
        ])
        .arg("--branch")
        .arg(branch)
        .arg("--")
        .arg(repository)
        .arg(dest);
    run(clone, &format!("fetching {branch} of {repository}")).await?;
    let mut head = git(None);
    head.arg("-C").arg(dest).args(["rev-parse", "HEAD"]);
    let commit = run(head, "reading the commit").await?.trim().to_string();
    if !is_commit(&commit) {
        return Err(GitError(format!("git named the commit {commit:?}")));
    }
    Ok(commit)
}

/// The commit at the tip of `branch` in the repository, without fetching it.
pub async fn head(repository: &str, branch: &str, token: Option<&str>) -> Result<String, GitError> {
    let mut ls = git(token);
    ls.args(["ls-remote", "--", repository])
        .arg(format!("refs/heads/{branch}"));
    let out = run(ls, &format!("looking at {branch} of {repository}")).await?;
    out.lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, name)| *name == format!("refs/heads/{branch}"))
        .map(|(commit, _)| commit.to_string())
        .filter(|c| is_commit(c))
        .ok_or_else(|| GitError(format!("{repository} has no branch {branch}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_branches() {
        for ok in [
            "file:///srv/git/web.git",
            "https://git.example.com/a/b.git",
            "http://10.0.0.1:8080/r",
        ] {
            assert!(validate_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/x",
            "git@host:repo",
            "/srv/git/web.git",
            "ssh://host/repo",
            "file://",
            "https://a b",
        ] {
            assert!(validate_repository(bad).is_err(), "{bad}");
        }
        for ok in ["main", "release/1.2", "feature-x_y"] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "a:b", "x.lock", "/a", "a/", "a@{1}", "a~1",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad}");
        }
        assert!(is_commit(&"a".repeat(40)) && !is_commit("abc"));
    }
}
