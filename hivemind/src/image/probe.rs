//! The image of `hivemind debug connectivity`'s probes, built on the node from its own
//! busybox (Debian's busybox-static): one layer with `/bin/busybox`, a page and a 64 KiB file
//! (`/large`), serving HTTP on port 80 with busybox's httpd. Built the same way every time, so every node that builds it
//! from the same busybox names it the same.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

/// Where a node looks for busybox, in order.
pub const BUSYBOX_PATHS: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// What the probe's page says: a client that reads it knows it reached a probe.
pub const PROBE_PAGE: &str = "hivemind connectivity probe\n";

/// The size of the probe's `/large`: enough full-size packets to show a path that drops them.
pub const LARGE_BYTES: usize = 64 * 1024;

/// The port the probe serves HTTP on.
pub const PROBE_PORT: u16 = 80;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A built probe image: its reference and the OCI archive (a tar of an image layout) that
/// `image import` takes.
pub struct ProbeImage {
    pub reference: String,
    pub archive: Vec<u8>,
}

/// Reads this node's busybox; the error names the paths looked at and the package to install.
pub fn read_busybox() -> Result<Vec<u8>, String> {
    for path in BUSYBOX_PATHS {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok(bytes);
        }
    }
    Err(format!(
        "no busybox at {}: install busybox-static, or pass --image with an image that serves HTTP",
        BUSYBOX_PATHS.join(" or ")
    ))
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tar whose entries carry no time, owner or other detail of the machine that wrote it.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        Self(builder)
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn dir(&mut self, path: &str) -> std::io::Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0
            .append_data(&mut header, format!("{path}/"), std::io::empty())
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut header, path, data)
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        self.0.into_inner()
    }
}

/// The probe image of `busybox` (the binary's bytes).
pub fn build(busybox: &[u8]) -> std::io::Result<ProbeImage> {
    let mut layer = Tar::new();
    for dir in ["bin", "www", "tmp", "etc", "proc", "sys", "dev"] {
        layer.dir(dir)?;
    }
    layer.file("bin/busybox", busybox, 0o755)?;
    layer.file("www/index.html", PROBE_PAGE.as_bytes(), 0o644)?;
    layer.file("www/large", &vec![b'.'; LARGE_BYTES], 0o644)?;
    let layer = layer.finish()?;
    let diff_id = digest(&layer);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer)?;
    let layer = gz.finish()?;
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            // A shell as the container's init, so that SIGTERM ends it at once (the kernel
            // ignores it for an init without a handler, and the stop would wait its grace).
            "Entrypoint": [
                "/bin/busybox", "sh", "-c",
                format!("trap 'exit 0' TERM; /bin/busybox httpd -f -p {PROBE_PORT} -h /www & wait"),
            ],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": "hivemind debug connectivity", "created": "1970-01-01T00:00:00Z" }],
    }))?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len() }],
    }))?;
    let manifest_digest = digest(&manifest);
    // The tag names the content, so a node with another busybox never shadows this one's.
    let reference = format!(
        "hivemind.local/connectivity-probe:{}",
        &manifest_digest["sha256:".len().."sha256:".len() + 12]
    );
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": reference },
        }],
    }))?;
    let mut archive = Tar::new();
    archive.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
    archive.file("index.json", &index, 0o644)?;
    for (d, data) in [
        (&config_digest, &config),
        (&layer_digest, &layer),
        (&manifest_digest, &manifest),
    ] {
        let name = Path::new("blobs/sha256").join(d.trim_start_matches("sha256:"));
        archive.file(&name.to_string_lossy(), data, 0o644)?;
    }
    Ok(ProbeImage {
        reference,
        archive: archive.finish()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_busybox_gives_the_same_image_and_another_a_new_tag() {
        let one = build(b"busybox one").expect("build");
        let again = build(b"busybox one").expect("build");
        let other = build(b"busybox two").expect("build");
        assert_eq!(one.reference, again.reference);
        assert_eq!(one.archive, again.archive);
        assert_ne!(one.reference, other.reference);
        assert!(
            one.reference
                .starts_with("hivemind.local/connectivity-probe:")
        );
        crate::image::normalize_reference(&one.reference).expect("a valid reference");
    }
}
