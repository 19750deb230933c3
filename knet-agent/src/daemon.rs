//! `knet-agent run`: load the data path, start the node source and the
//! reconciler, serve the local API, and finish starting once the first
//! reconcile is done.
//!
//! Start-up order keeps the data path running throughout: pinned links and
//! maps are adopted, not flushed, and links nobody took over are pruned only
//! after both the endpoints and the first reconcile have taken theirs.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::FutureExt;
use tokio::sync::{watch, Mutex};

use crate::{
    agent::Agent,
    api,
    cni::{
        conflist::{self, ConflistOptions},
        spec::DEFAULT_MTU,
    },
    config::{Config, Mode, Source},
    dataplane::{Dataplane, PinnedMaps},
    host::Netlink,
    mac::MacAddr,
    metrics::{self, Metrics},
    reconcile::Local,
    reconciler::{local_pod_cidr, ClusterView, Reconciler},
    sources::{self, etcd, kubernetes, Publisher},
};

pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
    tracing::info!(node = %config.node_name, source = ?config.source.kind(), pins = %config.bpf_pin_dir.display(), "starting");
    crate::dataplane::ensure_bpffs(std::path::Path::new("/sys/fs/bpf"))?;
    let _instance = crate::instance::acquire(&config.bpf_pin_dir, &config.api_socket)?;
    let metrics_listener = match config.metrics_address {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };
    let (mut dataplane, node_maps) =
        Dataplane::load(&config.bpf_pin_dir, config.ebpf_object.as_deref(), config.ebpf_log)?;
    if config.ebpf_log {
        dataplane.forward_ebpf_logs()?;
    }
    let pinned = PinnedMaps::open(&config.bpf_pin_dir)?;
    let agent = Agent::new(config.node_name.clone(), config.bpf_pin_dir.clone(), dataplane, Netlink::connect()?);
    let agent = Arc::new(Mutex::new(agent));
    if let Some(cidr) = config.pod_cidr {
        agent.lock().await.adopt(cidr).await?;
    }

    let (published, kube) = match &config.source {
        Source::None => (sources::none(), None),
        Source::File(path) => {
            let (publisher, rx) = Publisher::new();
            tokio::spawn(sources::file::watch(path.clone(), config.node_name.clone(), publisher));
            (rx, None)
        }
        Source::Kubernetes { kubeconfig } => {
            let client = kubernetes::client(kubeconfig.as_deref()).await?;
            let (publisher, rx) = Publisher::new();
            tokio::spawn(kubernetes::watch(client.clone(), config.node_name.clone(), publisher));
            (rx, Some(client))
        }
        Source::Etcd(settings) => {
            let me = etcd::flannel::Me {
                name: config.node_name.clone(),
                public_ip: settings.public_ip,
                mode: config.mode,
                vni: config.vni,
            };
            let (publisher, rx) = Publisher::new();
            tokio::spawn(etcd::watch(settings.clone(), me, publisher));
            (rx, None)
        }
    };
    let local = Local {
        name: config.node_name.clone(),
        mode: config.mode,
        vni: config.vni,
        pod_cidr: config.pod_cidr,
        big_tcp: config.big_tcp,
    };
    let metrics = Metrics::new();
    let (reconciler, mut cluster) =
        Reconciler::new(node_maps, agent.clone(), local, config.source.kind(), metrics.clone()).await?;
    tokio::spawn(reconciler.run(published));

    // A static source is the operator's own file: a bad one stops the start
    // with its line named. The API server's and etcd's worlds may get
    // better: there the agent serves, not ready, and keeps trying.
    if config.source.is_static() {
        let first = first_outcome(&mut cluster).await?;
        if let Some(e) = first.source.error {
            bail!(e);
        }
    }
    tokio::spawn(finish_start(agent.clone(), cluster.clone(), kube, config.clone()));

    let shared = api::Shared { agent, cluster, metrics };
    let shutdown = shutdown.shared();
    let metrics_server = metrics_listener.map(|listener| {
        let sources = metrics::Sources { shared: shared.clone(), maps: pinned };
        tokio::spawn(metrics::serve(listener, sources, shutdown.clone()))
    });
    api::serve(shared, &config.api_socket, shutdown).await?;
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    tracing::info!("stopped; maps and links stay pinned for the next agent");
    Ok(())
}

/// The first reconcile's outcome: a success, or an error.
async fn first_outcome(cluster: &mut watch::Receiver<ClusterView>) -> Result<ClusterView> {
    let view = cluster
        .wait_for(|v| v.source.generation > 0 || v.source.error.is_some())
        .await
        .context("the reconciler stopped")?;
    Ok(view.clone())
}

/// After the first successful reconcile: serve the endpoints (with the
/// pod CIDR the source gave, if it was not configured), prune links no one
/// took over, and tell the Kubernetes API the node's network is up.
async fn finish_start(
    agent: Arc<Mutex<Agent>>,
    mut cluster: watch::Receiver<ClusterView>,
    kube: Option<kube::Client>,
    config: Config,
) {
    let node_name = config.node_name.clone();
    let Ok(view) = cluster.wait_for(|v| v.source.generation > 0).await.map(|v| v.clone()) else { return };
    let pod_cidr = {
        let mut agent = agent.lock().await;
        if agent.pod_cidr().is_none() {
            let Some(cidr) = local_pod_cidr(&view) else { return };
            if let Err(e) = agent.adopt(cidr).await {
                tracing::error!(error = format!("{e:#}"), "cannot adopt the pinned endpoints");
                return;
            }
            tracing::info!(pod_cidr = %cidr, "serving this node's pods");
        }
        if let Err(e) = agent.prune_links() {
            tracing::warn!(error = format!("{e:#}"), "cannot prune stale links");
        }
        agent.pod_cidr()
    };
    if let (Some(path), Some(cidr)) = (&config.cni_conf_file, pod_cidr) {
        // Written once the node serves pods: a kubelet keeps the node
        // NotReady until a network configuration exists.
        let options = ConflistOptions {
            pod_cidr: cidr,
            mtu: view.underlay_mtu.unwrap_or(DEFAULT_MTU),
            agent_socket: &config.api_socket,
        };
        match conflist::write(path, &conflist::conflist(&options)) {
            Ok(()) => tracing::info!(file = %path.display(), "CNI configuration written"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "cannot write the CNI configuration"),
        }
    }
    let Some(client) = kube else { return };
    // In VXLAN mode, flannel's annotations first: a flannel node programs
    // its route, neighbour and FDB entry toward this one from them, as it
    // does for a flannel peer, so pods may be scheduled here once the
    // condition below is cleared.
    if let (Mode::Vxlan, Some(me)) = (config.mode, &view.local) {
        let vtep = kubernetes::FlannelVtep { public_ip: me.underlay_ip, mac: MacAddr::vtep_for(me.underlay_ip) };
        retry("publish the flannel annotations", || {
            kubernetes::publish_flannel_annotations(client.clone(), &node_name, vtep, config.vni)
        })
        .await;
        tracing::info!(node = %node_name, vtep_mac = %vtep.mac, public_ip = %vtep.public_ip, "flannel annotations published");
    }
    retry("clear NetworkUnavailable", || kubernetes::mark_network_available(client.clone(), &node_name)).await;
    tracing::info!(node = %node_name, "NetworkUnavailable cleared");
}

/// Runs `f` until it succeeds, with backoff from 0.5 s to 30 s.
async fn retry<F: std::future::Future<Output = Result<()>>>(what: &str, mut f: impl FnMut() -> F) {
    let mut backoff = std::time::Duration::from_millis(500);
    while let Err(e) = f().await {
        tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "cannot {what}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}
