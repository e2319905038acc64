//! The backup run: quiesce, vzdump, follow the task, release, record.

pub mod logscan;
pub mod poll;
