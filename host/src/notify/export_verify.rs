//! Offline check of an exported stream (`warden audit verify --export FILE --server-key PUB`).
//!
//! Threat: an export edited, shortened or reordered between Warden and the SIEM. Each record
//! is re-hashed from its contents; each must follow the one before (`seq` + 1, `prev_hash`
//! equal to the previous `hash`); each checkpoint's signature must verify under the server
//! key and name the hash of the record it follows. A repeated line (at-least-once delivery)
//! is accepted only if it is byte-for-byte the record already seen. Records after the last
//! checkpoint are reported as unanchored: a tail cut there cannot be told from a stream that
//! simply ended, and the report says so. Limit: an export that starts after seq 0 is checked
//! from its first record on (what came before it is not in the file).

use std::io::BufRead;

use ed25519_dalek::VerifyingKey;

use super::export::ExportLine;
use crate::audit::{Checkpoint, GENESIS_HASH};

/// Longest line read (a record's fields are capped well below this).
const MAX_LINE: usize = 1 << 20;

/// What the check found. `problems` empty and `unanchored == 0` is a clean stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub records: u64,
    pub checkpoints: u64,
    pub duplicates: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Records after the last valid checkpoint.
    pub unanchored: u64,
    /// Each problem with its line number (1-based).
    pub problems: Vec<String>,
}

impl ExportReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.unanchored == 0 && self.records > 0
    }
}

/// Checks the stream read from `input` against `key`.
pub fn verify_export(input: impl BufRead, key: &VerifyingKey) -> std::io::Result<ExportReport> {
    let mut report = ExportReport::default();
    // (seq, hash) of the last record accepted in order, and its canonical encoding.
    let mut last: Option<(u64, String)> = None;
    let mut seen: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let mut since_checkpoint = 0u64;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            report
                .problems
                .push(format!("line {number}: longer than {MAX_LINE} bytes"));
            continue;
        }
        let Ok(parsed) = serde_json::from_str::<ExportLine>(&line) else {
            report
                .problems
                .push(format!("line {number}: not an export line"));
            continue;
        };
        match parsed {
            ExportLine::Record {
                seq,
                hash,
                prev_hash,
                record,
            } => {
                let recomputed = record.recompute_hash().unwrap_or_default();
                if record.seq != seq || record.hash != hash || record.prev_hash != prev_hash {
                    report.problems.push(format!(
                        "line {number}: record {seq}: its envelope and its contents disagree"
                    ));
                    continue;
                }
                if recomputed != record.hash {
                    report.problems.push(format!(
                        "line {number}: record {seq} was edited (its hash does not match its contents)"
                    ));
                    continue;
                }
                if let Some(earlier) = seen.get(&seq) {
                    if *earlier == hash {
                        report.duplicates += 1;
                    } else {
                        report.problems.push(format!(
                            "line {number}: record {seq} appears twice with different contents"
                        ));
                    }
                    continue;
                }
                match &last {
                    None => {
                        if seq == 0 && prev_hash != GENESIS_HASH {
                            report
                                .problems
                                .push(format!("line {number}: record 0 does not start the chain"));
                        }
                        report.first_seq = Some(seq);
                    }
                    Some((last_seq, last_hash)) => {
                        if seq < *last_seq {
                            report.problems.push(format!(
                                "line {number}: record {seq} is out of order (after {last_seq})"
                            ));
                        } else if seq != last_seq + 1 {
                            report.problems.push(format!(
                                "line {number}: records {}..{} are missing",
                                last_seq + 1,
                                seq - 1
                            ));
                        } else if prev_hash != *last_hash {
                            report.problems.push(format!(
                                "line {number}: record {seq} does not follow record {last_seq} (prev_hash)"
                            ));
                        }
                    }
                }
                seen.insert(seq, hash.clone());
                report.records += 1;
                since_checkpoint += 1;
                if last.as_ref().is_none_or(|(s, _)| seq > *s) {
                    last = Some((seq, hash));
                    report.last_seq = Some(seq);
                }
            }
            ExportLine::Checkpoint {
                seq,
                hash,
                signature,
            } => {
                let checkpoint = Checkpoint {
                    seq,
                    hash: hash.clone(),
                    signature,
                };
                if !checkpoint.is_authentic(key) {
                    report.problems.push(format!(
                        "line {number}: checkpoint {seq} is not signed by the server key"
                    ));
                    continue;
                }
                match seen.get(&seq) {
                    Some(h) if *h == hash => {
                        report.checkpoints += 1;
                        if last.as_ref().is_some_and(|(s, _)| *s == seq) {
                            since_checkpoint = 0;
                        }
                    }
                    Some(_) => report.problems.push(format!(
                        "line {number}: checkpoint {seq} signs a different record {seq}"
                    )),
                    None => report.problems.push(format!(
                        "line {number}: checkpoint {seq} follows no record {seq} in the stream"
                    )),
                }
            }
        }
    }
    report.unanchored = since_checkpoint;
    if report.records == 0 {
        report
            .problems
            .push("the stream holds no audit record".into());
    }
    Ok(report)
}

/// `warden audit verify --export FILE --server-key PUB`: prints the report; exit code 0 only
/// for a clean stream. `key` is the hex public key or a file holding it.
pub fn run_cli(file: &std::path::Path, key: &str) -> anyhow::Result<i32> {
    let text = if std::path::Path::new(key).is_file() {
        std::fs::read_to_string(key)?
    } else {
        key.to_string()
    };
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("--server-key: not a hex ed25519 public key"))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| anyhow::anyhow!("--server-key: not an ed25519 public key"))?;
    let input = std::io::BufReader::new(std::fs::File::open(file)?);
    let report = verify_export(input, &key)?;
    for problem in &report.problems {
        println!("PROBLEM: {problem}");
    }
    if report.unanchored > 0 {
        println!(
            "UNANCHORED: {} records after the last checkpoint (a tail cut there would not show)",
            report.unanchored
        );
    }
    let range = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..={b}"),
        _ => "no records".into(),
    };
    if report.is_clean() {
        println!(
            "export OK: {} records ({range}), {} checkpoints, {} duplicates",
            report.records, report.checkpoints, report.duplicates
        );
        Ok(0)
    } else {
        println!(
            "export BROKEN: {} problems ({range})",
            report.problems.len()
        );
        Ok(1)
    }
}
