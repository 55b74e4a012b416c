//! The Wasm engine every filter runs on, and loading a filter component into it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, ComponentExportIndex, InstancePre};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use gateway_config::{FilterDefinition, MAX_MEMORY_LIMIT};
use gateway_kv::{KvBackend, KvStores};

use crate::bindings::{FilterPre, Linkers};
use crate::cache::{ComponentCache, ContentHash, Origin};
use crate::instance::InstanceState;
use crate::metrics::MetricRegistry;
use crate::ticker::EpochTicker;
use crate::{Error, Result, WIT_PACKAGE, WIT_VERSION};

/// Instance slots the pooling allocator reserves up front. Each live filter instance holds one;
/// past this, new instances fail and requests get `FILTER_UNAVAILABLE`.
const INSTANCE_SLOTS: u32 = 2_000;

/// Calls in progress at once, suspended ones included: each runs on a stack of its own, taken
/// from the pool for the call. Past this, calls fail and requests get `FILTER_UNAVAILABLE`.
const CALL_STACKS: u32 = 1_000;

/// Where a filter's exports are, found once per component.
#[derive(Clone)]
pub(crate) struct HandlerExports {
    pub(crate) init: ComponentExportIndex,
    pub(crate) on_request: ComponentExportIndex,
    pub(crate) on_response: ComponentExportIndex,
}

impl HandlerExports {
    fn of(component: &Component, handler: &str) -> Result<HandlerExports, String> {
        let interface = component
            .get_export_index(None, handler)
            .ok_or_else(|| format!("does not export `{handler}`"))?;
        let function = |name: &str| {
            component
                .get_export_index(Some(&interface), name)
                .ok_or_else(|| format!("`{handler}` has no function `{name}`"))
        };
        Ok(HandlerExports {
            init: function("init")?,
            on_request: function("on-request")?,
            on_response: function("on-response")?,
        })
    }
}

/// The shared engine, the linkers holding the host capabilities, and the epoch ticker.
pub struct FilterEngine {
    engine: Engine,
    linkers: Linkers,
    kv: KvStores,
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
    /// Linked for calls that may wait (on Redis, on a service).
    pub(crate) waiting: InstancePre<InstanceState>,
    /// Linked for calls that never wait, if its store is the memory one.
    pub(crate) immediate: Option<InstancePre<InstanceState>>,
    pub(crate) exports: HandlerExports,
    /// Whether it imports `lock`: its requests' leftover locks are released when they end.
    pub(crate) takes_locks: bool,
    /// The store of its `kv` operations.
    pub kv: KvBackend,
    pub(crate) metrics: Arc<MetricRegistry>,
    pub(crate) ticker: Arc<EpochTicker>,
}

impl LoadedFilter {
    /// The same filter with a key-value store and metrics of its own: `plugin test` runs each
    /// case from a clean state this way.
    pub fn with_state(&self, kv: KvBackend, metrics: Arc<MetricRegistry>) -> LoadedFilter {
        LoadedFilter {
            name: self.name.clone(),
            settings: self.settings.clone(),
            hash: self.hash,
            origin: self.origin,
            waiting: self.waiting.clone(),
            // Only where it was linked so: a filter that takes locks never is, on any store.
            immediate: match kv {
                KvBackend::Memory(_) => self.immediate.clone(),
                KvBackend::Redis(_) => None,
            },
            exports: self.exports.clone(),
            takes_locks: self.takes_locks,
            kv,
            metrics,
            ticker: self.ticker.clone(),
        }
    }
}

/// Whether the component imports `lock`, whose waits suspend even on the memory store.
fn imports_lock(engine: &Engine, component: &wasmtime::component::Component) -> bool {
    let lock = format!("{WIT_PACKAGE}/{}@", crate::bindings::LOCK_INTERFACE);
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with(&lock))
}

impl FilterEngine {
    /// The engine, with the key-value stores its filters use, and compiled components kept in
    /// `cache_dir` (memory only if `None`).
    pub fn new(kv: KvStores, cache_dir: Option<PathBuf>) -> Result<FilterEngine> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(INSTANCE_SLOTS)
            .total_memories(INSTANCE_SLOTS)
            .total_core_instances(INSTANCE_SLOTS * 4)
            .total_tables(INSTANCE_SLOTS * 4)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(MAX_MEMORY_LIMIT.as_usize())
            .total_stacks(CALL_STACKS);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(|error| Error::Engine(format!("{error:#}")))?;

        let linkers = Linkers::new(&engine).map_err(|error| Error::Engine(format!("{error:#}")))?;

        let ticker = EpochTicker::start(&engine)
            .map_err(|error| Error::Engine(format!("cannot start the epoch ticker: {error}")))?;

        Ok(FilterEngine {
            cache: ComponentCache::new(&engine, cache_dir),
            engine,
            linkers,
            kv,
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
        let handler = check_wit_version(&self.engine, &component).map_err(refuse)?;
        let link = |linker: &wasmtime::component::Linker<InstanceState>| {
            linker
                .instantiate_pre(&component)
                .map_err(|error| refuse(format!("cannot be linked: {error:#}")))
        };
        let waiting = link(&self.linkers.waiting)?;
        // The generated bindings check every export's type, with a message naming it. The
        // exports are the component's, whichever way it is linked: once is enough.
        FilterPre::new(waiting.clone()).map_err(|error| refuse(format!("{error:#}")))?;
        let kv = self.kv.backend(settings.kv).map_err(refuse)?;
        let takes_locks = imports_lock(&self.engine, &component);
        let immediate = match kv {
            KvBackend::Memory(_) if !takes_locks => Some(link(&self.linkers.immediate)?),
            _ => None,
        };
        let exports = HandlerExports::of(&component, &handler).map_err(refuse)?;
        Ok(LoadedFilter {
            name: Arc::from(name),
            settings: settings.clone(),
            hash,
            origin,
            waiting,
            immediate,
            exports,
            takes_locks,
            kv,
            metrics: self.metrics.clone(),
            ticker: self.ticker.clone(),
        })
    }

    /// The key-value stores of the filters this engine loads.
    pub fn kv(&self) -> &KvStores {
        &self.kv
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
/// one by name, before linking would fail with a less helpful type error. Returns the name of
/// the handler export.
fn check_wit_version(engine: &Engine, component: &Component) -> Result<String, String> {
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
        Ok(export.to_owned())
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
