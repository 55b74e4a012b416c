//! Compiled components, kept so that a reload recompiles only what changed and a restart with
//! unchanged plugins compiles nothing.
//!
//! Components are keyed by the SHA-256 of their bytes. In memory the cache holds the components
//! the current configuration uses; on disk it holds wasmtime's precompiled artifacts, named by
//! content hash and the engine's compatibility hash (so a wasmtime upgrade or a different engine
//! configuration never reads a stale artifact).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The SHA-256 of a component's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// Where a component came from, for logs and the reload status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Already compiled in this process.
    Memory,
    /// Loaded from an artifact this gateway wrote earlier.
    Disk,
    /// Compiled now.
    Compiled,
}

pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    /// Names artifacts of this engine: wasmtime's compatibility hash, reduced to 64 bits.
    engine_tag: String,
    memory: Mutex<HashMap<ContentHash, Component>>,
}

impl ComponentCache {
    /// A cache that also keeps artifacts in `dir` (created if missing), or in memory only.
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> ComponentCache {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
            memory: Mutex::new(HashMap::new()),
        }
    }

    fn artifact_path(&self, hash: ContentHash) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{hash}-{}.cwasm", self.engine_tag)))
    }

    /// The compiled component for `bytes`: from memory, from disk, or compiled now.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Component, ContentHash, Origin), String> {
        let hash = ContentHash::of(bytes);
        if let Some(component) = self.lock().get(&hash) {
            return Ok((component.clone(), hash, Origin::Memory));
        }
        let artifact = self.artifact_path(hash);
        let (component, origin) = match artifact
            .as_deref()
            .and_then(|path| read_artifact(engine, path))
        {
            Some(component) => (component, Origin::Disk),
            None => {
                let component =
                    Component::from_binary(engine, bytes).map_err(|error| format!("{error:#}"))?;
                if let Some(path) = &artifact {
                    write_artifact(&component, path);
                }
                (component, Origin::Compiled)
            }
        };
        self.lock().insert(hash, component.clone());
        Ok((component, hash, origin))
    }

    /// Drops the in-memory components not in `keep`, once nothing serves with them any more.
    pub(crate) fn retain(&self, keep: &HashSet<ContentHash>) {
        self.lock().retain(|hash, _| keep.contains(hash));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContentHash, Component>> {
        // The map is only ever inserted into or filtered: a panic elsewhere cannot leave it
        // half-changed, so a poisoned lock is safe to keep using.
        self.memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Loads an artifact this gateway wrote; any problem (missing, truncated, from another engine)
/// means "compile instead", after removing a file that exists but cannot be used.
#[allow(unsafe_code)]
fn read_artifact(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: wasmtime requires that deserialized bytes come from `serialize` of a trusted
    // engine. This file lives in the gateway's own cache folder, under a name derived from the
    // SHA-256 of the component it was compiled from and this engine's compatibility hash, and
    // only `write_artifact` below creates such files (atomically, via rename). Wasmtime also
    // checks the header and engine compatibility and fails cleanly on a mismatch.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => Some(component),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "compiled artifact unusable; recompiling");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Writes an artifact atomically; a failure only costs the next restart a compilation.
fn write_artifact(component: &Component, path: &Path) {
    let written = (|| -> Result<(), String> {
        let bytes = component
            .serialize()
            .map_err(|error| format!("{error:#}"))?;
        let dir = path.parent().ok_or("no parent folder")?;
        std::fs::create_dir_all(dir).map_err(|error| error.to_string())?;
        let temporary = dir.join(format!(".{}.{}.tmp", std::process::id(), next_write_id()));
        std::fs::write(&temporary, bytes).map_err(|error| error.to_string())?;
        std::fs::rename(&temporary, path).map_err(|error| {
            let _ = std::fs::remove_file(&temporary);
            error.to_string()
        })
    })();
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot cache the compiled component");
    }
}

/// Distinguishes temporary files of concurrent writers in one process.
fn next_write_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
