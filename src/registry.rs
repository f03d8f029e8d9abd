//! The schema registry: writer schemas by id, fetched once and kept.
//!
//! Invariant: an id the registry answered is kept for the life of the process (a registry never
//! changes what an id names), at most [`MAX_CACHED`] of them; a failed fetch is never kept, so
//! every failure (an outage, credentials refused, an id the registry does not know yet) is the
//! caller's to retry, and the message waits rather than being dead-lettered: the message is
//! fine, the registry is not. The client uses the `schema_registry_converter` crate's
//! `GET /schemas/ids/{id}`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_subjects, get_schema_by_id,
};
use schema_registry_converter::schema_registry_common::SchemaType;

use crate::config::RegistryConfig;
use crate::contract::WriterSchema;
use crate::error::Error;

/// Distinct schema ids kept; a topic's producers use a handful. Past it the cache starts over.
const MAX_CACHED: usize = 10_000;

/// Why a writer schema could not be had now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema registry, schema id {id}: {reason}")]
pub struct Unavailable {
    pub id: u32,
    pub reason: String,
}

#[derive(Debug)]
pub struct SchemaRegistry {
    cfg: RegistryConfig,
    url: String,
    cache: RwLock<HashMap<u32, Arc<WriterSchema>>>,
}

impl SchemaRegistry {
    /// The registry `cfg` names, if any. Its credentials files must be readable now: a wrong
    /// path is a configuration error, not an outage.
    pub fn new(cfg: &RegistryConfig) -> Result<Option<Arc<Self>>, Error> {
        let Some(url) = &cfg.schema_registry_url else {
            return Ok(None);
        };
        let registry = Self {
            cfg: cfg.clone(),
            url: url.trim_end_matches('/').to_owned(),
            cache: RwLock::default(),
        };
        registry.settings()?;
        Ok(Some(Arc::new(registry)))
    }

    /// The writer schema `id` names, if already fetched.
    pub fn cached(&self, id: u32) -> Option<Arc<WriterSchema>> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// The writer schema `id` names: from the cache, or fetched once.
    pub async fn writer_schema(&self, id: u32) -> Result<Arc<WriterSchema>, Unavailable> {
        if let Some(schema) = self.cached(id) {
            return Ok(schema);
        }
        let unavailable = |reason: String| Unavailable { id, reason };
        let settings = self.settings().map_err(|e| unavailable(e.to_string()))?;
        let registered = get_schema_by_id(id, &settings)
            .await
            .map_err(|e| unavailable(describe(&e.error, e.cause.as_deref())))?;
        let schema_type = match &registered.schema_type {
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
            SchemaType::Json => "JSON",
            SchemaType::Other(other) => other.as_str(),
            _ => "an unknown type",
        };
        let schema = Arc::new(WriterSchema::parse(schema_type, &registered.schema));
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(id, Arc::clone(&schema));
        Ok(schema)
    }

    /// How many subjects the registry lists (`GET /subjects`): whether it answers and takes the
    /// credentials, for `order-worker check`.
    pub async fn subjects(&self) -> Result<usize, String> {
        let settings = self.settings().map_err(|e| e.to_string())?;
        get_all_subjects(&settings)
            .await
            .map(|s| s.len())
            .map_err(|e| describe(&e.error, e.cause.as_deref()))
    }

    /// The client settings, credentials read from their files now.
    fn settings(&self) -> Result<SrSettings, Error> {
        let mut builder = SrSettings::new_builder(self.url.clone());
        builder.set_timeout(self.cfg.schema_registry_timeout);
        if let Some(path) = &self.cfg.schema_registry_basic_auth_file {
            let text = read_secret(path, "SCHEMA_REGISTRY_BASIC_AUTH_FILE")?;
            let (user, password) = text.split_once(':').ok_or_else(|| {
                Error::Config(format!(
                    "SCHEMA_REGISTRY_BASIC_AUTH_FILE {} must hold user:password",
                    path.display()
                ))
            })?;
            builder.set_basic_authorization(user, Some(password));
        }
        if let Some(path) = &self.cfg.schema_registry_bearer_token_file {
            let token = read_secret(path, "SCHEMA_REGISTRY_BEARER_TOKEN_FILE")?;
            builder.set_token_authorization(&token);
        }
        builder
            .build()
            .map_err(|e| Error::Config(format!("schema registry client: {}", e.error)))
    }
}

/// A secret file's text without its trailing newline; the error names the file, never its text.
fn read_secret(path: &Path, setting: &str) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{setting} {} cannot be read: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The crate's error text made readable: an HTTP status in full, a cause when there is one.
fn describe(error: &str, cause: Option<&str>) -> String {
    match cause {
        Some(cause) if !cause.is_empty() => format!("{error} ({cause})"),
        _ => error.to_owned(),
    }
}
