//! What a backend enforces, protection by protection.

use serde::{Deserialize, Serialize};

/// One kind of protection a sandbox can put in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Protection {
    /// The wall-clock timeout kills every process of the execution.
    Timeout,
    /// Memory is capped.
    Memory,
    /// CPU use is capped.
    Cpu,
    /// The number of processes and threads is capped.
    Processes,
    /// stdout and stderr are capped while they stream.
    Output,
    /// Writes to scratch space are capped.
    Scratch,
    /// No network is reachable.
    Network,
    /// The host's files cannot be read or written outside what is granted.
    Filesystem,
    /// The program does not run as root or as the caller's user.
    User,
    /// The host's environment variables do not reach the program.
    Environment,
    /// The program runs in its own session and process group, killed as a whole.
    ProcessGroup,
    /// Dangerous system calls are refused.
    Syscalls,
    /// Nothing of the execution (processes, files, containers) outlives it.
    Cleanup,
}

impl Protection {
    /// The protection's name as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Timeout => "timeout",
            Protection::Memory => "memory",
            Protection::Cpu => "cpu",
            Protection::Processes => "processes",
            Protection::Output => "output",
            Protection::Scratch => "scratch",
            Protection::Network => "network",
            Protection::Filesystem => "filesystem",
            Protection::User => "user",
            Protection::Environment => "environment",
            Protection::ProcessGroup => "process_group",
            Protection::Syscalls => "syscalls",
            Protection::Cleanup => "cleanup",
        }
    }
}

/// Whether a protection is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProtectionState {
    /// Fully in force.
    Enforced,
    /// In force with a gap the detail names.
    Partial,
    /// Not in force: the program is not protected against this.
    NotEnforced,
}

impl ProtectionState {
    /// The state's name as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectionState::Enforced => "enforced",
            ProtectionState::Partial => "partial",
            ProtectionState::NotEnforced => "not_enforced",
        }
    }
}

/// One protection, its state and how (or why not) it is enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProtectionStatus {
    /// Which protection.
    pub protection: Protection,
    /// Whether it is in force.
    pub state: ProtectionState,
    /// How it is enforced, or what is missing and why.
    pub detail: String,
}

/// The protections a backend enforces (or enforced for one execution).
///
/// ```
/// use sandbox_core::{IsolationReport, Protection, ProtectionState};
///
/// let report = IsolationReport::new("demo")
///     .with(Protection::Timeout, ProtectionState::Enforced, "wall clock, kills the group")
///     .with(Protection::Network, ProtectionState::NotEnforced, "host network reachable");
/// assert!(report.is_enforced(Protection::Timeout));
/// assert!(!report.is_enforced(Protection::Network));
/// assert_eq!(report.state(Protection::Network), Some(ProtectionState::NotEnforced));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IsolationReport {
    /// The backend this report describes.
    pub backend: String,
    /// One entry per protection the backend knows about.
    pub protections: Vec<ProtectionStatus>,
}

impl IsolationReport {
    /// An empty report for `backend`.
    pub fn new(backend: impl Into<String>) -> Self {
        IsolationReport {
            backend: backend.into(),
            protections: Vec::new(),
        }
    }

    /// Adds or replaces the entry for `protection`.
    pub fn with(
        mut self,
        protection: Protection,
        state: ProtectionState,
        detail: impl Into<String>,
    ) -> Self {
        self.set(protection, state, detail);
        self
    }

    /// Adds or replaces the entry for `protection` in place.
    pub fn set(
        &mut self,
        protection: Protection,
        state: ProtectionState,
        detail: impl Into<String>,
    ) {
        let entry = ProtectionStatus {
            protection,
            state,
            detail: detail.into(),
        };
        match self
            .protections
            .iter_mut()
            .find(|p| p.protection == protection)
        {
            Some(existing) => *existing = entry,
            None => self.protections.push(entry),
        }
    }

    /// The state of `protection`, if the report mentions it.
    pub fn state(&self, protection: Protection) -> Option<ProtectionState> {
        self.get(protection).map(|p| p.state)
    }

    /// The entry for `protection`, if any.
    pub fn get(&self, protection: Protection) -> Option<&ProtectionStatus> {
        self.protections.iter().find(|p| p.protection == protection)
    }

    /// Whether `protection` is fully enforced.
    pub fn is_enforced(&self, protection: Protection) -> bool {
        self.state(protection) == Some(ProtectionState::Enforced)
    }

    /// The protections that are not fully enforced.
    pub fn gaps(&self) -> impl Iterator<Item = &ProtectionStatus> {
        self.protections
            .iter()
            .filter(|p| p.state != ProtectionState::Enforced)
    }
}

/// One line a protection: name, state, detail, each indented by two spaces.
impl std::fmt::Display for IsolationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for entry in &self.protections {
            writeln!(
                f,
                "  {:<14} {:<13} {}",
                entry.protection.as_str(),
                entry.state.as_str(),
                entry.detail
            )?;
        }
        Ok(())
    }
}
