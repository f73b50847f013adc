//! containerd's content store and leases, as a pull or an import uses them:
//! one [`Session`] per operation holds a lease so that the garbage collector
//! leaves half-done work alone, and every request carries it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AbortRequest, CreateRequest, DeleteRequest, Info, InfoRequest, ReadContentRequest,
    UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::{Code, Request, Status};
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use tokio_stream::wrappers::ReceiverStream;

use super::ImageError;
use crate::containerd::Containerd;

/// gRPC metadata key containerd reads the lease from (containerd
/// `leases/grpc.go`; the dotted `containerd.lease` is silently ignored, and
/// then the garbage collector may remove blobs in the middle of a pull).
const LEASE_HEADER: &str = "containerd-lease";
/// Label that lets containerd expire a lease its owner forgot (crash).
const LEASE_EXPIRE: &str = "containerd.io/gc.expire";
const LEASE_TTL: Duration = Duration::from_secs(3600);
/// Bytes per WRITE message to containerd.
const WRITE_CHUNK: usize = 512 << 10;

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A string no other writer of this process or another uses at the same time.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

pub fn containerd_error(op: &'static str, status: Status) -> ImageError {
    ImageError::Containerd { op, status }
}

/// A lease plus the connection: every request made through it is leased.
pub struct Session {
    pub cd: Containerd,
    pub lease: String,
}

impl Session {
    pub async fn begin(cd: &Containerd) -> Result<Self, ImageError> {
        let lease = unique("hivemind-image");
        let expire = SystemTime::now() + LEASE_TTL;
        let labels = HashMap::from([(LEASE_EXPIRE.to_string(), rfc3339(expire))]);
        LeasesClient::new(cd.channel.clone())
            .create(cd.request(CreateRequest {
                id: lease.clone(),
                labels,
            }))
            .await
            .map_err(|s| containerd_error("lease create", s))?;
        Ok(Self {
            cd: cd.clone(),
            lease,
        })
    }

    /// Deletes the lease; what nothing else references becomes garbage.
    pub async fn end(self) {
        let result = LeasesClient::new(self.cd.channel.clone())
            .delete(self.cd.request(DeleteRequest {
                id: self.lease.clone(),
                sync: false,
            }))
            .await;
        if let Err(e) = result {
            tracing::warn!(lease = %self.lease, error = %e, "cannot delete containerd lease");
        }
    }

    /// A request in the namespace and under the lease.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.cd.request(message);
        if let Ok(value) = self.lease.parse() {
            request.metadata_mut().insert(LEASE_HEADER, value);
        }
        request
    }

    pub async fn info(&self, digest: &str) -> Result<Option<Info>, ImageError> {
        content_info(&self.cd, digest).await
    }

    /// Adds `labels` to existing content (the GC references of a blob that
    /// an earlier pull already stored).
    pub async fn set_labels(
        &self,
        digest: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), ImageError> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.cd.channel.clone())
            .update(self.request(UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    labels: labels.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| containerd_error("content update", s))?;
        Ok(())
    }

    /// Stores `data` after checking it against `digest` and `size`.
    pub async fn write_bytes(
        &self,
        digest: &str,
        size: u64,
        data: Bytes,
        labels: HashMap<String, String>,
    ) -> Result<(), ImageError> {
        super::manifest::verify(&data, digest, Some(size))?;
        let body = futures::stream::iter([Ok(data)]);
        self.write_stream(digest, size, labels, body, |_| {}).await
    }

    /// Streams a blob into the content store. The sha256 and size are
    /// checked as the bytes pass; on a mismatch the upload is aborted and
    /// nothing is committed. Content already present only gets `labels`.
    pub async fn write_stream<S>(
        &self,
        digest: &str,
        size: u64,
        labels: HashMap<String, String>,
        body: S,
        mut on_progress: impl FnMut(u64),
    ) -> Result<(), ImageError>
    where
        S: Stream<Item = Result<Bytes, ImageError>>,
    {
        let reference = unique("hivemind-ingest");
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
        let open = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total: size as i64,
            expected: digest.to_string(),
            ..Default::default()
        };
        // The server answers only after the first message arrived.
        if tx.send(open).await.is_err() {
            return Err(containerd_error(
                "content write",
                Status::internal("request stream closed"),
            ));
        }
        let mut client = ContentClient::new(self.cd.channel.clone());
        let result = async {
            let mut responses = client
                .write(self.request(ReceiverStream::new(rx)))
                .await?
                .into_inner();
            responses.message().await?;
            let mut hasher = Sha256::new();
            let mut offset: u64 = 0;
            let mut buffer = BytesMut::new();
            let mut body = std::pin::pin!(body);
            loop {
                let chunk = body.next().await.transpose().map_err(Failure::Image)?;
                let done = chunk.is_none();
                if let Some(chunk) = chunk {
                    hasher.update(&chunk);
                    buffer.extend_from_slice(&chunk);
                    if offset + buffer.len() as u64 > size {
                        return Err(Failure::Image(ImageError::SizeMismatch {
                            digest: digest.to_string(),
                            expected: size,
                            actual: offset + buffer.len() as u64,
                        }));
                    }
                }
                if !buffer.is_empty() && (done || buffer.len() >= WRITE_CHUNK) {
                    let data = buffer.split().freeze();
                    let len = data.len() as u64;
                    send(
                        &tx,
                        WriteContentRequest {
                            action: WriteAction::Write as i32,
                            r#ref: reference.clone(),
                            offset: offset as i64,
                            data: data.to_vec(),
                            ..Default::default()
                        },
                    )
                    .await?;
                    responses.message().await?;
                    offset += len;
                    on_progress(offset);
                }
                if done {
                    break;
                }
            }
            if offset != size {
                return Err(Failure::Image(ImageError::SizeMismatch {
                    digest: digest.to_string(),
                    expected: size,
                    actual: offset,
                }));
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(Failure::Image(ImageError::DigestMismatch {
                    digest: digest.to_string(),
                    actual,
                }));
            }
            send(
                &tx,
                WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: reference.clone(),
                    total: size as i64,
                    offset: offset as i64,
                    expected: digest.to_string(),
                    labels: labels.clone(),
                    ..Default::default()
                },
            )
            .await?;
            responses.message().await?;
            Ok(())
        }
        .await;
        drop(tx);
        match result {
            Ok(()) => Ok(()),
            Err(Failure::Status(s)) if s.code() == Code::AlreadyExists => {
                self.set_labels(digest, &labels).await
            }
            Err(failure) => {
                let abort = client
                    .abort(self.request(AbortRequest {
                        r#ref: reference.clone(),
                    }))
                    .await;
                if let Err(e) = abort
                    && e.code() != Code::NotFound
                {
                    tracing::debug!(ingest = %reference, error = %e, "cannot abort content ingest");
                }
                Err(match failure {
                    Failure::Image(e) => e,
                    Failure::Status(s) => containerd_error("content write", s),
                })
            }
        }
    }
}

/// Why a write stopped: containerd said no, or the bytes were wrong.
enum Failure {
    Status(Status),
    Image(ImageError),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Status(s)
    }
}

async fn send(
    tx: &tokio::sync::mpsc::Sender<WriteContentRequest>,
    message: WriteContentRequest,
) -> Result<(), Failure> {
    tx.send(message)
        .await
        .map_err(|_| Failure::Status(Status::aborted("containerd closed the write stream")))
}

pub async fn content_info(cd: &Containerd, digest: &str) -> Result<Option<Info>, ImageError> {
    match ContentClient::new(cd.channel.clone())
        .info(cd.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(response) => Ok(response.into_inner().info),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(containerd_error("content info", s)),
    }
}

/// Reads a small blob (manifest, config) from the content store; `None` when
/// it is absent.
pub async fn read_document(cd: &Containerd, digest: &str) -> Result<Option<Bytes>, ImageError> {
    let Some(info) = content_info(cd, digest).await? else {
        return Ok(None);
    };
    if info.size as u64 > super::manifest::MAX_DOCUMENT {
        return Err(ImageError::InvalidManifest {
            digest: digest.to_string(),
            reason: format!("it is {} bytes, larger than any manifest", info.size),
        });
    }
    let Some(data) = read_content(cd, digest, info.size as u64).await? else {
        return Ok(None);
    };
    super::manifest::verify(&data, digest, Some(info.size as u64))?;
    Ok(Some(data))
}

/// Reads a blob of `size` bytes whole from the content store; `None` when it is absent.
pub async fn read_content(
    cd: &Containerd,
    digest: &str,
    size: u64,
) -> Result<Option<Bytes>, ImageError> {
    let mut stream = match ContentClient::new(cd.channel.clone())
        .read(cd.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(s) if s.code() == Code::NotFound => return Ok(None),
        Err(s) => return Err(containerd_error("content read", s)),
    };
    let mut data = BytesMut::with_capacity(size as usize);
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| containerd_error("content read", s))?
    {
        data.extend_from_slice(&chunk.data);
    }
    Ok(Some(data.freeze()))
}

/// RFC 3339 UTC time, as containerd's lease expiry label wants it.
fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199); // leap year
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59Z");
    }
}
