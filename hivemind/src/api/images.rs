//! /api/images: pull with streamed progress, and archive import.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{ApiError, AppState, Json};
use crate::command::{Command, Outcome, ProgressSink};
use crate::contract::{ErrorBody, ImageArchive, ImageRef, ImportAnswer, PullEvent, PullRequest};

/// Largest image archive accepted by upload.
pub const ARCHIVE_LIMIT: usize = 4 << 30;

/// Pulls an image; the answer is newline-delimited JSON progress events,
/// ending with `{"event":"done",...}` or `{"event":"error","message":...}`.
#[utoipa::path(
    post,
    path = "/api/images/pull",
    tag = "images",
    request_body = PullRequest,
    responses(
        (status = 200, description = "progress events, one JSON object a line", content_type = "application/x-ndjson", body = PullEvent),
        (status = 400, description = "the reference is invalid", body = ErrorBody),
    )
)]
pub async fn pull(
    State(node): State<AppState>,
    Json(request): Json<PullRequest>,
) -> Result<Response, ApiError> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<PullEvent>();
    let progress_sender = sender.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done_seen = done.clone();
    let progress = ProgressSink::new(move |event: crate::image::Progress| {
        if matches!(event, crate::image::Progress::Done { .. }) {
            done_seen.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = progress_sender.send(PullEvent::from(event));
    });
    let command = Command::pull_image(&request.image, request.force, progress)?;
    // In the request's span, which lasts as long as the pull its answer streams.
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            match node.execute(command).await {
                // Present already: say so, with the same closing event.
                Ok(Outcome::ImagePulled(image))
                    if !done.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    let _ = sender.send(PullEvent::Done {
                        image: image.name,
                        digest: image.digest,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = sender.send(PullEvent::Error {
                        message: e.to_string(),
                    });
                }
            }
        },
        span,
    ));
    let lines = UnboundedReceiverStream::new(receiver).map(|event| {
        let mut line = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        Ok::<_, std::io::Error>(line)
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Imports an OCI image archive sent as the request body (any content type).
#[utoipa::path(
    post,
    path = "/api/images/import",
    tag = "images",
    request_body(content = ImageArchive, content_type = "application/octet-stream", description = "an OCI image archive (tar)"),
    responses(
        (status = 200, description = "imported", body = ImportAnswer),
        (status = 400, description = "the body is not an OCI image archive", body = ErrorBody),
    )
)]
pub async fn import(
    State(node): State<AppState>,
    body: Bytes,
) -> Result<axum::Json<ImportAnswer>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be an OCI image archive (tar)",
        ));
    }
    let dir = node.tmp_dir()?;
    // One file per upload: imports may run side by side.
    static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let upload = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("import-{}-{upload}.tar", std::process::id()));
    tokio::fs::write(&path, &body)
        .await
        .map_err(|e| ApiError::internal(format!("write {}: {e}", path.display())))?;
    let result = node
        .execute(Command::ImportImages {
            archive: path.clone(),
        })
        .await;
    let _ = tokio::fs::remove_file(&path).await;
    let Outcome::ImagesImported(images) = result? else {
        return Err(ApiError::internal("import returned an unexpected outcome"));
    };
    Ok(axum::Json(ImportAnswer {
        success: true,
        message: format!("Imported {} image(s)", images.len()),
        images: images
            .into_iter()
            .map(|i| ImageRef {
                name: i.name,
                digest: i.digest,
            })
            .collect(),
    }))
}
