//! `warden restore -i FILE --data DIR [--database URL]`: a backup ([`super::backup`]) into a
//! new, empty data directory (and, with `--database`, an empty PostgreSQL database).
//!
//! The file is read twice. The first pass checks everything before anything is written: the
//! format and its version (a newer one is refused), the order and shape of every line, the
//! record sequence, the counts and the SHA-256 of the end line (so a truncated or edited
//! file is refused), and that the master key opens the sealed key files. The second pass
//! writes the tables and appends the audit records byte for byte (the chain stays the same),
//! recomputing the checksum; then the restored chain is verified against the backup's
//! signed head and the master key must open every vault record. A failure removes what the
//! restore created.
//!
//! Threat: a backup file that was cut, edited or swapped, or that comes from a newer Warden,
//! restoring into a state that looks whole; a restore that overwrites live state. Every line
//! is capped in length, unknown tables are refused, and the target must be empty.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::DataArg;
use super::backup::{FORMAT, KEY_FILES, Line, Summary, VERSION, file_aad};
use crate::audit;
use crate::store::{self, Batch, Database, DatabaseLocation, Expect, TableDef, catalog};
use crate::vault::{self, MasterKey};

/// Longest line accepted (a row holds at most a few MiB; base64 adds a third).
const MAX_LINE: u64 = 64 * 1024 * 1024;
/// Rows written per batch.
const ROW_BATCH: usize = 256;
/// Bytes of rows written per batch, at most (roughly).
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Audit records appended per commit.
const AUDIT_CHUNK: usize = 1024;

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file (`warden backup -o FILE`).
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    input: PathBuf,
    /// The data directory to create (it must not exist or be empty) and, with `--database`,
    /// the empty PostgreSQL database to fill; the master key options name the key the
    /// backup was taken under (DATA/master.key by default).
    #[command(flatten)]
    data: DataArg,
}

/// What the first pass found.
pub(super) struct Checked {
    pub summary: Summary,
    server_public_key: VerifyingKey,
    /// The key files, opened (only when a master key was given).
    files: Vec<(String, Zeroizing<Vec<u8>>)>,
    /// The signed audit head, if the log was not empty.
    checkpoint: Option<Vec<u8>>,
}

/// Reads a backup line by line, hashing every byte before the end line.
struct Reader {
    input: BufReader<fs::File>,
    hash: Sha256,
    line_no: u64,
    path: PathBuf,
}

impl Reader {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            input: BufReader::new(file),
            hash: Sha256::new(),
            line_no: 0,
            path: path.to_path_buf(),
        })
    }

    /// The next line, raw; `None` at the end of the file.
    fn raw(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        (&mut self.input)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("reading {}", self.path.display()))?;
        if bytes.is_empty() {
            return Ok(None);
        }
        self.line_no += 1;
        if bytes.len() as u64 > MAX_LINE {
            bail!("{}", self.bad("is longer than any backup line"));
        }
        if bytes.last() != Some(&b'\n') {
            bail!(
                "{} is truncated: line {} stops mid-way; take the backup again",
                self.path.display(),
                self.line_no
            );
        }
        Ok(Some(bytes))
    }

    /// The next line, parsed and hashed (the end line is parsed, not hashed).
    fn next(&mut self) -> anyhow::Result<Option<Line>> {
        let Some(bytes) = self.raw()? else {
            return Ok(None);
        };
        let line: Line = serde_json::from_slice(&bytes)
            .map_err(|_| anyhow::anyhow!("{}", self.bad("is not a backup line")))?;
        if !matches!(line, Line::End { .. }) {
            self.hash.update(&bytes);
        }
        Ok(Some(line))
    }

    fn bad(&self, what: &str) -> String {
        format!(
            "{} is not a valid backup: line {} {what}",
            self.path.display(),
            self.line_no
        )
    }
}

/// The header, checked: a newer format is refused before its lines are parsed.
fn header(reader: &mut Reader) -> anyhow::Result<(u64, VerifyingKey)> {
    let path = reader.path.display().to_string();
    let Some(bytes) = reader.raw()? else {
        bail!("{path} is empty: not a backup");
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a Warden backup (no header)"))?;
    if value["kind"] != "header" || value["format"] != FORMAT {
        bail!("{path} is not a Warden backup (no {FORMAT} header)");
    }
    match value["version"].as_u64() {
        Some(v) if v > u64::from(VERSION) => bail!(
            "{path} was written by a newer warden (backup format {v}; this warden reads up to \
             {VERSION}): restore it with a newer warden"
        ),
        Some(_) => {}
        None => bail!("{path} is not a valid backup: its header has no version"),
    }
    reader.hash.update(&bytes);
    let Ok(Line::Header {
        audit_records,
        server_public_key,
        ..
    }) = serde_json::from_slice::<Line>(&bytes)
    else {
        bail!("{path} is not a valid backup: its header is malformed");
    };
    let key = hex::decode(&server_public_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| anyhow::anyhow!("{path} is not a valid backup: bad server key"))?;
    Ok((audit_records, key))
}

/// Where each line may appear.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Files,
    Rows,
    Checkpoint,
    Audit,
}

/// Checks the whole file (see the module doc); with `key`, also opens the key files.
pub(super) fn check_file(path: &Path, key: Option<&MasterKey>) -> anyhow::Result<Checked> {
    let mut reader = Reader::open(path)?;
    let (audit_records, server_public_key) = header(&mut reader)?;
    let mut checked = Checked {
        summary: Summary::default(),
        server_public_key,
        files: Vec::new(),
        checkpoint: None,
    };
    let mut phase = Phase::Files;
    let mut enter = |next: Phase, reader: &Reader| {
        if next < phase {
            bail!("{}", reader.bad("is out of order"));
        }
        phase = next;
        Ok(())
    };
    loop {
        let Some(line) = reader.next()? else {
            bail!(
                "{} is truncated: it ends before its checksum line; take the backup again",
                path.display()
            );
        };
        match line {
            Line::Header { .. } => bail!("{}", reader.bad("is a second header")),
            Line::File { name, sealed } => {
                enter(Phase::Files, &reader)?;
                if !KEY_FILES.contains(&name.as_str())
                    || checked.files.iter().any(|(n, _)| *n == name)
                {
                    bail!("{}", reader.bad("names an unexpected key file"));
                }
                if let Some(key) = key {
                    let plain =
                        vault::open_with_master(key, &sealed, &file_aad(&name)).map_err(|_| {
                            anyhow::anyhow!(
                                "the master key does not open this backup's {name}: give the \
                                 key the backup was taken under (--master-key-file, \
                                 --master-key-env or --master-key-command)"
                            )
                        })?;
                    checked.files.push((name, plain));
                } else {
                    checked.files.push((name, Zeroizing::new(Vec::new())));
                }
                checked.summary.files += 1;
            }
            Line::Row { table, key, value } => {
                enter(Phase::Rows, &reader)?;
                if table_def(&table).is_none() {
                    bail!(
                        "{}",
                        reader.bad(&format!("names table {table:?}, unknown here"))
                    );
                }
                decode(&key, &reader)?;
                decode(&value, &reader)?;
                checked.summary.rows += 1;
            }
            Line::Checkpoint { value } => {
                if checked.checkpoint.is_some() {
                    bail!("{}", reader.bad("is a second audit head"));
                }
                enter(Phase::Checkpoint, &reader)?;
                checked.checkpoint = Some(decode(&value, &reader)?);
            }
            Line::Audit { seq, record } => {
                enter(Phase::Audit, &reader)?;
                let record = decode(&record, &reader)?;
                if seq != checked.summary.audit_records
                    || super::backup::record_seq(&record).ok() != Some(seq)
                {
                    bail!("{}", reader.bad("breaks the audit record sequence"));
                }
                checked.summary.audit_records += 1;
            }
            Line::End {
                files,
                rows,
                audit_records: ended,
                sha256,
            } => {
                let actual = hex::encode(reader.hash.clone().finalize());
                if sha256 != actual {
                    bail!(
                        "{} fails its checksum (edited or damaged): sha256 {actual}, the file \
                         says {sha256}",
                        path.display()
                    );
                }
                let s = &checked.summary;
                if (files, rows, ended) != (s.files, s.rows, s.audit_records)
                    || ended != audit_records
                {
                    bail!(
                        "{} is not a valid backup: its counts disagree",
                        path.display()
                    );
                }
                if audit_records > 0 && checked.checkpoint.is_none() {
                    bail!(
                        "{} is not a valid backup: no signed audit head",
                        path.display()
                    );
                }
                if reader.raw()?.is_some() {
                    bail!("{}", reader.bad("follows the checksum line"));
                }
                checked.summary.sha256 = actual;
                return Ok(checked);
            }
        }
    }
}

fn decode(text: &str, reader: &Reader) -> anyhow::Result<Vec<u8>> {
    BASE64
        .decode(text)
        .map_err(|_| anyhow::anyhow!("{}", reader.bad("holds bad base64")))
}

fn table_def(name: &str) -> Option<&'static TableDef> {
    catalog::tables().into_iter().find(|t| t.name == name)
}

/// `warden restore`.
pub fn run(args: RestoreArgs) -> anyhow::Result<i32> {
    let root = args.data.data.clone();
    let created = match fs::read_dir(&root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty; restore only into a new or empty directory",
                    root.display()
                );
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    let master_key = args.data.key_source()?.load()?;
    let checked = check_file(&args.input, Some(&master_key))?;
    let location = args.data.location();
    match restore_into(&args.input, &root, &location, &master_key, &checked) {
        Ok(report) => {
            println!(
                "restored {} into {}: {}",
                args.input.display(),
                root.display(),
                checked.summary
            );
            println!(
                "audit: {} records, chain verified (head {})",
                report.count,
                report.head_hash.as_deref().unwrap_or("-")
            );
            if args.data.master_key.master_key_file.is_some()
                || args.data.master_key.master_key_env.is_some()
                || args.data.master_key.master_key_command.is_some()
            {
                println!(
                    "serve it with the same master key option and --data {}",
                    root.display()
                );
            }
            Ok(0)
        }
        Err(e) => {
            // Leave nothing half restored behind (the master key file, if it is in the
            // directory, was there before and stays).
            if created {
                let _ = fs::remove_dir_all(&root);
            } else if let Ok(entries) = fs::read_dir(&root) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                }
            }
            Err(e)
        }
    }
}

fn restore_into(
    input: &Path,
    root: &Path,
    location: &DatabaseLocation,
    master_key: &MasterKey,
    checked: &Checked,
) -> anyhow::Result<audit::VerifyReport> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    for (name, bytes) in &checked.files {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        store::write_private_file(&path, bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let server_key = checked
        .files
        .iter()
        .find(|(name, _)| name == store::SERVER_KEY_FILE_NAME)
        .and_then(|(_, bytes)| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .map(|seed| SigningKey::from_bytes(&seed))
        .filter(|key| key.verifying_key() == checked.server_public_key)
        .ok_or_else(|| anyhow::anyhow!("the backup's audit-signing key is missing or wrong"))?;
    if let DatabaseLocation::Postgres(_) = location {
        store::mark_external_database(root)?;
    }
    let db = store::open_database(root, location).context("opening the target database")?;
    if !store::copy::is_empty(&db)? {
        bail!("the target database already holds Warden state; restore only into an empty one");
    }
    write_state(input, &db, &server_key, checked)?;
    let report = audit::verify(&db, &server_key.verifying_key())
        .context("the restored audit log does not verify")?;
    let head = checked
        .checkpoint
        .as_deref()
        .map(|bytes| audit::authentic_head(bytes, &checked.server_public_key));
    let expected = match head {
        None => None,
        Some(Some((seq, hash))) => Some((seq + 1, hash)),
        Some(None) => bail!("the backup's audit head is not signed by its server key"),
    };
    let restored = report.head_hash.clone().map(|hash| (report.count, hash));
    if restored != expected {
        bail!("the restored audit log does not end at the backup's signed head");
    }
    store::check_key_opens_vault(&db, master_key)?;
    Ok(report)
}

/// The second pass: rows and audit records into `db`, the checksum recomputed.
fn write_state(
    input: &Path,
    db: &Database,
    server_key: &SigningKey,
    checked: &Checked,
) -> anyhow::Result<()> {
    let mut reader = Reader::open(input)?;
    header(&mut reader)?;
    let mut batch = Batch::new();
    let mut batch_bytes = 0usize;
    let mut pending: Option<Line> = None;
    // Rows, batched; the first audit line (if any) is left in `pending`.
    while let Some(line) = reader.next()? {
        match line {
            Line::Row { table, key, value } => {
                let def = table_def(&table).context("unknown table")?;
                let (key, value) = (BASE64.decode(key)?, BASE64.decode(value)?);
                batch_bytes += key.len() + value.len();
                batch.put(def, key, value, Expect::Absent);
                if batch.ops.len() >= ROW_BATCH || batch_bytes >= BATCH_BYTES {
                    db.apply(&std::mem::take(&mut batch))?;
                    batch_bytes = 0;
                }
            }
            Line::File { .. } | Line::Checkpoint { .. } => {}
            other => {
                pending = Some(other);
                break;
            }
        }
    }
    db.apply(&batch)?;
    let mut source = |_next: u64| -> Result<Vec<(u64, Vec<u8>)>, audit::AuditError> {
        let mut chunk = Vec::new();
        while chunk.len() < AUDIT_CHUNK {
            let line = match pending.take() {
                Some(line) => line,
                None => match reader.next() {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(e) => return Err(audit::AuditError::WriteFailed(format!("{e:#}"))),
                },
            };
            match line {
                Line::Audit { seq, record } => {
                    let bytes = BASE64
                        .decode(record)
                        .map_err(|_| audit::AuditError::Corrupt { seq })?;
                    chunk.push((seq, bytes));
                }
                end @ Line::End { .. } => {
                    pending = Some(end);
                    break;
                }
                _ => return Err(audit::AuditError::WriteFailed("backup out of order".into())),
            }
        }
        Ok(chunk)
    };
    let appended = audit::append_records(db, server_key, &mut source)?;
    let again = hex::encode(reader.hash.clone().finalize());
    if appended != checked.summary.audit_records || again != checked.summary.sha256 {
        bail!("{} changed while it was being restored", input.display());
    }
    Ok(())
}
