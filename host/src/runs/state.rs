//! The run state machine: the states a run passes through and the only moves allowed.
//!
//! Threat: a run's outcome rewritten after the fact (a finished run restarted, a cancelled
//! run later reported as succeeded, a denied run started anyway). [`RunState::can_become`] is
//! the single table every transition is checked against, and terminal states have no exits.
//!
//! ```text
//! awaiting-approval ─▶ queued ─▶ running ─▶ succeeded | failed | cancelled
//!         │               │                  | timed-out | interrupted | lost
//!         └───────────────┴─▶ denied | cancelled
//! ```

use serde::{Deserialize, Serialize};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Waiting for the approvals its process requires.
    AwaitingApproval,
    /// Accepted; waiting for a bridge to start it.
    Queued,
    /// Executing on a bridge.
    Running,
    /// The task returned success.
    Succeeded,
    /// The task returned an error or trapped.
    Failed,
    /// A user cancelled it.
    Cancelled,
    /// It exceeded its wall-time limit and was killed.
    TimedOut,
    /// Policy or an approver refused it; it never ran.
    Denied,
    /// The server stopped while it was running; its effects on targets are unknown.
    Interrupted,
    /// The remote bridge running it stopped renewing its claim (killed, cut off, revoked);
    /// its effects on targets are unknown.
    Lost,
}

impl RunState {
    /// Every state, in life order.
    pub const ALL: [RunState; 10] = [
        RunState::AwaitingApproval,
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::TimedOut,
        RunState::Denied,
        RunState::Interrupted,
        RunState::Lost,
    ];

    /// True for states a run never leaves.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RunState::AwaitingApproval | RunState::Queued | RunState::Running
        )
    }

    /// Whether a run in `self` may move to `next`. Staying in the same state is not a move.
    pub fn can_become(self, next: RunState) -> bool {
        use RunState::*;
        match self {
            AwaitingApproval => matches!(next, Queued | Denied | Cancelled),
            Queued => matches!(next, Running | Cancelled | Denied),
            Running => matches!(
                next,
                Succeeded | Failed | Cancelled | TimedOut | Interrupted | Lost
            ),
            Succeeded | Failed | Cancelled | TimedOut | Denied | Interrupted | Lost => false,
        }
    }

    /// The state's name as it appears in JSON, audit actions (`run.<name>`) and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::AwaitingApproval => "awaiting-approval",
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed-out",
            RunState::Denied => "denied",
            RunState::Interrupted => "interrupted",
            RunState::Lost => "lost",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RunState::*;
    use super::*;

    /// The whole table, written out independently of `can_become`'s match.
    const LEGAL: &[(RunState, RunState)] = &[
        (AwaitingApproval, Queued),
        (AwaitingApproval, Denied),
        (AwaitingApproval, Cancelled),
        (Queued, Running),
        (Queued, Cancelled),
        (Queued, Denied),
        (Running, Succeeded),
        (Running, Failed),
        (Running, Cancelled),
        (Running, TimedOut),
        (Running, Interrupted),
        (Running, Lost),
    ];

    #[test]
    fn transition_table_allows_exactly_the_legal_moves() {
        for from in RunState::ALL {
            for to in RunState::ALL {
                let legal = LEGAL.contains(&(from, to));
                assert_eq!(from.can_become(to), legal, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_states_have_no_exits() {
        for from in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(
                RunState::ALL.iter().all(|to| !from.can_become(*to)),
                "{from}"
            );
        }
        let live: Vec<_> = RunState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        assert_eq!(live, [AwaitingApproval, Queued, Running]);
    }

    #[test]
    fn names_match_the_serde_encoding() {
        for state in RunState::ALL {
            let json = serde_json::to_string(&state).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(state.to_string(), state.as_str());
            let back: RunState = serde_json::from_str(&json).unwrap_or(Queued);
            assert_eq!(back, state);
        }
    }
}
