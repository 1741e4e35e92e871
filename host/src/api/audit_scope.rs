//! Which audit records a viewer may see: the audit views must not show what the viewer may
//! not see anywhere else.
//!
//! Threat: a Super Administrator (or any holder of an audit action) reading, through the
//! audit, the runs, commands, inputs and ids of another administrator's process that was
//! never shared with it — what `GET /v1/processes` and `GET /v1/runs` already hide.
//!
//! Rule: a record is shown only when the viewer may see every process it belongs to or
//! names (Cedar action `ViewProcessAudit` on that process). A record belongs to a process
//! through its `run_id` (the run's process; one's own runs are always visible, as on the
//! run routes), and names one through any id in its text fields (`actor`, `detail`, a
//! denial's reason, `outcome`): a process id, a run id, a schedule id (`schedule:<id>`
//! actors included) or a lease id. An id that is none of these any more (a deleted process,
//! a run of `warden exec`) is judged as an unshared administrator's process, so it stays
//! visible to Privileged Administrators only (fail closed).
//!
//! Limits: a record that names a process only by its *name* (not its id) is not filtered
//! by this rule; no record the server writes does that today.

use std::collections::{BTreeSet, HashMap};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::routes::processes::process_ref;
use crate::audit::{AuditRecord, Decision};
use crate::policy::{Action, ProcessRef, Resource};
use crate::runs::Process;

/// Decides the visibility of records for one viewer, remembering each id's answer.
pub(crate) struct AuditScope<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    seen: HashMap<String, bool>,
}

impl<'a> AuditScope<'a> {
    pub(crate) fn new(state: &'a AppState, caller: &'a Caller) -> Self {
        AuditScope {
            state,
            caller,
            seen: HashMap::new(),
        }
    }

    /// Whether the viewer may see `record`.
    pub(crate) fn visible(&mut self, record: &AuditRecord) -> Result<bool, ApiError> {
        let entry = &record.entry;
        let mut ids: BTreeSet<&str> = entry.run_id.as_deref().into_iter().collect();
        let reason = match &entry.decision {
            Decision::Denied { reason, .. } => reason.as_str(),
            Decision::Allowed => "",
        };
        let texts = [
            entry.actor.as_str(),
            entry.detail.as_deref().unwrap_or_default(),
            reason,
            entry.outcome.as_str(),
        ];
        for text in texts {
            ids.extend(uuids(text));
        }
        for id in ids {
            if !self.id_visible(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn id_visible(&mut self, id: &str) -> Result<bool, ApiError> {
        if let Some(known) = self.seen.get(id) {
            return Ok(*known);
        }
        let visible = self.decide(id)?;
        self.seen.insert(id.to_string(), visible);
        Ok(visible)
    }

    fn decide(&mut self, id: &str) -> Result<bool, ApiError> {
        let state = self.state;
        if let Some(process) = state.processes.get(id)? {
            return self.process_visible(Some(&process), id);
        }
        if let Some(run) = state.runs.get(id)? {
            if run.actor == self.caller.user.name {
                return Ok(true);
            }
            let process = state.processes.get(&run.process_id)?;
            return self.process_visible(process.as_ref(), &run.process_id);
        }
        if let Some(schedule) = state.schedules.get(id)? {
            let process = state.processes.get(&schedule.process_id)?;
            return self.process_visible(process.as_ref(), &schedule.process_id);
        }
        if let Ok(Some(lease)) = state.leases.get(id) {
            return self.id_visible(&lease.run_id);
        }
        self.process_visible(None, id)
    }

    /// `ViewProcessAudit` on `process`; a process that is gone is judged as an unshared
    /// administrator's process.
    fn process_visible(&self, process: Option<&Process>, id: &str) -> Result<bool, ApiError> {
        let none = BTreeSet::new();
        let resource = match process {
            Some(p) => process_ref(p, self.state.owner_is_admin(p)?),
            None => ProcessRef {
                id,
                owner: "",
                owner_is_admin: true,
                shared_users: &none,
                shared_roles: &none,
            },
        };
        Ok(self
            .state
            .policy
            .authorize(
                &self.caller.principal,
                Action::ViewProcessAudit,
                Resource::Process(resource),
            )
            .allowed)
    }
}

/// The UUID-shaped words of `text` (8-4-4-4-12 hex digits): the form of every process,
/// run, schedule and lease id.
fn uuids(text: &str) -> impl Iterator<Item = &str> {
    const LEN: usize = 36;
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while at + LEN <= bytes.len() {
            let start = at;
            let candidate = &bytes[start..start + LEN];
            let boundary_before = start == 0 || !bytes[start - 1].is_ascii_hexdigit();
            let boundary_after = bytes
                .get(start + LEN)
                .is_none_or(|b| !b.is_ascii_hexdigit() && *b != b'-');
            if boundary_before && boundary_after && is_uuid(candidate) {
                at = start + LEN;
                return text.get(start..start + LEN);
            }
            at += 1;
        }
        None
    })
}

fn is_uuid(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

#[cfg(test)]
mod tests {
    use super::uuids;

    #[test]
    fn finds_every_uuid_and_nothing_else() {
        let a = "0b6f1c2e-8d4a-4f7e-9c1b-2a3d4e5f6a7b";
        let b = "11111111-2222-4333-8444-555555555555";
        let text = format!(
            "process {a}: run {b}, schedule:{a}; sha256:{}",
            "ab".repeat(32)
        );
        assert_eq!(uuids(&text).collect::<Vec<_>>(), [a, b, a]);
        assert_eq!(uuids("no ids here").count(), 0);
        assert_eq!(
            uuids(&format!("{a}0")).count(),
            0,
            "a longer hex run is not a uuid"
        );
        assert_eq!(uuids(&a[..35]).count(), 0);
        assert_eq!(uuids("ü").count(), 0);
    }
}
