//! Per-run resource limits and the reasons a run is ended for breaking one.
//!
//! Threat: a guest that tries to exhaust the host — by spinning forever, growing memory,
//! flooding output, calling the host in a loop, hoarding handles or passing huge
//! arguments. Each limit is configurable; the defaults are safe for small automation
//! tasks. Breaking a limit ends the run with a [`LimitExceeded`] that says which one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits applied to every run. All sizes are bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunLimits {
    /// Wall-clock time for the whole run, guest code and host calls together. Blocks a
    /// guest that loops forever or a host call that never returns.
    #[serde(with = "duration_ms")]
    pub wall_time: Duration,
    /// Linear memory a run may grow to. Blocks memory exhaustion of the host.
    pub memory_bytes: usize,
    /// Core and component instances a run may create. Blocks instance bombs.
    pub instances: usize,
    /// Tables a run may create, and elements per table. Blocks table growth bombs.
    pub tables: usize,
    /// Elements one table may hold.
    pub table_elements: usize,
    /// Bytes a guest may pass to the host in one call (strings and lists together).
    /// Blocks a guest that makes the host copy, hash and audit huge arguments.
    pub call_bytes: usize,
    /// Host calls per run. Blocks a guest that floods the audit log or the targets.
    pub host_calls: u64,
    /// Credential handles a run may hold at once. Blocks handle-table exhaustion.
    pub handles: usize,
    /// Bytes each of stdout, stderr and the event log may hold. Blocks output floods.
    pub output_bytes: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            wall_time: Duration::from_secs(300),
            memory_bytes: 128 << 20,
            instances: 32,
            tables: 32,
            table_elements: 100_000,
            call_bytes: 8 << 20,
            host_calls: 100_000,
            handles: 64,
            output_bytes: 1 << 20,
        }
    }
}

impl RunLimits {
    /// These limits with a module's own memory ask (from its signed manifest) in place of
    /// the default, capped at `max_memory_bytes`, the most the server gives any run (the
    /// engine's per-instance memory reservation). A module that asks for nothing keeps the
    /// default.
    pub fn for_module(&self, memory_ask: Option<usize>, max_memory_bytes: usize) -> RunLimits {
        let mut limits = self.clone();
        if let Some(ask) = memory_ask {
            limits.memory_bytes = ask;
        }
        limits.memory_bytes = limits.memory_bytes.min(max_memory_bytes);
        limits
    }
}

/// Which limit a run broke; the `Display` text is what the user sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "exceeded", rename_all = "kebab-case")]
pub enum LimitExceeded {
    /// The run took longer than its wall time.
    #[error("wall time limit of {limit_ms} ms exceeded")]
    WallTime { limit_ms: u64 },
    /// The guest tried to grow linear memory past its limit.
    #[error("memory limit of {limit} bytes exceeded (guest asked for {requested} bytes)")]
    Memory { limit: usize, requested: usize },
    /// The guest tried to create more instances than allowed.
    #[error("instance limit of {limit} exceeded")]
    Instances { limit: usize },
    /// The guest tried to grow a table past its limit.
    #[error("table limit of {limit} elements exceeded")]
    TableElements { limit: usize },
    /// One host call carried more guest bytes than allowed.
    #[error("host call {call} passed {bytes} bytes, over the per-call limit of {limit} bytes")]
    CallBytes {
        call: String,
        bytes: usize,
        limit: usize,
    },
    /// The run made more host calls than allowed.
    #[error("host call limit of {limit} calls exceeded")]
    HostCalls { limit: u64 },
    /// The run held more credential handles than allowed.
    #[error("handle limit of {limit} live credential handles exceeded")]
    Handles { limit: usize },
    /// The run wrote more output than allowed to one stream.
    #[error("output limit of {limit} bytes exceeded on {stream}")]
    Output { stream: String, limit: usize },
}

/// The wasmtime resource limiter for one run's store. It records the first limit the
/// guest broke so the run can report it instead of a bare trap.
pub struct RunLimiter {
    limits: RunLimits,
    pub(crate) exceeded: Option<LimitExceeded>,
}

impl RunLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: RunLimits) -> Self {
        RunLimiter {
            limits,
            exceeded: None,
        }
    }

    fn refuse(&mut self, why: LimitExceeded) -> wasmtime::Result<bool> {
        let message = why.to_string();
        self.exceeded.get_or_insert(why);
        Err(wasmtime::Error::msg(message))
    }
}

impl wasmtime::ResourceLimiter for RunLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            let limit = self.limits.memory_bytes;
            return self.refuse(LimitExceeded::Memory {
                limit,
                requested: desired,
            });
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            let limit = self.limits.table_elements;
            return self.refuse(LimitExceeded::TableElements { limit });
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.instances
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_memory_ask_replaces_the_default_but_never_passes_the_server_cap() {
        let defaults = RunLimits::default();
        let cap = 512 << 20;
        assert_eq!(
            defaults.for_module(None, cap).memory_bytes,
            defaults.memory_bytes
        );
        assert_eq!(
            defaults.for_module(Some(256 << 20), cap).memory_bytes,
            256 << 20
        );
        assert_eq!(
            defaults.for_module(Some(32 << 20), cap).memory_bytes,
            32 << 20
        );
        assert_eq!(defaults.for_module(Some(4 << 30), cap).memory_bytes, cap);
        assert_eq!(defaults.for_module(None, 64 << 20).memory_bytes, 64 << 20);
    }
}
