//! The Wasm engine every filter runs on, and loading a filter component into it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use gateway_config::{FilterDefinition, MAX_MEMORY_LIMIT};

use crate::bindings::{Filter, FilterPre};
use crate::cache::{ComponentCache, ContentHash, Origin};
use crate::instance::InstanceState;
use crate::kv::KvStore;
use crate::metrics::MetricRegistry;
use crate::ticker::EpochTicker;
use crate::{Error, Result, WIT_PACKAGE, WIT_VERSION};

/// Instance slots the pooling allocator reserves up front. Each live filter instance holds one;
/// past this, new instances fail and requests get `FILTER_UNAVAILABLE`.
const INSTANCE_SLOTS: u32 = 2_000;

/// The shared engine, the linker holding the host capabilities, and the epoch ticker.
pub struct FilterEngine {
    engine: Engine,
    linker: Linker<InstanceState>,
    kv: Arc<KvStore>,
    metrics: Arc<MetricRegistry>,
    ticker: Arc<EpochTicker>,
    cache: ComponentCache,
}

/// A compiled, type-checked filter component, ready to instantiate.
pub struct LoadedFilter {
    pub name: Arc<str>,
    pub settings: FilterDefinition,
    /// The SHA-256 of the component's bytes.
    pub hash: ContentHash,
    /// Whether it was compiled now, or found compiled in memory or on disk.
    pub origin: Origin,
    pub(crate) pre: FilterPre<InstanceState>,
    pub(crate) kv: Arc<KvStore>,
    pub(crate) metrics: Arc<MetricRegistry>,
    pub(crate) ticker: Arc<EpochTicker>,
}

impl LoadedFilter {
    /// The same filter with a key-value store and metrics of its own: `plugin test` runs each
    /// case from a clean state this way.
    pub fn with_state(&self, kv: Arc<KvStore>, metrics: Arc<MetricRegistry>) -> LoadedFilter {
        LoadedFilter {
            name: self.name.clone(),
            settings: self.settings.clone(),
            hash: self.hash,
            origin: self.origin,
            pre: self.pre.clone(),
            kv,
            metrics,
            ticker: self.ticker.clone(),
        }
    }
}

impl FilterEngine {
    /// The engine, with a key-value store bounded by `kv_limits` shared by every filter it loads,
    /// and compiled components kept in `cache_dir` (memory only if `None`).
    pub fn new(
        kv_limits: gateway_rules::kv::Limits,
        cache_dir: Option<PathBuf>,
    ) -> Result<FilterEngine> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(INSTANCE_SLOTS)
            .total_memories(INSTANCE_SLOTS)
            .total_core_instances(INSTANCE_SLOTS * 4)
            .total_tables(INSTANCE_SLOTS * 4)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(MAX_MEMORY_LIMIT.as_usize());
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(|error| Error::Engine(format!("{error:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| {
                Filter::add_to_linker::<_, wasmtime::component::HasSelf<InstanceState>>(
                    &mut linker,
                    |state| state,
                )
            })
            .map_err(|error| Error::Engine(format!("{error:#}")))?;

        let ticker = EpochTicker::start(&engine)
            .map_err(|error| Error::Engine(format!("cannot start the epoch ticker: {error}")))?;

        Ok(FilterEngine {
            cache: ComponentCache::new(&engine, cache_dir),
            engine,
            linker,
            kv: Arc::new(KvStore::new(kv_limits)),
            metrics: Arc::default(),
            ticker,
        })
    }

    /// Compiles a component and checks it is a filter for a compatible WIT version whose imports
    /// the gateway provides.
    pub fn load(
        &self,
        name: &str,
        path: &Path,
        settings: &FilterDefinition,
    ) -> Result<LoadedFilter> {
        let refuse = |reason: String| Error::Load {
            filter: name.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|error| refuse(format!("cannot read: {error}")))?;
        if !bytes.starts_with(b"\0asm") {
            return Err(refuse("not a WebAssembly file".to_owned()));
        }
        let (component, hash, origin) =
            self.cache
                .component(&self.engine, &bytes)
                .map_err(|error| {
                    if is_core_module(&bytes) {
                        refuse(
                            "a core Wasm module, not a component: build it for wasm32-wasip2"
                                .to_owned(),
                        )
                    } else {
                        refuse(format!("not a valid component: {error}"))
                    }
                })?;
        check_wit_version(&self.engine, &component).map_err(refuse)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|error| refuse(format!("cannot be linked: {error:#}")))?;
        let pre = FilterPre::new(pre).map_err(|error| refuse(format!("{error:#}")))?;
        Ok(LoadedFilter {
            name: Arc::from(name),
            settings: settings.clone(),
            hash,
            origin,
            pre,
            kv: self.kv.clone(),
            metrics: self.metrics.clone(),
            ticker: self.ticker.clone(),
        })
    }

    /// The metrics every filter loaded by this engine declared.
    pub fn metrics(&self) -> &Arc<MetricRegistry> {
        &self.metrics
    }

    /// Forgets compiled components other than `keep`, after a reload stopped using them.
    pub fn retain_components(&self, keep: &HashSet<ContentHash>) {
        self.cache.retain(keep);
    }
}

/// A core module and a component share the magic; the version field after it differs.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(&[1, 0, 0, 0])
}

/// Finds the version of the filter contract the component exports and refuses an incompatible
/// one by name, before linking would fail with a less helpful type error.
fn check_wit_version(engine: &Engine, component: &Component) -> Result<(), String> {
    let handler_prefix = format!("{WIT_PACKAGE}/handler");
    let component_type = component.component_type();
    let exported = component_type
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| name.starts_with(&handler_prefix));
    let Some(export) = exported else {
        return Err(format!(
            "does not export `{handler_prefix}@{WIT_VERSION}`: it is not a gateway filter"
        ));
    };
    let version = export
        .strip_prefix(&handler_prefix)
        .and_then(|rest| rest.strip_prefix('@'))
        .unwrap_or("(no version)");
    if compatible(version, WIT_VERSION) {
        Ok(())
    } else {
        Err(format!(
            "built for {WIT_PACKAGE}@{version}, but this gateway provides {WIT_PACKAGE}@{WIT_VERSION}; rebuild the filter against {WIT_VERSION}"
        ))
    }
}

/// Semver compatibility as the component model applies it: same major, and for 0.x the same
/// minor; a component may not need a newer minor (or patch, for 0.x) than the host provides.
fn compatible(component: &str, host: &str) -> bool {
    let parse = |version: &str| -> Option<(u64, u64, u64)> {
        let mut parts = version.split('-').next()?.split('.');
        let numbers = (
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
        );
        parts.next().is_none().then_some(numbers)
    };
    match (parse(component), parse(host)) {
        (Some((0, c_minor, c_patch)), Some((0, h_minor, h_patch))) => {
            c_minor == h_minor && c_patch <= h_patch
        }
        (Some((c_major, c_minor, _)), Some((h_major, h_minor, _))) => {
            c_major == h_major && c_minor <= h_minor
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn versions_are_compatible_the_component_model_way() {
        let cases = [
            ("0.1.0", "0.1.0", true),
            ("0.1.0", "0.1.3", true),
            ("0.1.4", "0.1.3", false),
            ("0.2.0", "0.1.0", false),
            ("0.1.0", "0.2.0", false),
            ("1.0.0", "1.2.0", true),
            ("1.3.0", "1.2.0", false),
            ("2.0.0", "1.0.0", false),
            ("(no version)", "0.1.0", false),
            ("0.1", "0.1.0", false),
        ];
        for (component, host, expected) in cases {
            assert_eq!(
                compatible(component, host),
                expected,
                "{component} on {host}"
            );
        }
    }
}
