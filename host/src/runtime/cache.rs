//! Compiled task modules: each component is compiled once, cached on disk as a
//! precompiled artifact keyed by (SHA-256 of the component, engine compatibility hash),
//! and kept in memory as a ready-to-instantiate `InstancePre`.
//!
//! Threat: a corrupt or hostile `.wasm` (a core module, garbage, imports the host does
//! not provide) is refused here, before any run starts, with a clear error.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::{RunState, TaskHost};

/// Largest component accepted. Blocks a compile-time memory/CPU bomb.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Why a component could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module, not a component.
    #[error("a core WebAssembly module, not a component: build the task for wasm32-wasip2")]
    CoreModule,
    /// Over [`MAX_COMPONENT_BYTES`].
    #[error("component is {0} bytes, over the limit of {MAX_COMPONENT_BYTES} bytes")]
    TooLarge(usize),
    /// wasmtime refused to compile it.
    #[error("invalid WebAssembly component: {0}")]
    Invalid(String),
    /// It imports something the host does not provide.
    #[error("component cannot run here: {0}")]
    Link(String),
    /// The artifact cache could not be read or written.
    #[error("artifact cache: {0}")]
    Cache(#[from] std::io::Error),
}

/// A compiled task, ready to instantiate into a fresh store.
pub struct PreparedTask<H: TaskHost> {
    /// Lowercase hex SHA-256 of the component bytes.
    pub digest: String,
    /// The component's import names (e.g. `warden:task/ssh@0.1.0`), to check against the
    /// interfaces its manifest declares.
    pub imports: Vec<String>,
    pub(crate) pre: H::Pre,
}

/// The compiled-module cache.
pub struct ModuleCache<H: TaskHost> {
    dir: PathBuf,
    compat: String,
    loaded: Mutex<HashMap<String, Arc<PreparedTask<H>>>>,
    compiles: std::sync::atomic::AtomicU64,
}

impl<H: TaskHost> ModuleCache<H> {
    /// A cache storing artifacts under `dir` (created 0700 if missing).
    pub fn open(engine: &Engine, dir: &Path) -> Result<Self, PrepareError> {
        create_private_dir(dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ModuleCache {
            dir: dir.to_path_buf(),
            compat: format!("{:016x}", hasher.finish()),
            loaded: Mutex::new(HashMap::new()),
            compiles: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Components compiled (not loaded from the cache) by this process.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns the prepared task for `bytes`, compiling it only if no artifact exists.
    pub fn prepare(
        &self,
        engine: &Engine,
        linker: &Linker<RunState<H>>,
        bytes: &[u8],
    ) -> Result<Arc<PreparedTask<H>>, PrepareError> {
        check_header(bytes)?;
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(task) = self.lock().get(&digest) {
            return Ok(task.clone());
        }
        let component = self.load_or_compile(engine, &digest, bytes)?;
        let imports = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| PrepareError::Link(format!("{e:#}")))?;
        let pre = H::pre(pre).map_err(|e| PrepareError::Link(format!("{e:#}")))?;
        let task = Arc::new(PreparedTask {
            digest: digest.clone(),
            imports,
            pre,
        });
        self.lock().insert(digest, task.clone());
        Ok(task)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PreparedTask<H>>>> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, PrepareError> {
        let path = self.dir.join(format!("{digest}-{}.cwasm", self.compat));
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok(component),
                // A stale or damaged artifact is rebuilt, not trusted.
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "discarding artifact"),
            }
        }
        let started = std::time::Instant::now();
        let component =
            Component::new(engine, bytes).map_err(|e| PrepareError::Invalid(format!("{e:#}")))?;
        tracing::info!(
            digest,
            bytes = bytes.len(),
            ms = started.elapsed().as_millis() as u64,
            "compiled component"
        );
        self.compiles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let artifact = component
            .serialize()
            .map_err(|e| PrepareError::Invalid(format!("{e:#}")))?;
        write_atomically(&path, &artifact)?;
        Ok(component)
    }
}

fn check_header(bytes: &[u8]) -> Result<(), PrepareError> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(PrepareError::TooLarge(bytes.len()));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PrepareError::NotWasm);
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(PrepareError::CoreModule);
    }
    Ok(())
}

/// Loads a precompiled artifact.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be an artifact this engine produced,
    // since it maps its machine code as executable. The file lives in the data
    // directory's 0700 artifact folder and is written only by `write_atomically` above
    // from `Component::serialize`; whoever can write there can already rewrite the vault
    // and the audit log, so it is inside the same trust boundary. wasmtime still checks
    // the header and the engine compatibility hash and refuses a mismatched artifact.
    unsafe { Component::deserialize_file(engine, path) }
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // Unique per writer: two runs may compile the same component at once.
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_garbage_core_modules_and_oversize_input() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(PrepareError::NotWasm)
        ));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(check_header(core), Err(PrepareError::CoreModule)));
        let big = vec![0u8; MAX_COMPONENT_BYTES + 1];
        assert!(matches!(check_header(&big), Err(PrepareError::TooLarge(_))));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
