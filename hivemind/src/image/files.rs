//! Reading files out of a local image without running it: each layer's tar read from the
//! content store in order, later layers over earlier ones, whiteouts (`.wh.<name>`) and
//! opaque directories (`.wh..wh..opq`) applied as overlayfs would.

use std::collections::BTreeMap;
use std::io::Read;

use super::content::{content_info, read_content};
use super::{ImageError, normalize_reference};
use crate::containerd::Containerd;

/// Largest file read out of an image.
pub const MAX_FILE: u64 = 64 << 20;
/// Largest layer read (compressed).
const MAX_LAYER: u64 = 4 << 30;

/// Which files to read, by path without the leading `/`.
pub type Wanted = fn(&str) -> bool;

/// Files of an image, by path without the leading `/`.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    /// The normalized reference.
    pub name: String,
    /// The digest of the platform's manifest (what a scan result is kept for).
    pub manifest_digest: String,
    pub layers: usize,
    pub files: BTreeMap<String, Vec<u8>>,
}

pub async fn read(
    cd: &Containerd,
    reference: &str,
    wanted: Wanted,
) -> Result<ImageFiles, ImageError> {
    let name = normalize_reference(reference)?;
    let not_local = || ImageError::NotLocal {
        reference: name.clone(),
    };
    let (manifest_digest, _, manifest) = super::build::local_manifest(cd, &name)
        .await?
        .ok_or_else(not_local)?;
    let mut files = BTreeMap::new();
    for layer in &manifest.layers {
        let blob = read_blob(cd, &name, &layer.digest).await?;
        let digest = layer.digest.clone();
        let reference = name.clone();
        let below = std::mem::take(&mut files);
        files = tokio::task::spawn_blocking(move || apply_layer(below, &blob, wanted))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|reason| ImageError::Layer {
                reference,
                digest,
                reason,
            })?;
    }
    Ok(ImageFiles {
        name,
        manifest_digest,
        layers: manifest.layers.len(),
        files,
    })
}

async fn read_blob(cd: &Containerd, name: &str, digest: &str) -> Result<bytes::Bytes, ImageError> {
    let layer_error = |reason: String| ImageError::Layer {
        reference: name.to_string(),
        digest: digest.to_string(),
        reason,
    };
    let info = content_info(cd, digest)
        .await?
        .ok_or_else(|| layer_error("it is not in the content store".to_string()))?;
    if info.size as u64 > MAX_LAYER {
        return Err(layer_error(format!(
            "{} bytes, more than {MAX_LAYER}",
            info.size
        )));
    }
    read_content(cd, digest, info.size as u64)
        .await?
        .ok_or_else(|| layer_error("it is not in the content store".to_string()))
}

/// `below` with one layer (a tar, gzipped or not) applied over it.
fn apply_layer(
    mut below: BTreeMap<String, Vec<u8>>,
    blob: &[u8],
    wanted: Wanted,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let reader: Box<dyn Read> = if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err("zstd-compressed layers are not read".to_string());
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    let mut added: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut deleted: Vec<String> = Vec::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .to_string();
        let path = raw
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let (dir, file) = match path.rsplit_once('/') {
            Some((dir, file)) => (format!("{dir}/"), file.to_string()),
            None => (String::new(), path.clone()),
        };
        if file == ".wh..wh..opq" {
            // Everything below the directory from lower layers goes.
            below.retain(|p, _| !p.starts_with(&dir));
            continue;
        }
        if let Some(gone) = file.strip_prefix(".wh.") {
            deleted.push(format!("{dir}{gone}"));
            continue;
        }
        // A path this layer writes again hides what was below it.
        below.remove(&path);
        added.remove(&path);
        if !entry.header().entry_type().is_file() || !wanted(&path) {
            continue;
        }
        let size = entry.header().size().map_err(|e| e.to_string())?;
        if size > MAX_FILE {
            return Err(format!("{path} is {size} bytes, more than {MAX_FILE}"));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("{path}: {e}"))?;
        added.insert(path, data);
    }
    for gone in deleted {
        let under = format!("{gone}/");
        below.retain(|p, _| *p != gone && !p.starts_with(&under));
    }
    below.extend(added);
    Ok(below)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn later_layers_and_whiteouts_win() {
        let all: Wanted = |p| !p.ends_with("skip");
        let files = apply_layer(
            BTreeMap::new(),
            &layer(&[
                ("etc/a", b"1"),
                ("etc/b", b"1"),
                ("opt/x/y", b"1"),
                ("var/skip", b"1"),
                ("lib/old", b"1"),
            ]),
            all,
        )
        .unwrap();
        assert_eq!(files.len(), 4);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            &layer(&[
                ("./etc/a", b"2"),
                ("etc/.wh.b", b""),
                ("opt/.wh.x", b""),
                ("lib/.wh..wh..opq", b""),
                ("lib/new", b"2"),
            ]),
        )
        .unwrap();
        let files = apply_layer(files, &gz.finish().unwrap(), all).unwrap();
        let listed: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        assert_eq!(listed, [("etc/a", &b"2"[..]), ("lib/new", &b"2"[..])]);
        assert!(
            apply_layer(BTreeMap::new(), b"\x28\xb5\x2f\xfdxx", all)
                .unwrap_err()
                .contains("zstd")
        );
    }
}
