//! End to end: a real containerd and a real registry in a network namespace
//! of this test; images pulled, resolved, refused when corrupt, imported.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{CreateRequest, DeleteRequest, GetImageRequest, InfoRequest};
use containerd_client::tonic::Code;
use hivemind::containerd::Containerd;
use hivemind::image::{ImageError, ImageStore, Progress};
use hivemind_tests::containerd::{TestContainerd, prerequisites};
use hivemind_tests::image::{OCI_MANIFEST, build_marker_image, build_test_image};
use hivemind_tests::netns::NetNs;
use hivemind_tests::registry::{REGISTRY_BIN, Registry};

const PORT: u16 = 5000;
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Records every progress event of one operation.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Progress>>>);

impl Recorder {
    fn callback(&self) -> impl Fn(Progress) + Send + Sync + use<> {
        let events = self.0.clone();
        move |p| events.lock().unwrap().push(p)
    }

    /// Like [`Recorder::callback`], and on the first Unpacking event (all
    /// blobs stored, nothing recorded yet) runs a full garbage collection
    /// before the pull goes on: only the pull's lease protects its blobs.
    fn callback_collecting_on_unpack(
        &self,
        socket: std::path::PathBuf,
    ) -> impl Fn(Progress) + Send + Sync + use<> {
        let events = self.0.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        move |p| {
            if matches!(p, Progress::Unpacking { .. })
                && !done.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async {
                            let cd = Containerd::connect(&socket).await.unwrap();
                            collect_garbage(&cd).await;
                        })
                })
                .join()
                .unwrap();
            }
            events.lock().unwrap().push(p);
        }
    }
    fn take(&self) -> Vec<Progress> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

fn downloaded_bytes(events: &[Progress]) -> u64 {
    events
        .iter()
        .filter_map(|e| match e {
            Progress::Layer { downloaded, .. } => Some(*downloaded),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Forces a synchronous garbage collection: deleting a lease with sync set
/// runs the collector before answering.
async fn collect_garbage(cd: &Containerd) {
    let mut leases = LeasesClient::new(cd.channel.clone());
    leases
        .create(cd.request(CreateRequest {
            id: "hm-test-gc".into(),
            labels: Default::default(),
        }))
        .await
        .unwrap();
    leases
        .delete(cd.request(DeleteRequest {
            id: "hm-test-gc".into(),
            sync: true,
        }))
        .await
        .unwrap();
}

async fn content_exists(cd: &Containerd, digest: &str) -> bool {
    match ContentClient::new(cd.channel.clone())
        .info(cd.request(InfoRequest {
            digest: digest.into(),
        }))
        .await
    {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => panic!("content info {digest}: {s}"),
    }
}

async fn image_record_exists(cd: &Containerd, name: &str) -> bool {
    match ImagesClient::new(cd.channel.clone())
        .get(cd.request(GetImageRequest { name: name.into() }))
        .await
    {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => panic!("image get {name}: {s}"),
    }
}

#[test]
fn pull_resolve_corrupt_and_import() {
    if !prerequisites(
        "image end-to-end test",
        &["containerd", "runc", "ip", REGISTRY_BIN, "/bin/busybox"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ns = NetNs::create(&format!("hm-image-{}", std::process::id())).unwrap();
    let daemon = TestContainerd::start(&ns, &tmp.path().join("containerd")).unwrap();
    let app = build_test_image(&tmp.path().join("app")).unwrap();
    let marker = build_marker_image(&tmp.path().join("marker"), "corrupt me").unwrap();
    let registry = Registry::start(&ns, &tmp.path().join("registry"), PORT).unwrap();
    registry.push(&ns, &app, "hm/test-app", "1").unwrap();
    registry.push(&ns, &marker, "hm/corrupt", "1").unwrap();
    // A multi-platform index: arm64 points at the marker image, amd64 at
    // the app; the pull must pick the app.
    registry.push(&ns, &app, "hm/multi", "amd64").unwrap();
    registry.push(&ns, &marker, "hm/multi", "arm64").unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            { "mediaType": OCI_MANIFEST, "digest": marker.manifest_digest, "size": marker.manifest.len(),
              "platform": { "os": "linux", "architecture": "arm64" } },
            { "mediaType": OCI_MANIFEST, "digest": app.manifest_digest, "size": app.manifest.len(),
              "platform": { "os": "linux", "architecture": "amd64" } },
        ],
    }))
    .unwrap();
    registry
        .push_manifest(&ns, "hm/multi", "1", OCI_INDEX, &index)
        .unwrap();
    let index_digest = hivemind_tests::image::digest(&index);
    // Same length, different bytes: only the digest check can notice.
    let blob = registry.blob_path(&marker.layer_digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let archive = tmp.path().join("app.tar");
    app.write_oci_archive_named(&archive, "localhost/hm/imported:2")
        .unwrap();
    let docker_archive = tmp.path().join("marker-docker.tar");
    marker
        .write_docker_archive(&docker_archive, "hm/saved:3")
        .unwrap();

    let host = registry.host();
    let socket = daemon.socket.clone();
    let result = ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                tokio::time::timeout(
                    Duration::from_secs(240),
                    scenario(
                        socket,
                        host,
                        app,
                        marker,
                        index_digest,
                        [archive, docker_archive],
                    ),
                )
                .await
                .expect("scenario timed out")
            })
    });
    if let Err(e) = &result {
        eprintln!("containerd log:\n{}", daemon.log_tail());
        panic!("{e:#}");
    }
    drop(registry);
    drop(daemon);
    drop(ns);
}

async fn scenario(
    socket: std::path::PathBuf,
    host: String,
    app: hivemind_tests::image::TestImage,
    marker: hivemind_tests::image::TestImage,
    index_digest: String,
    [archive, docker_archive]: [std::path::PathBuf; 2],
) {
    let cd = Containerd::connect(&socket).await.unwrap();
    let store = ImageStore::new(cd.clone(), vec![]);
    let reference = format!("{host}/hm/test-app:1");
    let recorder = Recorder::default();
    let progress = recorder.callback();

    // Nothing local yet.
    assert_eq!(store.resolve(&reference).await.unwrap(), None);

    // First pull downloads, unpacks and records, even with a garbage
    // collection in the middle.
    let collecting = recorder.callback_collecting_on_unpack(socket.clone());
    let pulled = store.pull(&reference, &collecting).await.unwrap();
    let events = recorder.take();
    assert_eq!(pulled.name, reference);
    assert_eq!(pulled.digest, app.manifest_digest);
    assert_eq!(pulled.chain_id, app.chain_id);
    assert_eq!(pulled.config.entrypoint, vec!["/bin/hm-test-app"]);
    assert_eq!(pulled.config.env, vec!["PATH=/bin", "GREETING=default"]);
    assert_eq!(pulled.config.working_dir.as_deref(), Some("/"));
    let layer_size = app.blobs[1].1.len() as u64;
    assert_eq!(downloaded_bytes(&events), layer_size, "{events:?}");
    assert!(
        matches!(events.first(), Some(Progress::Resolving { reference: r }) if *r == reference),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::Unpacking { digest } if *digest == app.layer_digest)),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(Progress::Done { image, digest }) if *image == reference && *digest == app.manifest_digest),
        "{events:?}"
    );

    // Local resolution agrees, without the network.
    let resolved = store.resolve(&reference).await.unwrap().unwrap();
    assert_eq!(resolved, pulled);

    // The GC labels keep content and snapshots alive once the lease is gone.
    collect_garbage(&cd).await;
    let resolved = store.resolve(&reference).await.unwrap();
    assert_eq!(
        resolved.as_ref(),
        Some(&pulled),
        "image lost to garbage collection"
    );
    assert!(content_exists(&cd, &app.layer_digest).await);

    // A second pull downloads nothing; ensure() does not even ask.
    let again = store.pull(&reference, &progress).await.unwrap();
    assert_eq!(again, pulled);
    let events = recorder.take();
    assert_eq!(downloaded_bytes(&events), 0, "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Progress::Unpacking { .. })),
        "{events:?}"
    );
    let ensured = store.ensure(&reference, &progress).await.unwrap();
    assert_eq!(ensured, pulled);
    assert!(recorder.take().is_empty());

    // A tag the registry does not have.
    let missing = format!("{host}/hm/test-app:nope");
    let err = store.pull(&missing, &progress).await.unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing), "{err}");
    recorder.take();

    // A corrupted blob: refused, and nothing stored or recorded.
    let corrupt = format!("{host}/hm/corrupt:1");
    let err = store.pull(&corrupt, &progress).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&marker.layer_digest), "{err}");
    assert!(!image_record_exists(&cd, &corrupt).await);
    assert!(!content_exists(&cd, &marker.layer_digest).await);
    assert_eq!(store.resolve(&corrupt).await.unwrap(), None);
    recorder.take();

    // A multi-platform index: linux/amd64 chosen, the index is the digest,
    // and the index's GC label keeps the chosen manifest alive.
    let multi = format!("{host}/hm/multi:1");
    let pulled_multi = store.pull(&multi, &progress).await.unwrap();
    assert_eq!(pulled_multi.digest, index_digest);
    assert_eq!(pulled_multi.chain_id, app.chain_id);
    assert_eq!(pulled_multi.config, pulled.config);
    collect_garbage(&cd).await;
    assert_eq!(store.resolve(&multi).await.unwrap(), Some(pulled_multi));
    recorder.take();

    // An invalid reference never reaches the network.
    let err = store
        .pull("localhost:5000/FOO", &progress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be lowercase"), "{err}");

    // Import of the same image as an OCI archive, under a fresh name.
    let imported = store.import_archive(&archive, &progress).await.unwrap();
    assert_eq!(imported.len(), 1, "{imported:?}");
    let image = &imported[0];
    assert_eq!(image.name, "localhost/hm/imported:2");
    assert_eq!(image.digest, app.manifest_digest);
    assert_eq!(image.chain_id, app.chain_id);
    assert_eq!(image.config, pulled.config);
    let resolved = store.resolve("localhost/hm/imported:2").await.unwrap();
    assert_eq!(resolved.as_ref(), Some(image));
    recorder.take();

    // A legacy docker-save archive: uncompressed layers, a new snapshot.
    let saved = store
        .import_archive(&docker_archive, &progress)
        .await
        .unwrap();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(saved[0].name, "docker.io/hm/saved:3");
    assert_eq!(saved[0].chain_id, marker.chain_id);
    assert_eq!(saved[0].config.cmd, vec!["/marker"]);
    let events = recorder.take();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::Unpacking { .. })),
        "{events:?}"
    );
    collect_garbage(&cd).await;
    assert_eq!(
        store.resolve("hm/saved:3").await.unwrap().as_ref(),
        Some(&saved[0])
    );

    eprintln!(
        "pulled {} ({}, snapshot {}), refused {corrupt}, imported {}",
        pulled.name, pulled.digest, pulled.chain_id, image.name
    );
}
