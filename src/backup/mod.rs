//! The backup run: quiesce, vzdump, follow the task, release, record.

pub mod follow;
pub mod freeze;
pub mod logscan;
pub mod poll;
pub mod run;
