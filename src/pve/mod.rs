//! PVE API client (in progress)
