//! The 403 self-check and least-privilege audit, and the operator's setup runbook (issue 6).
//!
//! Owns:
//! * [`privileges`]: the one definition of which privilege each feature needs ([`PRIVILEGES`])
//!   and which privileges are dangerous anywhere ([`DANGEROUS`]); both the self-check and
//!   `setup-commands` read it.
//! * [`run`]: checks 1–5 against the API, read-only `GET`s only ([`run::run`]); the pure
//!   judgement of each answer is in [`evaluate`].
//! * [`report`]: rows, verdict and exit codes (0 pass, 4 violation, 1 could not run);
//!   [`render`]: the text table.
//! * [`setup`]: the idempotent `pveum` runbook ([`setup_commands`], [`setup_plan`] for JSON).
//!
//! Invariants: the self-check never sends a mutating request; a foreign probe passes only on a
//! 403 naming `/vms/<that vmid>`; the role printed by `setup-commands` and the privileges check 1
//! expects are the same list.

pub mod evaluate;
pub mod privileges;
pub mod render;
pub mod report;
pub mod run;
pub mod setup;
#[cfg(test)]
mod tests;

pub use privileges::{DANGEROUS, Feature, Features, PRIVILEGES};
pub use render::render_text;
pub use report::{
    Check, EXIT_COULD_NOT_RUN, EXIT_OK, EXIT_VIOLATION, Row, SelfCheckInput, SelfCheckReport,
    TlsMode, Verdict,
};
pub use run::run;
pub use setup::{SetupInput, SetupPlan, setup_commands, setup_plan};
