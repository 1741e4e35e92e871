//! A JSON-lines file of the export stream, rotated by size (`PATH.1` is the newest rotated
//! file, `PATH.KEEP` the oldest kept). Each chunk is appended and synced before the sink's
//! cursor moves, so a crash repeats at most the last chunk (at-least-once; the offline
//! verifier accepts an identical repeat).
//!
//! Threat: an administrator (or a stolen admin token) using the sink to append to a file
//! the server may write but should not (`/etc/…`, another user's `authorized_keys`), with
//! record text a guest influences. A file sink only ever writes a file that is new or
//! already an export ([`check_path`], at configuration), never through a symbolic link
//! (`O_NOFOLLOW`, at every write). The file is created with mode 0600: the audit is not for
//! every local user.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::notify::config::FileConfig;
use crate::notify::export::ExportLine;

/// Appends `lines` (encoded export lines) to the file, rotating first if it is full. Blocking: call off the runtime.
pub fn append(config: &FileConfig, lines: &[String]) -> std::io::Result<()> {
    let path = Path::new(&config.path);
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= config.max_bytes) {
        rotate(path, config.keep)?;
    }
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

/// Refuses a path that is not `/…` without `..`, whose directory does not exist, or that
/// names something other than a new file, an empty regular file or an export.
pub fn check_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err("path must be absolute, without '..'".into());
    }
    if !p.parent().is_some_and(Path::is_dir) {
        return Err("the file's directory does not exist".into());
    }
    let meta = match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => return Err("cannot inspect the path".into()),
        Ok(meta) => meta,
    };
    if !meta.file_type().is_file() {
        return Err("the path exists and is not a regular file (a link, a directory, …)".into());
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let file = std::fs::File::open(p).map_err(|_| "cannot read the existing file")?;
    let mut first = String::new();
    let mut reader = std::io::BufReader::new(std::io::Read::take(file, 1 << 20));
    let _ = std::io::BufRead::read_line(&mut reader, &mut first);
    if serde_json::from_str::<ExportLine>(first.trim_end()).is_err() {
        return Err("the file exists and is not a Warden export; refusing to append to it".into());
    }
    Ok(())
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(path, keep));
    for n in (1..keep).rev() {
        let from = numbered(path, n);
        if from.exists() {
            std::fs::rename(&from, numbered(path, n + 1))?;
        }
    }
    std::fs::rename(path, numbered(path, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEntry, AuditRecord, Decision, GENESIS_HASH};

    fn line(seq: u64) -> ExportLine {
        let entry = AuditEntry {
            run_id: None,
            actor: "a".into(),
            action: "x".into(),
            target: None,
            credential: None,
            decision: Decision::Allowed,
            outcome: "o".repeat(3000),
            duration_us: 0,
            detail: None,
        };
        ExportLine::record(AuditRecord::seal(seq, 1, entry, GENESIS_HASH.into()).unwrap())
    }

    #[test]
    fn only_new_files_and_exports_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        assert!(check_path(&at("new.jsonl")).is_ok());
        std::fs::write(at("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        assert!(check_path(&at("passwd")).is_err(), "a foreign file");
        std::os::unix::fs::symlink(at("passwd"), at("link.jsonl")).unwrap();
        assert!(check_path(&at("link.jsonl")).is_err(), "a symbolic link");
        std::os::unix::fs::symlink(at("missing"), at("dangling.jsonl")).unwrap();
        assert!(
            check_path(&at("dangling.jsonl")).is_err(),
            "a dangling link"
        );
        assert!(check_path(&at("sub/../new.jsonl")).is_err());
        assert!(check_path(&at("nodir/new.jsonl")).is_err());
        assert!(
            check_path(&dir.path().to_string_lossy()).is_err(),
            "a directory"
        );
        let config = FileConfig {
            path: at("export.jsonl"),
            max_bytes: 1 << 20,
            keep: 1,
        };
        append(&config, &[line(0).to_json()]).unwrap();
        assert!(
            check_path(&at("export.jsonl")).is_ok(),
            "an existing export"
        );
        // A link planted after the check is not followed either.
        let planted = FileConfig {
            path: at("dangling.jsonl"),
            ..config
        };
        assert!(append(&planted, &[line(1).to_json()]).is_err());
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn rotates_by_size_and_keeps_at_most_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let config = FileConfig {
            path: path.to_string_lossy().into_owned(),
            max_bytes: 4096,
            keep: 2,
        };
        for seq in 0..6 {
            append(&config, &[line(seq).to_json(), line(seq + 100).to_json()]).unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(
            newest.contains("\"seq\":5,"),
            "the current file has the last chunk"
        );
        let oldest = std::fs::read_to_string(numbered(&path, 2)).unwrap();
        assert!(oldest.contains("\"seq\":3,") && !oldest.contains("\"seq\":0,"));
    }
}
