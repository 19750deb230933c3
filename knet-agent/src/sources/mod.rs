//! Node sources. Each turns its world (a file, the Kubernetes API, etcd) into the
//! full desired set of nodes and publishes it on a `watch` channel; none of
//! them calls into the agent. `reconcile` takes it from there.

pub mod etcd;
pub mod file;
pub mod kubernetes;

use std::{sync::Arc, time::SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cluster::NodeSet;

/// Where the agent learns the cluster's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// No other nodes: serve this node's pods only (reconciles to the empty set).
    None,
    /// The static node file (`nodes_file`), watched for changes.
    File,
    /// `Node` objects of the Kubernetes API.
    Kubernetes,
    /// Subnet leases in etcd, in flannel's layout.
    Etcd,
}

/// A source's latest word.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The full desired set; `None` until the source has a first full view.
    pub nodes: Option<Arc<NodeSet>>,
    /// Bumped whenever `nodes` is replaced.
    pub version: u64,
    /// The source is in step with its world (watching, or the file's
    /// latest version taken).
    pub in_sync: bool,
    /// Why the source's world is not what `nodes` says (a rejected file, a
    /// failing watch); `nodes` keeps the last good set meanwhile.
    pub error: Option<String>,
    /// When `nodes` was last confirmed in full (a list or a file read).
    pub last_sync: Option<SystemTime>,
    /// What produced `nodes` ("node file /etc/knet/nodes changed",
    /// "Kubernetes Node node-3 updated"): the cause logged with each change.
    pub cause: String,
}

/// The publishing side, shared by every source.
pub struct Publisher {
    tx: watch::Sender<Published>,
}

impl Publisher {
    pub fn new() -> (Self, watch::Receiver<Published>) {
        let (tx, rx) = watch::channel(Published::default());
        (Publisher { tx }, rx)
    }

    /// A new full set, in step, and what produced it.
    pub fn nodes(&self, nodes: NodeSet, cause: String) {
        self.tx.send_modify(|p| {
            p.nodes = Some(Arc::new(nodes));
            p.cause = cause;
            p.version += 1;
            p.in_sync = true;
            p.error = None;
            p.last_sync = Some(SystemTime::now());
        });
    }

    /// The source lost step: the last set stays, with the reason.
    pub fn failed(&self, error: String) {
        self.tx.send_if_modified(|p| {
            let changed = p.in_sync || p.error.as_deref() != Some(error.as_str());
            p.in_sync = false;
            p.error = Some(error);
            changed
        });
    }

    /// True once every receiver is gone (the agent is stopping).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes once every receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The source of an agent without one: the empty set, once.
pub fn none() -> watch::Receiver<Published> {
    let (publisher, rx) = Publisher::new();
    publisher.nodes(NodeSet::default(), "no node source".into());
    // The sender may go: receivers keep the last value.
    rx
}
