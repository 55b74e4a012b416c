//! API keys: stored only as SHA-256 hashes, compared in constant time.
//!
//! The presented key is hashed once and compared with every configured hash without stopping
//! at a match, so the time taken says nothing about which key, or how much of one, matched.
//! Keys kept in the key-value store are looked up by their hash (`apikey:<hex>`), so the store
//! never holds a key either.

use std::collections::BTreeSet;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use gateway_sdk::kv;

use crate::config::ApiKeysConfig;
use crate::error::Error;
use crate::identity::{Code, Identity, Method, Refusal};

pub(crate) struct ApiKeys {
    pub(crate) header: String,
    pub(crate) query: Option<String>,
    keys: Vec<([u8; 32], Consumer)>,
    in_kv: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Consumer {
    consumer: String,
    #[serde(default)]
    roles: Vec<String>,
}

impl ApiKeys {
    pub(crate) fn new(config: ApiKeysConfig) -> Result<Self, Error> {
        let mut keys = Vec::with_capacity(config.keys.len());
        for key in config.keys {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(key.sha256.trim(), &mut hash).map_err(|_| Error::ApiKeyHash {
                consumer: key.consumer.clone(),
            })?;
            keys.push((
                hash,
                Consumer {
                    consumer: key.consumer,
                    roles: key.roles,
                },
            ));
        }
        Ok(ApiKeys {
            header: config.header.to_ascii_lowercase(),
            query: config.query,
            keys,
            in_kv: config.kv,
        })
    }

    /// The consumer the key belongs to.
    pub(crate) fn authenticate(&self, presented: &str) -> Result<Identity, Refusal> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&Consumer> = None;
        for (candidate, consumer) in &self.keys {
            if bool::from(candidate.ct_eq(&hash)) {
                found = Some(consumer);
            }
        }
        let consumer = match found {
            Some(consumer) => consumer.clone(),
            None if self.in_kv => self.stored(&hash)?,
            None => return Err(Refusal::invalid("unknown API key")),
        };
        Ok(Identity {
            subject: consumer.consumer.clone(),
            consumer: Some(consumer.consumer),
            roles: consumer
                .roles
                .into_iter()
                .filter(|role| !role.is_empty() && !role.contains(','))
                .collect::<BTreeSet<_>>(),
            method: Method::ApiKey,
            headers: Vec::new(),
        })
    }

    fn stored(&self, hash: &[u8; 32]) -> Result<Consumer, Refusal> {
        let key = format!("apikey:{}", hex::encode(hash));
        match kv::get(&key) {
            Ok(Some(value)) => serde_json::from_slice(&value).map_err(|error| {
                Refusal::invalid(format!(
                    "the stored API key entry `{key}` is not valid: {error}"
                ))
            }),
            Ok(None) => Err(Refusal::invalid("unknown API key")),
            Err(error) if error.is_unavailable() => Err(Refusal::new(
                Code::Unavailable,
                format!("cannot look the API key up: {error}"),
            )),
            Err(error) => Err(Refusal::invalid(format!(
                "cannot look the API key up: {error}"
            ))),
        }
    }
}
