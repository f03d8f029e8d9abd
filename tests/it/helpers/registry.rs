//! A schema registry stand-in: no Confluent Schema Registry can be installed on this machine, so
//! the tests run this small server, which follows Confluent Schema Registry's documented REST API
//! (docs.confluent.io/platform/current/schema-registry/develop/api.html) for the only endpoints
//! the Confluent serializers and the worker call:
//! - `POST /subjects/{subject}/versions`: register; the same schema text gets the same id;
//! - `GET /schemas/ids/{id}`: `{"schema", "schemaType"}` (left out for Avro, as the registry does),
//!   404 with error code 40403 for an id it does not know;
//! - `GET /subjects`: the subjects registered (`order-worker check`).
//!
//! It can stop (connections refused: an outage) and restart on the same port with the same
//! schemas and ids, and it logs each request.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Store {
    /// (schemaType, schema text) by id; ids start at 1.
    schemas: Vec<(String, String)>,
    subjects: Vec<String>,
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Store>>;

pub struct TestRegistry {
    pub url: String,
    port: u16,
    store: Shared,
    server: Option<JoinHandle<()>>,
}

impl TestRegistry {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut registry = Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            store: Shared::default(),
            server: None,
        };
        registry.serve(listener);
        registry
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/subjects/{subject}/versions", post(register))
            .route("/schemas/ids/{id}", get(by_id))
            .route("/subjects", get(subjects))
            .with_state(self.store.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Stops answering: connections are refused until [`TestRegistry::restart`].
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port, with the same schemas.
    pub async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the registry's port is free again");
        self.serve(listener);
    }

    /// Method and path of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.store.lock().unwrap().requests.clone()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({"error_code": code, "message": message})),
    )
        .into_response()
}

async fn register(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut store = store.lock().unwrap();
    store
        .requests
        .push(format!("POST /subjects/{subject}/versions"));
    let Some(schema) = body["schema"].as_str() else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
    };
    let kind = body["schemaType"].as_str().unwrap_or("AVRO").to_owned();
    if !store.subjects.contains(&subject) {
        store.subjects.push(subject);
    }
    let entry = (kind, schema.to_owned());
    let id = match store.schemas.iter().position(|s| *s == entry) {
        Some(i) => i + 1,
        None => {
            store.schemas.push(entry);
            store.schemas.len()
        }
    };
    Json(json!({"id": id})).into_response()
}

async fn subjects(State(store): State<Shared>) -> Response {
    let mut store = store.lock().unwrap();
    store.requests.push("GET /subjects".to_owned());
    Json(json!(store.subjects)).into_response()
}

async fn by_id(State(store): State<Shared>, Path(id): Path<usize>) -> Response {
    let mut store = store.lock().unwrap();
    store.requests.push(format!("GET /schemas/ids/{id}"));
    let Some((kind, schema)) = id.checked_sub(1).and_then(|i| store.schemas.get(i)) else {
        return error(StatusCode::NOT_FOUND, 40403, "Schema not found");
    };
    let mut body = json!({"schema": schema});
    if kind != "AVRO" {
        body["schemaType"] = json!(kind);
    }
    Json(body).into_response()
}
