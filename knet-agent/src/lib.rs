//! knet's node agent as a library: the daemon's parts, shared by the
//! `knet-agent` binary and the `knet` CNI plugin (a client of `api` only).

pub mod agent;
pub mod api;
pub mod cluster;
pub mod cni;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod endpoints;
pub mod host;
pub mod instance;
pub mod mac;
pub mod masquerade;
pub mod monitor;
pub mod pinned_maps;
pub mod reconcile;
pub mod reconciler;
pub mod sources;
