//! Pod creation time as kubelet sees it: RunPodSandbox through a real
//! containerd, whose CNI ADD runs knet's conflist (knet, host-local,
//! portmap) or the reference `bridge` plugin's (bridge, host-local,
//! portmap). Both runtimes sit on nodes of one cluster, each node with its
//! agent, so the two differ only in the network configuration.

use std::time::Instant;

use anyhow::{Context, Result};
use knet_agent::config::Mode;
use knet_tests::{
    cluster::{self, Cluster},
    containerd::{
        conflist::{self, knet_network, BridgeNetwork},
        Containerd, PodMeta,
    },
};

/// `reps` RunPodSandbox timings per plugin, interleaved (the order of the
/// two flips every repetition), each sandbox stopped and removed after it
/// was timed: (plugin `"knet"` or `"bridge"`, repetition from 1, ms).
/// One untimed sandbox per runtime first takes the first-use costs
/// (snapshot, shim binary, plugin binaries in the page cache).
pub fn measure(reps: u32) -> Result<Vec<(String, u32, f64)>> {
    let cluster = Cluster::new(2, 0, Mode::Vxlan)?;
    let knet_net = knet_network(&cluster, 0)?;
    let bridge_net = BridgeNetwork::new(&cluster::pod_cidr(1))?;
    // Declared last, dropped first: sandboxes go while agents and IPAM
    // directories are still there.
    let runtimes = [
        ("knet", Containerd::start(&cluster.nodes[0].ns, &conflist::knet(&knet_net))?),
        ("bridge", Containerd::start(&cluster.nodes[1].ns, &bridge_net.conflist())?),
    ];
    let mut n = 0;
    let mut pod = |rep: u32| {
        n += 1;
        PodMeta {
            name: format!("bench-{rep}-{n}"),
            namespace: "bench".into(),
            uid: format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id()),
        }
    };
    for (plugin, rt) in &runtimes {
        let id = rt.run_pod(&pod(0)).with_context(|| format!("warm-up sandbox with {plugin}"))?;
        rt.delete_pod(&id)?;
    }
    let mut samples = Vec::new();
    for rep in 1..=reps {
        let order: [usize; 2] = if rep % 2 == 1 { [0, 1] } else { [1, 0] };
        for (plugin, rt) in order.map(|i| &runtimes[i]) {
            let meta = pod(rep);
            let start = Instant::now();
            let id = rt.run_pod(&meta).with_context(|| format!("RunPodSandbox with {plugin}, rep {rep}"))?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            rt.delete_pod(&id).with_context(|| format!("removing the {plugin} sandbox of rep {rep}"))?;
            samples.push((plugin.to_string(), rep, ms));
        }
    }
    Ok(samples)
}
