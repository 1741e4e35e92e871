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
/// the WASI adapter, ...), a componentize-js guest 3. Sized for Python, with headroom, so
/// that `max_concurrent_runs` Python runs fit at once; the pool stays bounded by this product.
pub const CORE_INSTANCES_PER_RUN: u32 = 16;

/// Component instances one run needs: the task itself.
pub const COMPONENT_INSTANCES_PER_RUN: u32 = 1;

/// Largest configurable number of concurrent runs. The pool reserves address space for
/// every slot up front (`max_memory_bytes` for each of a run's memories); this keeps a
/// misconfiguration from asking for more than a 64-bit address space holds.
pub const MAX_CONCURRENT_RUNS: u32 = 1024;

/// Engine-wide settings, fixed for the life of the process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Runs that may be instantiated at once; sizes the pooling allocator. A run beyond
    /// this waits in the server's run queue for a slot instead of growing host memory.
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

/// How many of each thing the pooling allocator holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    pub component_instances: u32,
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
    pub stacks: u32,
}

impl PoolSize {
    /// Runs that fit in the pool at once, whatever language their guest is in: the scarcest
    /// resource divided by what one (Python-sized) run takes. The server's run queue hands
    /// out exactly this many execution slots, so no server run ever meets the allocator's
    /// "maximum concurrent limit" error.
    pub fn run_slots(&self) -> u32 {
        [
            self.component_instances / COMPONENT_INSTANCES_PER_RUN,
            self.core_instances / CORE_INSTANCES_PER_RUN,
            self.tables / CORE_INSTANCES_PER_RUN,
            self.memories / 2,
            self.stacks,
        ]
        .into_iter()
        .min()
        .unwrap_or(0)
    }
}

impl EngineConfig {
    /// The pool this configuration builds: `max_concurrent_runs` (1 to
    /// [`MAX_CONCURRENT_RUNS`]) Python-sized runs.
    pub fn pool_size(&self) -> PoolSize {
        let runs = self.max_concurrent_runs.clamp(1, MAX_CONCURRENT_RUNS);
        PoolSize {
            component_instances: runs * COMPONENT_INSTANCES_PER_RUN,
            core_instances: runs * CORE_INSTANCES_PER_RUN,
            memories: runs * 2,
            tables: runs * CORE_INSTANCES_PER_RUN,
            stacks: runs,
        }
    }

    /// Execution slots: how many runs the pool holds at once.
    pub fn run_slots(&self) -> usize {
        usize::try_from(self.pool_size().run_slots()).unwrap_or(1)
    }
}

/// Builds the engine: component model, epoch interruption, pooling allocator.
pub fn build_engine(config: &EngineConfig) -> anyhow::Result<Engine> {
    let size = config.pool_size();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(size.component_instances)
        .total_core_instances(size.core_instances)
        .total_memories(size.memories)
        .total_tables(size.tables)
        .total_stacks(size.stacks)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_slots_follow_the_configured_pool() {
        for runs in [1, 4, 64, 200] {
            let config = EngineConfig {
                max_concurrent_runs: runs,
                ..EngineConfig::default()
            };
            assert_eq!(config.run_slots(), runs as usize);
        }
    }

    #[test]
    fn run_slots_are_bounded() {
        let zero = EngineConfig {
            max_concurrent_runs: 0,
            ..EngineConfig::default()
        };
        assert_eq!(zero.run_slots(), 1);
        let huge = EngineConfig {
            max_concurrent_runs: u32::MAX,
            ..EngineConfig::default()
        };
        assert_eq!(huge.run_slots(), MAX_CONCURRENT_RUNS as usize);
    }

    #[test]
    fn a_python_run_fits_in_one_slot_of_core_instances() {
        // componentize-py instantiates 14 core modules per run.
        let size = EngineConfig::default().pool_size();
        assert!(size.core_instances / size.component_instances >= 14);
        let short = PoolSize {
            core_instances: 14 * 10,
            ..size
        };
        assert_eq!(short.run_slots(), 14 * 10 / CORE_INSTANCES_PER_RUN);
    }
}
