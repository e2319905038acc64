//! prune (in progress)
