//! HTTP service discovery: `/sd/<job>` answers the job's target groups (200,
//! `application/json`, the whole list every time), `/devices` every device inventory knows.
//! Answers are rendered once per change of the list and served as they are, so a request
//! costs a lock and a copy of a reference.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::metrics::Metrics;

/// What is served, rendered.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Job → its target groups' JSON.
    pub jobs: HashMap<String, Bytes>,
    /// Every device's JSON.
    pub devices: Bytes,
}

/// The snapshot the agent replaces and the handlers read.
#[derive(Debug, Clone)]
pub struct Shared {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    metrics: Metrics,
}

impl Shared {
    pub fn new(metrics: Metrics) -> Shared {
        Shared {
            snapshot: Arc::default(),
            metrics,
        }
    }

    pub fn replace(&self, snapshot: Snapshot) {
        *self.snapshot.write().expect("snapshot lock") = Arc::new(snapshot);
    }

    /// What is served now.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().expect("snapshot lock"))
    }
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/sd/{job}", get(service_discovery))
        .route("/devices", get(devices))
        .with_state(shared)
}

async fn service_discovery(State(shared): State<Shared>, Path(job): Path<String>) -> Response {
    let snapshot = shared.current();
    match snapshot.jobs.get(&job) {
        Some(body) => {
            shared.metrics.sd_requests.with_label_values(&[&job]).inc();
            json(body.clone())
        }
        None => {
            let mut known: Vec<&str> = snapshot.jobs.keys().map(String::as_str).collect();
            known.sort_unstable();
            (
                StatusCode::NOT_FOUND,
                format!(
                    "no job '{job}'; the jobs are [[inventory.exporters]] in the site file: {}\n",
                    known.join(", ")
                ),
            )
                .into_response()
        }
    }
}

async fn devices(State(shared): State<Shared>) -> Response {
    json(shared.current().devices.clone())
}

fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn a_job_answers_its_json_and_an_unknown_job_is_named() {
        let registry = prometheus::Registry::new();
        let shared = Shared::new(Metrics::register(&registry).unwrap());
        let mut snapshot = Snapshot::default();
        snapshot
            .jobs
            .insert("node".into(), Bytes::from_static(b"[]"));
        shared.replace(snapshot);
        let app = router(shared);
        let request = |uri: &str| {
            axum::http::Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let answer = app.clone().oneshot(request("/sd/node")).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(answer.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"[]");
        let missing = app.oneshot(request("/sd/snmp")).await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(missing.into_body(), 1024)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("no job 'snmp'"));
    }
}
