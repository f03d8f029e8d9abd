//! W3C trace context: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the worker exports its batch
//! spans over OTLP/HTTP, and the span of the batch that applied a message links to the trace
//! its `traceparent` header names. The collector here is a stand-in following the OTLP/HTTP
//! specification's one endpoint the exporter calls (`POST /v1/traces`, a protobuf
//! `ExportTraceServiceRequest`); no OpenTelemetry Collector can be installed on this machine.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use order_worker::synth::event;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use crate::helpers::kafka::{Mock, OffsetProbe};
use crate::helpers::pg::TestDb;
use crate::helpers::{Binary, eventually, unique};

/// Spans the stand-in collector received.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

impl Collector {
    async fn start(&self) -> String {
        let spans = self.0.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let spans = spans.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut spans = spans.lock().unwrap();
                    for r in request.resource_spans {
                        for s in r.scope_spans {
                            spans.extend(s.spans);
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    Vec::<u8>::new()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// The trace ids (hex) the received `batch` spans link to.
    fn linked_traces(&self) -> BTreeSet<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == "batch")
            .flat_map(|s| s.links.iter().map(|l| hex(&l.trace_id)))
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_span_links_to_the_trace_each_message_carries_and_is_exported_over_otlp() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &mock.brokers)
        .create()
        .unwrap();
    let traces: Vec<String> = (0..3)
        .map(|_| Uuid::new_v4().simple().to_string())
        .collect();
    for (i, trace) in traces.iter().enumerate() {
        let order = Uuid::new_v4();
        let parent = format!("00-{trace}-b7ad6b7169203331-01");
        let headers = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(&parent),
        });
        let (key, value) = (order.to_string(), event(order, 1, i as u64).to_json());
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let untraced = Uuid::new_v4();
    let (key, value) = (untraced.to_string(), event(untraced, 1, 9).to_json());
    producer
        .send(
            FutureRecord::to(&topic).key(&key).payload(&value),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let _worker = Binary::run_with_env(&mock.brokers, &db.url, &topic, &group, &[], &env);
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up("all four applied")
        .await;
    let expected: BTreeSet<String> = traces.into_iter().collect();
    eventually(
        "the batch spans reach the collector with their links",
        Duration::from_secs(30),
        || async { collector.linked_traces() == expected },
    )
    .await;
}
