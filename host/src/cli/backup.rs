//! `warden backup`: one consistent, checksummed snapshot of a data directory's state, taken
//! from a running server (over its control socket, [`super::control`]) or from a stopped
//! data directory. `warden restore` ([`super::restore`]) reads it back.
//!
//! Format `warden-backup` version 1: JSON lines, in this order —
//! ```text
//! {"kind":"header","format":"warden-backup","version":1,"created_ms":…,"warden":"…",
//!  "audit_records":N,"server_public_key":"hex"}
//! {"kind":"file","name":"server.key","sealed":{"nonce":…,"ciphertext":…}}   (key files)
//! {"kind":"row","table":"runs","key":"b64","value":"b64"}                    (every table)
//! {"kind":"checkpoint","value":"b64"}                   (the signed audit head, if any)
//! {"kind":"audit","seq":0,"record":"b64"}               (records 0..N-1, canonical bytes)
//! {"kind":"end","files":F,"rows":R,"audit_records":N,"sha256":"hex"}
//! ```
//! `sha256` is over every byte before the end line, so a truncated or edited file is refused.
//! The tables and the audit head are read while the database holds every write off
//! ([`crate::store::Backend::quiesced`]): no half-applied batch, and every state in the backup
//! has its audit record in it (the records after the head are not). The audit records are
//! immutable, so they are read after the writes resume.
//!
//! Threat: a backup that leaks what the data directory protects. The vault master key is
//! never in it: the credentials stay sealed as the vault stores them, and the other key
//! files (the audit-signing key, the TLS key) are sealed under the master key here, so a
//! backup alone opens nothing and a restore needs the master key kept apart.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DataArg;
use crate::store::{self, DataDir, Database, StoreError};
use crate::vault::{self, MasterKey, Sealed};

/// The format's name in the header.
pub(super) const FORMAT: &str = "warden-backup";
/// The newest format version this binary writes and reads.
pub(super) const VERSION: u32 = 1;
/// Audit records read per chunk.
const AUDIT_CHUNK: usize = 1024;

/// The data directory's files a backup carries (sealed), besides the database: the
/// audit-signing key and the TLS certificate and key. Never the master key.
pub(super) const KEY_FILES: [&str; 3] =
    [store::SERVER_KEY_FILE_NAME, "tls/cert.pem", "tls/key.pem"];

/// The associated data a key file is sealed with: its name and the format version.
pub(super) fn file_aad(name: &str) -> Vec<u8> {
    format!("{FORMAT} v{VERSION} file {name}").into_bytes()
}

/// One line of a backup.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Line {
    Header {
        format: String,
        version: u32,
        created_ms: u64,
        warden: String,
        audit_records: u64,
        server_public_key: String,
    },
    File {
        name: String,
        sealed: Sealed,
    },
    Row {
        table: String,
        key: String,
        value: String,
    },
    Checkpoint {
        value: String,
    },
    Audit {
        seq: u64,
        record: String,
    },
    End {
        files: u64,
        rows: u64,
        audit_records: u64,
        sha256: String,
    },
}

impl Line {
    /// The line's bytes, newline included.
    pub(super) fn encode(&self) -> anyhow::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec(self).context("encoding a backup line")?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// What a backup holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Summary {
    pub files: u64,
    pub rows: u64,
    pub audit_records: u64,
    pub sha256: String,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows, {} audit records, {} key files sealed under the master key, sha256 {}",
            self.rows, self.audit_records, self.files, self.sha256
        )
    }
}

/// What a snapshot is taken of: the open database and the data directory's keys.
pub(crate) struct Source {
    pub db: Database,
    pub root: PathBuf,
    pub master_key: MasterKey,
    pub server_key: SigningKey,
}

impl Source {
    pub(crate) fn of(dir: &DataDir) -> Self {
        Self {
            db: dir.db.clone(),
            root: dir.root().to_path_buf(),
            master_key: dir.master_key.duplicate(),
            server_key: dir.server_key.clone(),
        }
    }
}

/// Writes lines and hashes every byte.
struct Hashing<'a> {
    out: &'a mut dyn Write,
    hash: Sha256,
}

impl Hashing<'_> {
    fn line(&mut self, line: &Line) -> anyhow::Result<()> {
        self.bytes(&line.encode()?)
    }

    fn bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes).context("writing the backup")
    }
}

/// A scratch file in the data directory (owner-only), removed on drop.
pub(crate) struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Writes a backup of `source` to `out`: [`take_snapshot`], then [`stream_snapshot`]. The
/// tables and the audit head are read with every write held off (into a scratch file, so a
/// slow reader of `out` never stalls the server); then the audit records up to that head
/// follow.
pub(crate) fn write_snapshot(source: &Source, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let taken = take_snapshot(source)?;
    stream_snapshot(source, taken, out)
}

/// The part of a snapshot read with the writes held off: the tables (in a scratch file) and
/// the audit head.
pub(crate) struct Taken {
    _scratch: Scratch,
    file: fs::File,
    count: u64,
    head: store::AuditTip,
    audit_records: u64,
}

/// Reads the tables and the audit head with every write held off (the backend refuses if it
/// cannot hold them off).
pub(crate) fn take_snapshot(source: &Source) -> anyhow::Result<Taken> {
    let scratch = Scratch(
        source
            .root
            .join(format!(".backup-{}.part", uuid::Uuid::new_v4())),
    );
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&scratch.0)
        .with_context(|| format!("creating {}", scratch.0.display()))?;
    let mut rows = BufWriter::new(file);
    let mut count = 0u64;
    let mut head = store::AuditTip::default();
    let io = |e: anyhow::Error| StoreError::Io(format!("{e:#}"));
    source.db.backend().quiesced(&mut || {
        store::copy::for_each_page(&source.db, &mut |def, page| {
            for (key, value) in page {
                let line = Line::Row {
                    table: def.name.to_string(),
                    key: BASE64.encode(key),
                    value: BASE64.encode(value),
                };
                let bytes = line.encode().map_err(io)?;
                rows.write_all(&bytes)
                    .map_err(|e| StoreError::Io(format!("writing the scratch file: {e}")))?;
                count += 1;
            }
            Ok(())
        })?;
        head = source.db.backend().audit_tip()?;
        Ok(())
    })?;
    let file = rows.into_inner().context("writing the scratch file")?;
    let audit_records = match &head.last {
        None => 0,
        Some(bytes) => record_seq(bytes).context("the audit log's last record")? + 1,
    };
    Ok(Taken {
        _scratch: scratch,
        file,
        count,
        head,
        audit_records,
    })
}

/// Writes the backup of a taken snapshot: header, sealed key files, the tables, the audit
/// head and the records up to it, the checksum line.
pub(crate) fn stream_snapshot(
    source: &Source,
    taken: Taken,
    out: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let Taken {
        _scratch,
        mut file,
        count,
        head,
        audit_records,
    } = taken;

    let mut out = Hashing {
        out,
        hash: Sha256::new(),
    };
    out.line(&Line::Header {
        format: FORMAT.into(),
        version: VERSION,
        created_ms: now_ms(),
        warden: super::VERSION.into(),
        audit_records,
        server_public_key: hex::encode(source.server_key.verifying_key().as_bytes()),
    })?;
    let mut summary = Summary {
        rows: count,
        audit_records,
        ..Summary::default()
    };
    for name in KEY_FILES {
        let path = source.root.join(name);
        let plain = match fs::read(&path) {
            Ok(bytes) => zeroize::Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let sealed = vault::seal_with_master(&source.master_key, &plain, &file_aad(name))?;
        out.line(&Line::File {
            name: name.into(),
            sealed,
        })?;
        summary.files += 1;
    }
    std::io::Seek::rewind(&mut file).context("reading the scratch file")?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut file, &mut buffer).context("reading the scratch file")?;
        if n == 0 {
            break;
        }
        out.bytes(&buffer[..n])?;
    }
    if let Some(checkpoint) = &head.checkpoint {
        out.line(&Line::Checkpoint {
            value: BASE64.encode(checkpoint),
        })?;
    }
    let mut next = 0u64;
    while next < audit_records {
        let chunk = source.db.backend().audit_range(next, AUDIT_CHUNK)?;
        if chunk.is_empty() {
            bail!("the audit log ends at record {next}, before its head {audit_records}");
        }
        for (seq, record) in chunk {
            if seq >= audit_records {
                break;
            }
            if seq != next {
                bail!("the audit log skips from record {next} to {seq}");
            }
            out.line(&Line::Audit {
                seq,
                record: BASE64.encode(&record),
            })?;
            next += 1;
        }
    }
    summary.sha256 = hex::encode(out.hash.clone().finalize());
    out.line(&Line::End {
        files: summary.files,
        rows: summary.rows,
        audit_records,
        sha256: summary.sha256.clone(),
    })?;
    out.out.flush().context("writing the backup")?;
    Ok(summary)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `seq` of a stored audit record.
pub(super) fn record_seq(bytes: &[u8]) -> anyhow::Result<u64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    Ok(serde_json::from_slice::<Seq>(bytes)
        .context("unreadable audit record")?
        .seq)
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    data: DataArg,
    /// Where to write the backup (it must not exist; written to FILE.partial, then renamed).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
}

/// `warden backup`: asks the server running on DATA for its snapshot, or, when none runs,
/// opens DATA itself (with its master key) and takes it.
pub fn run(args: BackupArgs) -> anyhow::Result<i32> {
    let output = &args.output;
    if output.exists() {
        bail!(
            "{} already exists; choose another --output",
            output.display()
        );
    }
    let partial = partial_path(output);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let taken = take(&args.data, &mut file, &partial);
    let summary = match taken {
        Ok((summary, from)) => {
            file.sync_all().context("writing the backup")?;
            println!("backup of {} taken from {from}", args.data.data.display());
            summary
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, output).with_context(|| format!("renaming to {}", output.display()))?;
    println!("wrote {}: {summary}", output.display());
    println!("the master key is not in it: keep the key apart, `warden restore` needs it");
    Ok(0)
}

fn take(
    data: &DataArg,
    file: &mut fs::File,
    partial: &Path,
) -> anyhow::Result<(Summary, &'static str)> {
    if let Some(stream) = super::control::connect(&data.data)? {
        super::control::request_backup(stream, file)?;
        // Check what arrived as `restore` will (structure, order, checksum).
        let summary = super::restore::check_file(partial, None)?.summary;
        return Ok((summary, "the running server"));
    }
    let dir = data.open()?;
    let summary = write_snapshot(&Source::of(&dir), file)?;
    Ok((summary, "the stopped data directory"))
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}
