//! Integration tests: the worker against a real PostgreSQL and real Kafka-protocol brokers
//! (librdkafka's mock cluster in-process, tansu as a separate process). One binary, run with
//! `cargo nextest run` (each test in its own process, so each has its own metrics registry).

mod helpers;

mod aws_msk_iam;
mod check;
mod configuration;
mod contract_v2;
mod dead_letter_headers;
mod dead_letter_topic;
mod dead_letters;
mod deploy;
mod e2e;
mod encodings;
mod faults;
mod hostile;
mod kafka_auth;
mod layers;
mod migrations;
mod misconfig;
mod observability;
mod pipeline;
mod poison;
mod schema;
mod schema_v2;
mod security;
mod stalls;
mod trace_context;
mod validate;
mod write_stalls;
