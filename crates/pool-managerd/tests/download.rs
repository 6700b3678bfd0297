//! model_ref = http(s) URL: the download resumes with an HTTP Range request after the
//! transfer broke mid-body, and the result is checksummed (UNTRUSTED_ARTIFACT on mismatch).
//! Against a real HTTP server on 127.0.0.1 that honours Range and cuts its first response.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use pool_managerd::artifacts::{ArtifactError, Artifacts};
use sha2::Digest;

#[derive(Clone, Default)]
struct Served {
    data: Arc<Vec<u8>>,
    /// Range header of every request (None when absent).
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    /// Cut the first full-body response after this many bytes.
    cut_first_at: Option<usize>,
}

async fn model(State(s): State<Served>, headers: HeaderMap) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let n = {
        let mut r = s.ranges.lock().unwrap();
        r.push(range.clone());
        r.len()
    };
    let total = s.data.len();
    if let Some(r) = range {
        let start: usize = r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        if start >= total {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .body(Body::empty())
                .unwrap();
        }
        return Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, total - start)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{total}", total - 1),
            )
            .body(Body::from(s.data[start..].to_vec()))
            .unwrap();
    }
    let body = match s.cut_first_at {
        // The first response promises every byte, sends some, then breaks the connection.
        Some(cut) if n == 1 => {
            let head = bytes::Bytes::from(s.data[..cut].to_vec());
            // The pause lets the head reach the client before the connection breaks.
            Body::from_stream(futures::StreamExt::then(
                futures::stream::iter(vec![Ok(head), Err(std::io::Error::other("connection cut"))]),
                |item| async move {
                    if item.is_err() {
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    }
                    item
                },
            ))
        }
        _ => Body::from(s.data.to_vec()),
    };
    Response::builder()
        .header(header::CONTENT_LENGTH, total)
        .header(header::ACCEPT_RANGES, "bytes")
        .body(body)
        .unwrap()
}

async fn serve(s: Served) -> String {
    let app = axum::Router::new()
        .route("/m.gguf", get(model))
        .with_state(s);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/m.gguf")
}

fn payload() -> Vec<u8> {
    (0..300_000u32)
        .flat_map(|i| (i * 7919).to_le_bytes())
        .collect()
}

#[tokio::test]
async fn broken_download_resumes_with_range_and_verifies() {
    let data = payload();
    let digest = hex::encode(sha2::Sha256::digest(&data));
    let cut = data.len() / 3;
    let s = Served {
        data: Arc::new(data.clone()),
        cut_first_at: Some(cut),
        ..Default::default()
    };
    let url = serve(s.clone()).await;
    let cache = tempfile::tempdir().unwrap();
    let a = Artifacts::new(cache.path(), None);
    let path = a.resolve(&url, Some(&digest)).await.unwrap();

    let ranges = s.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    // The second request continued where the first broke off.
    let resumed_at: usize = ranges[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Range request: {ranges:?}"));
    assert!(
        resumed_at > 0 && resumed_at <= cut,
        "resumed at {resumed_at}"
    );
    assert_eq!(
        pool_managerd::provision::sha256_file(&path).unwrap(),
        digest
    );
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert!(path.starts_with(cache.path()));
    assert!(
        !path.with_extension("part").exists()
            && !cache
                .path()
                .join(format!("models/sha256-{digest}.part"))
                .exists()
    );

    // Cached: a second resolve does not touch the network.
    a.resolve(&url, Some(&digest)).await.unwrap();
    assert_eq!(s.ranges.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn partial_file_from_an_earlier_run_is_resumed() {
    let data = payload();
    let digest = hex::encode(sha2::Sha256::digest(&data));
    let s = Served {
        data: Arc::new(data.clone()),
        ..Default::default()
    };
    let url = serve(s.clone()).await;
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("models")).unwrap();
    let half = data.len() / 2;
    std::fs::write(
        cache.path().join(format!("models/sha256-{digest}.part")),
        &data[..half],
    )
    .unwrap();
    let path = Artifacts::new(cache.path(), None)
        .download(&url, &digest)
        .await
        .unwrap();
    assert_eq!(
        s.ranges.lock().unwrap().clone(),
        vec![Some(format!("bytes={half}-"))]
    );
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[tokio::test]
async fn sha_mismatch_is_untrusted_and_nothing_is_kept() {
    let data = payload();
    let wrong = "0".repeat(64);
    let s = Served {
        data: Arc::new(data),
        ..Default::default()
    };
    let url = serve(s).await;
    let cache = tempfile::tempdir().unwrap();
    let a = Artifacts::new(cache.path(), None);
    let err = a.resolve(&url, Some(&wrong)).await.unwrap_err();
    assert!(matches!(err, ArtifactError::Untrusted(_)), "{err}");
    assert!(err.to_string().starts_with("UNTRUSTED_ARTIFACT"), "{err}");
    assert_eq!(err.code(), api_types::ErrorCode::UntrustedArtifact);
    // Neither the file nor a partial that a later run would resume.
    let left: Vec<_> = std::fs::read_dir(cache.path().join("models"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn catalog_ref_resolves_through_the_entry() {
    let data = payload();
    let digest = hex::encode(sha2::Sha256::digest(&data));
    let s = Served {
        data: Arc::new(data.clone()),
        ..Default::default()
    };
    let url = serve(s).await;
    let dir = tempfile::tempdir().unwrap();
    let cat = Arc::new(pool_managerd::catalog::Catalog::open(&dir.path().join("state")).unwrap());
    let a = Artifacts::new(&dir.path().join("cache"), Some(cat.clone()));
    let r = format!("sha256:{digest}");
    assert!(matches!(
        a.resolve(&r, None).await.unwrap_err(),
        ArtifactError::NotInCatalog(_)
    ));
    cat.register(&url, &digest).unwrap();
    let path = a.resolve(&r, None).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    // Deprecated and Retired entries are not loaded (MODEL_DEPRECATED).
    let v = api_types::Verification {
        result: api_types::VerificationResult::Passed,
        at_ms: 1,
        actual_sha256: Some(digest.clone()),
        detail: None,
    };
    cat.record_verification(&digest, &v, None).unwrap();
    cat.set_state(&digest, api_types::ModelState::Active)
        .unwrap();
    cat.set_state(&digest, api_types::ModelState::Deprecated)
        .unwrap();
    let err = a.resolve(&r, None).await.unwrap_err();
    assert_eq!(err.code(), api_types::ErrorCode::ModelDeprecated, "{err}");
}
