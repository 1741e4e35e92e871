//! The conformance suite's audit seal: trivial rows continuing the tip (hash = sha256 of the
//! seq), so the tests check the backends' chain handling, not the real audit sealing.

use sha2::{Digest, Sha256};

use crate::store::{AuditBatch, AuditRow, AuditTip, Batch, Database, StoreError};

/// One record the test seal writes: what the sled backend's query reads back.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct TestRecord {
    pub seq: u64,
    pub time_ms: u64,
    pub run_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub hash: String,
    pub prev_hash: String,
}

/// What a test wants recorded; the seal adds seq and hashes.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub time_ms: u64,
    pub run_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
}

pub(crate) fn spec(i: u64) -> Spec {
    Spec {
        time_ms: 1_000 + i * 10,
        run_id: (i % 4 != 3).then(|| format!("run-{}", i % 3)),
        actor: ["alice", "bob"][(i % 2) as usize].into(),
        action: ["exec", "read", "approve"][(i % 3) as usize].into(),
        target: (!i.is_multiple_of(5)).then(|| format!("host-{}", i % 2)),
    }
}

fn hash_of(seq: u64) -> String {
    hex::encode(Sha256::digest(seq.to_string().as_bytes()))
}

/// A trivial seal: rows continuing the tip, hash = sha256 of the seq.
pub(crate) fn seal(tip: &AuditTip, specs: &[Spec]) -> AuditBatch {
    let (mut seq, mut prev) = match &tip.last {
        Some(last) => {
            let last: TestRecord = serde_json::from_slice(last).unwrap();
            (last.seq + 1, last.hash)
        }
        None => (0, "genesis".to_owned()),
    };
    let mut rows = Vec::new();
    for s in specs {
        let record = TestRecord {
            seq,
            time_ms: s.time_ms,
            run_id: s.run_id.clone(),
            actor: s.actor.clone(),
            action: s.action.clone(),
            target: s.target.clone(),
            hash: hash_of(seq),
            prev_hash: prev.clone(),
        };
        rows.push(AuditRow {
            seq,
            time_ms: s.time_ms,
            run_id: s.run_id.clone(),
            actor: s.actor.clone(),
            action: s.action.clone(),
            resource: s.target.clone(),
            credential: None,
            hash: record.hash.clone(),
            prev_hash: prev,
            canonical: serde_json::to_vec(&record).unwrap(),
        });
        prev = record.hash;
        seq += 1;
    }
    AuditBatch {
        checkpoint: format!("checkpoint at {seq}").into_bytes(),
        rows,
    }
}

pub(crate) fn commit(
    db: &Database,
    specs: &[Spec],
    then: &[Batch],
) -> Result<(AuditBatch, Vec<Result<(), StoreError>>), StoreError> {
    db.backend()
        .audit_commit(&mut |tip: &AuditTip| Ok(seal(tip, specs)), then)
}
