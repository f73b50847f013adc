//! /api/images: pull with streamed progress, and archive import.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{ApiError, AppState, Json};
use crate::image::normalize_reference;

/// Largest image archive accepted by upload.
pub const ARCHIVE_LIMIT: usize = 4 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    pub image: String,
    /// Pull even when the image is present (to pick up a moved tag);
    /// otherwise only a missing image is pulled, as `docker run` does.
    #[serde(default)]
    pub force: bool,
}

/// Pulls an image; the answer is newline-delimited JSON progress events,
/// ending with `{"event":"done",...}` or `{"event":"error","message":...}`.
pub async fn pull(
    State(node): State<AppState>,
    Json(request): Json<PullRequest>,
) -> Result<Response, ApiError> {
    let reference = normalize_reference(&request.image)
        .map_err(|e| ApiError::bad_request("invalid_field", format!("image: {e}")))?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let progress_sender = sender.clone();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done_seen = done.clone();
        let progress = move |event: crate::image::Progress| {
            if matches!(event, crate::image::Progress::Done { .. }) {
                done_seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if let Ok(value) = serde_json::to_value(&event) {
                let _ = progress_sender.send(value);
            }
        };
        let result = if request.force {
            node.runtime.pull_image(&reference, &progress).await
        } else {
            node.runtime.ensure_image(&reference, &progress).await
        };
        match result {
            // Present already: say so, with the same closing event.
            Ok(image) if !done.load(std::sync::atomic::Ordering::Relaxed) => {
                let _ = sender
                    .send(json!({"event": "done", "image": image.name, "digest": image.digest}));
            }
            Ok(_) => {}
            Err(e) => {
                let _ = sender.send(json!({"event": "error", "message": e.to_string()}));
            }
        }
    });
    let lines = UnboundedReceiverStream::new(receiver)
        .map(|value| Ok::<_, std::io::Error>(format!("{value}\n")));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Imports an OCI image archive sent as the request body.
pub async fn import(
    State(node): State<AppState>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be an OCI image archive (tar)",
        ));
    }
    let dir = node.data_dir.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("create {}: {e}", dir.display())))?;
    let path = dir.join(format!("import-{}.tar", std::process::id()));
    tokio::fs::write(&path, &body)
        .await
        .map_err(|e| ApiError::internal(format!("write {}: {e}", path.display())))?;
    let result = node.runtime.import_image(&path, &|_| {}).await;
    let _ = tokio::fs::remove_file(&path).await;
    let images = result?;
    Ok(axum::Json(json!({
        "success": true,
        "images": images.iter().map(|i| json!({"name": i.name, "digest": i.digest})).collect::<Vec<_>>(),
        "message": format!("Imported {} image(s)", images.len()),
    })))
}
