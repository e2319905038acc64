//! quiesce (in progress)
