//! `collect-logs`: fetches one log file from each target and reports its size, line count
//! and SHA-256, so an operator can tell at a glance which copies differ or have grown, and
//! the run's audit trail pins exactly which bytes were read.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warden_sdk::{Task, credentials, export_task, log, params, transfer};

struct CollectLogs;

impl Task for CollectLogs {
    fn run() -> Result<String, String> {
        let targets = params::text_list("targets").unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t.trim().is_empty()) {
            return Err("input `targets` must list at least one non-empty target".to_string());
        }
        let path = params::text("path").unwrap_or_default();
        if !path.starts_with('/') || path.contains('\0') {
            return Err("input `path` must be an absolute path".to_string());
        }
        let credential_name = params::text("credential").unwrap_or_default();
        if credential_name.trim().is_empty() {
            return Err("input `credential` is required".to_string());
        }
        let credential = credentials::acquire(&credential_name).map_err(|e| format!("{e}"))?;
        log::info(&format!(
            "collecting {path} from {} target(s)",
            targets.len()
        ));

        let mut entries = Vec::with_capacity(targets.len());
        let mut failed = 0usize;
        for target in &targets {
            match transfer::download(target, &credential, &path) {
                Ok(bytes) => {
                    let entry = summarize(target, &bytes);
                    log::info(&format!("{target}: {} bytes", bytes.len()));
                    entries.push(entry);
                }
                Err(e) => {
                    failed += 1;
                    log::warn(&format!("{target}: {e}"));
                    entries.push(json!({ "target": target, "error": format!("{e}") }));
                }
            }
        }
        log::info(&format!(
            "collected from {} target(s), {failed} failed",
            targets.len() - failed
        ));
        Ok(json!({ "path": path, "targets": entries }).to_string())
    }
}

export_task!(CollectLogs);

/// `{"target","bytes","sha256","lines"}` for one downloaded file.
fn summarize(target: &str, bytes: &[u8]) -> Value {
    json!({
        "target": target,
        "bytes": bytes.len(),
        "sha256": hex(&Sha256::digest(bytes)),
        "lines": count_lines(bytes),
    })
}

/// Lines as `wc -l` would count them, plus a final line that lacks its newline.
fn count_lines(bytes: &[u8]) -> usize {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    let unterminated = !bytes.is_empty() && !bytes.ends_with(b"\n");
    newlines + usize::from(unterminated)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_including_unterminated_last_line() {
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"\n"), 1);
        assert_eq!(count_lines(b"a\nb\n"), 2);
        assert_eq!(count_lines(b"a\nb"), 2);
    }

    #[test]
    fn summary_has_size_lines_and_known_digest() {
        let entry = summarize("web-1", b"abc");
        assert_eq!(entry["target"], "web-1");
        assert_eq!(entry["bytes"], 3);
        assert_eq!(entry["lines"], 1);
        assert_eq!(
            entry["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
