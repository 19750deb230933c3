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
pub mod inspect;
pub mod instance;
pub mod logging;
pub mod mac;
pub mod masquerade;
pub mod metrics;
pub mod monitor;
pub mod operator;
pub mod pinned_maps;
pub mod reconcile;
pub mod reconciler;
pub mod serving;
pub mod sources;
