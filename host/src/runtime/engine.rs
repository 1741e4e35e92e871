//! The one shared wasmtime `Engine`, its pooling allocator, and the epoch ticker that
//! lets a run's wall-time deadline interrupt guest code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; a run's wall-time deadline is counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances (and tables) the pool holds per concurrent run. A Rust task instantiates
/// 3 core modules; a componentize-py guest instantiates 14 (libc, libpython, its runtime,
/// the WASI adapter, ...), a componentize-js guest 3. Sized for Python so that
/// `max_concurrent_runs` Python runs fit at once; the pool stays bounded by this product.
pub const CORE_INSTANCES_PER_RUN: u32 = 16;

/// Engine-wide settings, fixed for the life of the process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Runs that may be instantiated at once; sizes the pooling allocator. A run beyond
    /// this waits for a slot instead of growing host memory.
    pub max_concurrent_runs: u32,
    /// The most linear memory any one run may be given (a run's own limit is lower).
    pub max_memory_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrent_runs: 64,
            max_memory_bytes: 1 << 30,
        }
    }
}

/// Builds the engine: component model, epoch interruption, pooling allocator.
pub fn build_engine(config: &EngineConfig) -> anyhow::Result<Engine> {
    let runs = config.max_concurrent_runs.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(runs)
        .total_core_instances(runs * CORE_INSTANCES_PER_RUN)
        .total_memories(runs * 2)
        .total_tables(runs * CORE_INSTANCES_PER_RUN)
        .total_stacks(runs)
        .max_memories_per_component(2)
        .max_memory_size(config.max_memory_bytes);
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|e| anyhow::anyhow!("configuring the wasm engine: {e}"))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a background thread until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts ticking `engine`. Without the ticker a guest in a tight loop could not be
    /// interrupted, so failing to start it is an error, not a warning.
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
