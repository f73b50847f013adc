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

/// How lines look in an answer: prefixed with their container, with their time, only since
/// a time.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    prefix: bool,
    timestamps: bool,
    since_ns: Option<i128>,
}

/// The logs of local containers (`id`, log file) and remote ones.
pub async fn stream_logs(
    peers: &PeerApi,
    local: Vec<(String, PathBuf)>,
    remote: Vec<(String, Remote)>,
    query: LogQuery,
    token: Option<String>,
) -> Result<Response, ApiError> {
    let shape = Shape {
        prefix: local.len() + remote.len() > 1,
        timestamps: query.timestamps,
        since_ns: query.since_ns()?,
    };
    let mut streams: Vec<Lines> = Vec::with_capacity(1 + remote.len());
    streams.push(local_lines(local, query.tail, query.follow, shape).await);
    for (id, node) in remote {
        streams.push(remote_lines(peers, id, node, &query, shape, token.clone()));
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

/// Local log files (the rotated one, then the current one): the lines since `shape.since_ns`,
/// the last `tail` of them first, then (with `follow`) what is appended, whole lines only.
async fn local_lines(
    sources: Vec<(String, PathBuf)>,
    tail: Option<u64>,
    follow: bool,
    shape: Shape,
) -> Lines {
    let mut initial = String::new();
    let mut positions = Vec::new();
    for (id, path) in &sources {
        let older = tokio::fs::read(crate::logfile::rotated(path))
            .await
            .unwrap_or_default();
        let (bytes, length, inode) = crate::logfile::appended(path, 0).await.unwrap_or_default();
        positions.push((length, inode));
        let text = String::from_utf8_lossy(&older) + String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| shape.keeps(l)).collect();
        let skip = tail.map_or(0, |tail| {
            lines
                .len()
                .saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX))
        });
        for line in &lines[skip..] {
            shape.push(&mut initial, id, line);
        }
    }
    let first = futures::stream::iter([Ok(initial)]);
    if !follow || sources.is_empty() {
        return first.boxed();
    }
    let rest = futures::stream::unfold(
        (sources, positions),
        move |(sources, mut positions)| async move {
            loop {
                tokio::time::sleep(FOLLOW_PERIOD).await;
                let mut chunk = String::new();
                for (index, (id, path)) in sources.iter().enumerate() {
                    let (offset, inode) = positions[index];
                    let Some((new, len, now_inode)) = crate::logfile::appended(path, offset).await
                    else {
                        continue;
                    };
                    if len < offset || now_inode != inode {
                        // Rotated, truncated or replaced: start over from its beginning.
                        positions[index] = (0, now_inode);
                        continue;
                    }
                    // Only whole lines; a partial last line waits.
                    if let Some(end) = new.iter().rposition(|b| *b == b'\n') {
                        for line in String::from_utf8_lossy(&new[..=end]).lines() {
                            if shape.keeps(line) {
                                shape.push(&mut chunk, id, line);
                            }
                        }
                        positions[index].0 += end as u64 + 1;
                    }
                }
                if !chunk.is_empty() {
                    return Some((Ok(chunk), (sources, positions)));
                }
            }
        },
    );
    first.chain(rest).boxed()
}

/// The logs of a container on another node, through that node's API: it applies the filters
/// and the times, this node the prefix.
fn remote_lines(
    peers: &PeerApi,
    id: String,
    node: Remote,
    query: &LogQuery,
    shape: Shape,
    token: Option<String>,
) -> Lines {
    let mut url = peers.url(
        &node.api,
        &format!(
            "/api/containers/{id}/logs?follow={}&timestamps={}",
            query.follow, query.timestamps
        ),
    );
    if let Some(tail) = query.tail {
        url.push_str(&format!("&tail={tail}"));
    }
    let since = shape
        .since_ns
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    if let Some(since) = since {
        url.push_str(&format!(
            "&since={}",
            crate::logfile::percent_encode(&since)
        ));
    }
    let prefix = shape.prefix;
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

impl Shape {
    /// Whether a line of a log file is in the answer: written since `since_ns` (a line
    /// without a time is not, when there is a `since`).
    fn keeps(&self, line: &str) -> bool {
        match self.since_ns {
            None => true,
            Some(since) => crate::logfile::parse(line)
                .time_ns
                .is_some_and(|at| at >= since),
        }
    }

    /// A line of a log file as the answer shows it.
    fn push(&self, out: &mut String, id: &str, line: &str) {
        let line = crate::logfile::parse(line);
        if self.timestamps && !line.time.is_empty() {
            let stamped = format!("{} {}", line.time, line.text);
            push_line(out, self.prefix, id, &stamped);
        } else {
            push_line(out, self.prefix, id, line.text);
        }
    }
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
        let shape = Shape {
            prefix: true,
            ..Shape::default()
        };
        let sources = vec![("a".into(), a), ("b".into(), b)];
        let lines: Vec<String> = local_lines(sources, Some(2), false, shape)
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
        let sources = vec![("c".into(), path.clone())];
        let mut lines = local_lines(sources, Some(1), true, Shape::default()).await;
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

    #[tokio::test]
    async fn since_and_timestamps_read_the_driver_format_across_a_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.log");
        std::fs::write(
            crate::logfile::rotated(&path),
            "2026-11-30T10:00:00Z stdout F old\n2026-11-30T11:00:00Z stderr F middle\n",
        )
        .expect("write rotated");
        std::fs::write(&path, "2026-11-30T12:00:00.5Z stdout F new\n").expect("write");
        let read = |shape: Shape, tail: Option<u64>| {
            let sources = vec![("d".into(), path.clone())];
            async move {
                local_lines(sources, tail, false, shape)
                    .await
                    .filter_map(|r| futures::future::ready(r.ok()))
                    .collect::<Vec<String>>()
                    .await
                    .concat()
            }
        };
        assert_eq!(read(Shape::default(), None).await, "old\nmiddle\nnew\n");
        assert_eq!(read(Shape::default(), Some(2)).await, "middle\nnew\n");
        let since = LogQuery {
            since: Some("2026-11-30T10:30:00Z".into()),
            ..LogQuery::default()
        };
        let shape = Shape {
            since_ns: since.since_ns().expect("since"),
            timestamps: true,
            ..Shape::default()
        };
        assert_eq!(
            read(shape, None).await,
            "2026-11-30T11:00:00Z middle\n2026-11-30T12:00:00.5Z new\n"
        );
        let bad = LogQuery {
            since: Some("yesterday".into()),
            ..LogQuery::default()
        };
        assert_eq!(
            bad.since_ns().map_err(|e| e.field),
            Err("since".to_string())
        );
    }
}
