//! Every table Warden keeps besides the audit log: what `warden db copy` moves and what the
//! PostgreSQL schema must hold. A table missing here would be silently left behind by a copy,
//! so each domain module's tables are listed (the PostgreSQL tests check that each exists).

use super::TableDef;

/// The domain tables, in no particular order.
pub fn tables() -> [&'static TableDef; 33] {
    [
        &crate::users::USERS,
        &crate::users::ROLES,
        &crate::users::TOKENS,
        &crate::targets::TABLE,
        &crate::vault::CREDENTIALS,
        &crate::vault::lease::LEASES,
        &crate::vault::lease::LEASES_BY_RUN,
        &crate::vault::lease::ACTIVE_LEASES,
        &crate::registry::store::MODULES,
        &crate::registry::store::BLOBS,
        &crate::registry::store::PUBLISHERS,
        &crate::runs::PROCESSES,
        &crate::runs::PROCESS_NAMES,
        &crate::runs::RUNS,
        &crate::runs::RUNS_BY_TIME,
        &crate::runs::RUNS_ACTIVE,
        &crate::runs::cluster::SERVERS,
        &crate::runs::cluster::RUN_CANCELS,
        &crate::runs::schedule::SCHEDULES,
        &crate::runs::approval::APPROVALS,
        &crate::notify::SINKS,
        &crate::notify::CURSORS,
        &crate::notify::DEAD_LETTERS,
        &crate::notify::RULES,
        &crate::notify::SETTINGS,
        &crate::bridge::registry::BRIDGE_TOKENS,
        &crate::bridge::registry::BRIDGES,
        &crate::bridge::registry::BRIDGES_SEEN,
        &crate::triggers::TRIGGERS,
        &crate::triggers::TRIGGER_STATE,
        &crate::triggers::TRIGGER_REPLAY,
        &crate::triggers::TRIGGER_BODIES,
        &crate::ui::session::SESSIONS,
    ]
}
