//! Container logs as text, from this node's files and from the nodes that
//! run the other containers: one answer for an app wherever its replicas
//! are. Lines are prefixed with the container id when there are several;
//! with `follow`, new lines stream until the client goes away.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream::{BoxStream, StreamExt};

use super::ApiError;
use crate::contract::LogQuery;
use crate::node::{PeerApi, Remote};

/// Marks a logs request one node forwards to another: it is never
/// forwarded again.
pub const FORWARDED_HEADER: &str = "x-hivemind-forwarded";
/// How often a followed local file is read again.
const FOLLOW_PERIOD: Duration = Duration::from_millis(250);

type Lines = BoxStream<'static, Result<String, std::io::Error>>;

/// The logs of local containers (`id`, log file) and remote ones.
pub async fn stream_logs(
    peers: &PeerApi,
    local: Vec<(String, PathBuf)>,
    remote: Vec<(String, Remote)>,
    query: LogQuery,
    token: Option<String>,
) -> Result<Response, ApiError> {
    let prefix = local.len() + remote.len() > 1;
    let mut streams: Vec<Lines> = Vec::with_capacity(1 + remote.len());
    streams.push(local_lines(local, query.clone(), prefix).await);
    for (id, node) in remote {
        streams.push(remote_lines(
            peers,
            id,
            node,
            query.clone(),
            prefix,
            token.clone(),
        ));
    }
    let merged = futures::stream::select_all(streams);
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if query.follow {
        return Ok((content_type, Body::from_stream(merged)).into_response());
    }
    let chunks: Vec<Result<String, std::io::Error>> = merged.collect().await;
    let text: String = chunks.into_iter().filter_map(Result::ok).collect();
    Ok((content_type, text).into_response())
}

/// What was appended to `path` after `offset` (read from there, not the
/// whole file), and the file's length now; `None` when it cannot be read.
async fn appended(path: &std::path::Path, offset: u64) -> Option<(Vec<u8>, u64)> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let len = file.metadata().await.ok()?.len();
    if len <= offset {
        return Some((Vec::new(), len));
    }
    file.seek(std::io::SeekFrom::Start(offset)).await.ok()?;
    let mut new = Vec::new();
    file.take(len - offset).read_to_end(&mut new).await.ok()?;
    Some((new, len))
}

/// Local log files: the last lines first, then (with `follow`) what is
/// appended, whole lines only.
async fn local_lines(sources: Vec<(String, PathBuf)>, query: LogQuery, prefix: bool) -> Lines {
    let mut initial = String::new();
    let mut offsets = Vec::new();
    for (id, path) in &sources {
        let bytes = tokio::fs::read(path).await.unwrap_or_default();
        offsets.push(bytes.len() as u64);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let skip = query.tail.map_or(0, |tail| {
            lines
                .len()
                .saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX))
        });
        for line in &lines[skip..] {
            push_line(&mut initial, prefix, id, line);
        }
    }
    let first = futures::stream::iter([Ok(initial)]);
    if !query.follow || sources.is_empty() {
        return first.boxed();
    }
    let rest = futures::stream::unfold(
        (sources, offsets),
        move |(sources, mut offsets)| async move {
            loop {
                tokio::time::sleep(FOLLOW_PERIOD).await;
                let mut chunk = String::new();
                for (index, (id, path)) in sources.iter().enumerate() {
                    let Some((new, len)) = appended(path, offsets[index]).await else {
                        continue;
                    };
                    if len < offsets[index] {
                        // Truncated (or replaced): start over from its beginning.
                        offsets[index] = 0;
                        continue;
                    }
                    // Only whole lines; a partial last line waits.
                    if let Some(end) = new.iter().rposition(|b| *b == b'\n') {
                        for line in String::from_utf8_lossy(&new[..=end]).lines() {
                            push_line(&mut chunk, prefix, id, line);
                        }
                        offsets[index] += end as u64 + 1;
                    }
                }
                if !chunk.is_empty() {
                    return Some((Ok(chunk), (sources, offsets)));
                }
            }
        },
    );
    first.chain(rest).boxed()
}

/// The logs of a container on another node, through that node's API.
fn remote_lines(
    peers: &PeerApi,
    id: String,
    node: Remote,
    query: LogQuery,
    prefix: bool,
    token: Option<String>,
) -> Lines {
    let mut url = peers.url(
        &node.api,
        &format!("/api/containers/{id}/logs?follow={}", query.follow),
    );
    if let Some(tail) = query.tail {
        url.push_str(&format!("&tail={tail}"));
    }
    let client = peers.client().clone();
    let request = async move {
        let mut request = client.get(&url).header(FORWARDED_HEADER, "1");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(std::io::Error::other)?;
        if !response.status().is_success() {
            return Err(std::io::Error::other(format!(
                "node {} answered {}",
                node.node_id,
                response.status()
            )));
        }
        Ok(response.bytes_stream())
    };
    let failed_id = id.clone();
    futures::stream::once(request)
        .flat_map(move |result| -> Lines {
            match result {
                Ok(body) => {
                    let id = id.clone();
                    // A chunk may end inside a line: carry the rest over.
                    body.scan(String::new(), move |pending, chunk| {
                        let out = match chunk {
                            Ok(bytes) => {
                                pending.push_str(&String::from_utf8_lossy(&bytes));
                                let mut out = String::new();
                                while let Some(end) = pending.find('\n') {
                                    let line: String = pending.drain(..=end).collect();
                                    push_line(&mut out, prefix, &id, line.trim_end_matches('\n'));
                                }
                                Ok(out)
                            }
                            Err(e) => Err(std::io::Error::other(e)),
                        };
                        futures::future::ready(Some(out))
                    })
                    .boxed()
                }
                Err(e) => {
                    tracing::debug!(container = %failed_id, error = %e, "logs of a remote container unavailable");
                    let mut line = String::new();
                    push_line(
                        &mut line,
                        true,
                        &failed_id,
                        &format!("(logs unavailable: {e})"),
                    );
                    futures::stream::iter([Ok(line)]).boxed()
                }
            }
        })
        .boxed()
}

fn push_line(out: &mut String, prefix: bool, id: &str, line: &str) {
    if prefix {
        out.push('[');
        out.push_str(id);
        out.push_str("] ");
    }
    out.push_str(line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_logs_keep_the_last_lines_and_prefix_several_containers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        std::fs::write(&a, "one\ntwo\nthree\n").expect("write");
        std::fs::write(&b, "uno\n").expect("write");
        let query = LogQuery {
            tail: Some(2),
            follow: false,
        };
        let lines: Vec<String> = local_lines(vec![("a".into(), a), ("b".into(), b)], query, true)
            .await
            .filter_map(|r| futures::future::ready(r.ok()))
            .collect()
            .await;
        assert_eq!(lines.concat(), "[a] two\n[a] three\n[b] uno\n");
    }

    #[tokio::test]
    async fn follow_reads_what_is_appended_and_starts_over_after_a_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        std::fs::write(&path, "one\ntwo\n").expect("write");
        let query = LogQuery {
            tail: Some(1),
            follow: true,
        };
        let mut lines = local_lines(vec![("c".into(), path.clone())], query, false).await;
        assert_eq!(lines.next().await.expect("first").expect("ok"), "two\n");
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(b"three\npart").expect("append");
        assert_eq!(lines.next().await.expect("next").expect("ok"), "three\n");
        std::fs::write(&path, "fresh\n").expect("truncate");
        assert_eq!(lines.next().await.expect("after").expect("ok"), "fresh\n");
    }
}
