//! Real topologies out of network namespaces, for knet's integration tests,
//! its `cargo xtask run` sandbox and its benchmark.
//!
//! Every namespace, veth, process and directory is owned by an RAII guard
//! and removed on drop, also when a test panics. Names carry the process id
//! and a counter, so no other run uses them. Every wait has a bound.

pub mod agent;
pub mod api_proxy;
pub mod capture;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod containerd;
pub mod etcd;
pub mod flannel;
pub mod frames;
pub mod inject;
pub mod kube_api;
pub mod libcni;
pub mod measure;
pub mod netns;
pub mod test_run;
pub mod topology;
pub mod traffic;
pub mod wait;

pub use agent::{Agent, AgentOptions, InCluster};
pub use netns::Netns;
pub use topology::{Node, Pod};
