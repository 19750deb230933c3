//! knet as it is deployed: on two nodes, a real containerd runs the knet
//! image as `deploy/50-daemonset.yaml` describes its pod — host network,
//! the container's command, env, mounts, capabilities and probes taken from
//! the manifest itself — against the HTTPS Kubernetes test API server with
//! a service account, as a kubelet runs it. The agent writes the CNI
//! configuration; then pods made through the CRI reach each other across
//! the nodes. Needs root and `cargo xtask test` (which builds the image).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
};
use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Container};
use knet_tests::{
    cluster,
    cni::TempDir,
    containerd::{path_traffic, Containerd, Cri, PodMeta},
    kube_api::KubeApi,
    netns::unique_name,
    wait, Netns, Node,
};

const WAIT: Duration = Duration::from_secs(60);

fn deploy(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)).unwrap()
}

fn daemonset() -> DaemonSet {
    serde_saphyr::from_str(&deploy("50-daemonset.yaml")).unwrap()
}

/// The ConfigMap's agent.toml with this run's own pin directory.
fn agent_toml(pin_dir: &str) -> String {
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_saphyr::from_str(&deploy("40-configmap.yaml")).unwrap();
    let text = cm.data.unwrap()["agent.toml"].clone();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    table.insert("bpf_pin_dir".into(), toml::Value::String(pin_dir.into()));
    toml::to_string(&table).unwrap()
}

/// A bpffs directory removed on drop (what the agent pinned there).
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One node as a kubelet node: containerd in its namespace, the knet
/// image imported, the agent's pod running.
struct KnetNode {
    // Drop order: containerd (its sandboxes, the agent's last) before the
    // pins and files the agent used, and the node's namespace last.
    runtime: Containerd,
    /// (sandbox, agent container) of the running agent pod.
    agent: Option<(String, String)>,
    index: usize,
    paths: BTreeMap<String, PathBuf>,
    _pins: PinDir,
    config: TempDir,
    _node: Node,
}

/// The kubelet's translation of the DaemonSet's agent container into a
/// CRI container config, with this node's host paths.
fn container_config(
    c: &Container,
    ds: &DaemonSet,
    node_name: &str,
    paths: &BTreeMap<String, PathBuf>,
    api: &KubeApi,
) -> ContainerConfig {
    let spec = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volumes = spec.volumes.as_ref().unwrap();
    let mut mounts = Vec::new();
    for m in c.volume_mounts.as_ref().unwrap() {
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        let host = match (&v.host_path, &v.config_map) {
            (Some(h), _) => {
                paths.get(&h.path).cloned().unwrap_or_else(|| panic!("no test path for hostPath {}", h.path))
            }
            (None, Some(_)) => paths["configmap"].clone(),
            _ => panic!("volume {} is neither a hostPath nor the ConfigMap", v.name),
        };
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => MountPropagation::PropagationBidirectional,
            _ => MountPropagation::PropagationPrivate,
        };
        mounts.push(Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only.unwrap_or(false),
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    // What the kubelet adds for a pod with a service account.
    mounts.push(Mount {
        container_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        host_path: api.service_account().display().to_string(),
        readonly: true,
        ..Default::default()
    });
    let mut envs: Vec<KeyValue> = c
        .env
        .iter()
        .flatten()
        .map(|e| {
            let field = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()).map(|f| f.field_path.as_str());
            let value = match field {
                Some("spec.nodeName") => node_name.to_string(),
                Some(other) => panic!("the test has no value for fieldRef {other}"),
                None => e.value.clone().unwrap_or_default(),
            };
            KeyValue { key: e.name.clone(), value }
        })
        .collect();
    envs.push(KeyValue { key: "KUBERNETES_SERVICE_HOST".into(), value: api.address().ip().to_string() });
    envs.push(KeyValue { key: "KUBERNETES_SERVICE_PORT".into(), value: api.address().port().to_string() });
    let sc = c.security_context.as_ref().unwrap();
    let caps = sc.capabilities.as_ref().unwrap();
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: c.name.clone(), attempt: 0 }),
        image: Some(ImageSpec { image: c.image.clone().unwrap(), ..Default::default() }),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        envs,
        mounts,
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: caps.add.clone().unwrap_or_default(),
                    drop_capabilities: caps.drop.clone().unwrap_or_default(),
                    ..Default::default()
                }),
                privileged: sc.privileged.unwrap_or(false),
                namespace_options: Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl KnetNode {
    fn start(fabric: &Netns, i: usize, api: &KubeApi, image: &Path) -> Self {
        let node = Node::on_fabric(&format!("ds{i}"), cluster::node_address(i), fabric, &format!("d{i}")).unwrap();
        // As on any kubelet node: the agent's container cannot write /proc/sys.
        node.ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
        let runtime = Containerd::start_empty(&node.ns).unwrap();
        runtime.import(image).unwrap();
        let pins = PinDir(PathBuf::from(format!("/sys/fs/bpf/{}", unique_name("ds"))));
        let config = TempDir::new("knet-config").unwrap();
        std::fs::write(config.0.join("agent.toml"), agent_toml(&pins.0.display().to_string())).unwrap();
        // The host paths the DaemonSet mounts, as this test node has them:
        // /run is containerd's own (so the CNI plugin it runs finds the
        // agent's socket at /run/knet), the CNI directories are its.
        let paths: BTreeMap<String, PathBuf> = [
            ("/sys/fs/bpf", PathBuf::from("/sys/fs/bpf")),
            ("/run/knet", PathBuf::from("/run/knet")),
            ("/etc/cni/net.d", runtime.cni_conf_dir()),
            ("/opt/cni/bin", runtime.cni_bin_dir()),
            ("configmap", config.0.clone()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        let mut n = KnetNode { runtime, agent: None, index: i, paths, _pins: pins, config, _node: node };
        n.run_agent(api);
        n
    }

    /// The DaemonSet's pod on this node, as kubelet starts it: the
    /// install-cni init container to completion, then the agent, ready by
    /// the manifest's own readiness probe.
    fn run_agent(&mut self, api: &KubeApi) {
        let name = cluster::node_name(self.index);
        let ds = daemonset();
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.host_network, Some(true));
        let cri = self.runtime.cri();
        let meta = PodMeta {
            name: format!("knet-{}", unique_name("pod")),
            namespace: "kube-system".into(),
            uid: unique_name("uid"),
        };
        let sandbox_config = Cri::sandbox_config(&meta, &self.runtime.cgroup_parent(&meta.uid), true);
        let sandbox = cri.run_sandbox(sandbox_config.clone()).unwrap();
        let install = pod.init_containers.as_ref().unwrap().iter().find(|c| c.name == "install-cni").unwrap();
        let id = cri
            .run_container(&sandbox, &sandbox_config, container_config(install, &ds, &name, &self.paths, api))
            .unwrap();
        wait::until("install-cni to finish", WAIT, || {
            let s = cri.container_status(&id).ok()?.status?;
            (s.state == k8s_cri::v1::ContainerState::ContainerExited as i32).then_some(s.exit_code)
        })
        .map(|code| assert_eq!(code, 0, "install-cni failed:\n{}", self.runtime.log_tail(40)))
        .unwrap();
        assert!(self.runtime.cni_bin_dir().join("knet").is_file(), "install-cni did not install the plugin");
        let agent = pod.containers.iter().find(|c| c.name == "knet-agent").unwrap();
        let container = cri
            .run_container(&sandbox, &sandbox_config, container_config(agent, &ds, &name, &self.paths, api))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.runtime.log_tail(40)));
        let probe = agent.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.clone().unwrap();
        wait::until("the agent's readiness probe to pass", WAIT, || {
            let (code, _, _) = cri.exec_sync(&container, &probe, 5).ok()?;
            (code == 0).then_some(())
        })
        .unwrap_or_else(|e| {
            let out = cri.exec_sync(&container, &probe, 5);
            panic!("{e:#}: {out:?}\n{}", self.runtime.log_tail(40))
        });
        self.agent = Some((sandbox, container));
    }

    /// Deletes the agent's pod as kubelet does: the container stopped with
    /// its grace period, then the sandbox.
    fn remove_agent(&mut self) {
        let (sandbox, container) = self.agent.take().expect("an agent pod");
        let grace = daemonset().spec.unwrap().template.spec.unwrap().termination_grace_period_seconds.unwrap();
        self.runtime.cri().stop_container(&container, grace).unwrap();
        self.runtime.delete_pod(&sandbox).unwrap();
    }

    /// The agent's API socket as the host reaches it.
    fn socket(&self) -> PathBuf {
        self.runtime.host_path(Path::new("/run/knet/agent.sock"))
    }

    /// (id, tag) of the program on the tcx ingress of `link`.
    fn program(&self, link: &str) -> (u64, String) {
        let (status, v) =
            knet_tests::agent::request(&self.socket(), "GET", &format!("/v1/datapath/links/{link}"), None).unwrap();
        assert_eq!(status, 200, "{v}");
        let ids = v["tcx_ingress_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 1, "{v}");
        (ids[0]["id"].as_u64().unwrap(), ids[0]["tag"].as_str().unwrap().to_string())
    }

    /// A workload pod made through the CRI (once the runtime has taken the
    /// agent's network configuration).
    fn run_pod(&self, name: &str) -> knet_tests::containerd::Sandbox {
        let meta = PodMeta { name: name.into(), namespace: "shop".into(), uid: unique_name("uid") };
        let id =
            wait::until("containerd to take the agent's CNI configuration", WAIT, || self.runtime.run_pod(&meta).ok())
                .unwrap_or_else(|e| panic!("{e:#}\n{}", self.runtime.log_tail(40)));
        self.runtime.sandbox(&id).unwrap()
    }
}

/// A fabric with an HTTPS API server on the outside host listing both nodes.
struct Control {
    api: KubeApi,
    _outside: Netns,
    fabric: Netns,
}

fn control() -> Control {
    let fabric = Netns::new("fabric").unwrap();
    fabric.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    fabric.ip(&["link", "set", "br0", "up"]).unwrap();
    let outside = Netns::new("outside").unwrap();
    fabric.ip(&["link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", outside.name()]).unwrap();
    fabric.ip(&["link", "set", "out0", "master", "br0", "up"]).unwrap();
    outside.ip(&["addr", "add", &format!("{}/24", cluster::OUTSIDE), "dev", "eth0"]).unwrap();
    outside.ip(&["link", "set", "eth0", "up"]).unwrap();
    let api = KubeApi::start_tls(&outside, cluster::OUTSIDE).unwrap();
    for i in 0..2 {
        api.set_node(&cluster::node_name(i), cluster::node_address(i), Some(&cluster::pod_cidr(i)));
    }
    // A node's bpffs, as the DaemonSet's mount-bpf-fs init container leaves it.
    knet_tests::cmd::run(&knet_tests::agent::agent_binary().unwrap().display().to_string(), &["mount-bpffs"]).unwrap();
    Control { api, _outside: outside, fabric }
}

fn image() -> PathBuf {
    PathBuf::from(std::env::var_os("KNET_IMAGE_ARCHIVE").expect("run with `cargo xtask test` (it builds the image)"))
}

#[test]
fn the_knet_image_run_as_the_daemonset_runs_it_forwards_pod_traffic_across_nodes() {
    let c = control();
    let nodes: Vec<KnetNode> = (0..2).map(|i| KnetNode::start(&c.fabric, i, &c.api, &image())).collect();
    for (i, n) in nodes.iter().enumerate() {
        // The agent wrote its network configuration into the runtime's directory.
        let conflist = std::fs::read_to_string(n.runtime.cni_conf_dir().join("10-knet.conflist")).unwrap();
        assert!(conflist.contains(&cluster::pod_cidr(i)), "{conflist}");
        // And cleared NetworkUnavailable on its own Node.
        wait::until("NetworkUnavailable cleared", WAIT, || {
            let node = c.api.node(&cluster::node_name(i))?;
            let conds = node["status"]["conditions"].as_array()?.clone();
            conds.iter().any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False").then_some(())
        })
        .unwrap();
    }
    // Pods made through the CRI, one per node, reach each other across nodes.
    let pods: Vec<_> = nodes.iter().enumerate().map(|(i, n)| n.run_pod(&format!("web-{i}"))).collect();
    for (i, p) in pods.iter().enumerate() {
        assert!(p.ready);
        assert!(p.ip.to_string().starts_with(&format!("10.244.{i}.")), "{}", p.ip);
    }
    path_traffic::ping(&pods[0].netns, pods[1].ip, 2).unwrap();
    path_traffic::ping(&pods[1].netns, pods[0].ip, 2).unwrap();
    path_traffic::tcp_transfer(&pods[0].netns, &pods[1].netns, pods[1].ip, 1 << 20).unwrap();
    // The workload pods go while the agents still serve their CNI DEL.
    for (n, p) in nodes.iter().zip(&pods) {
        n.runtime.delete_pod(&p.id).unwrap();
    }
}

#[test]
fn a_rolling_upgrade_of_the_daemonset_pod_to_another_build_loses_no_ping_and_stalls_no_stream() {
    let upgrade = PathBuf::from(std::env::var_os("KNET_EBPF_UPGRADE_OBJECT").expect("run with `cargo xtask test`"));
    let c = control();
    let mut nodes: Vec<KnetNode> = (0..2).map(|i| KnetNode::start(&c.fabric, i, &c.api, &image())).collect();
    let (p0, p1) = (nodes[0].run_pod("web-0"), nodes[1].run_pod("web-1"));
    path_traffic::ping(&p1.netns, p0.ip, 1).unwrap();
    let veth = p0.host_interfaces[0].clone();
    let before = (nodes[0].program("eth0"), nodes[0].program(&veth));

    // Pings every 2 ms and an iperf3 stream across node 0 while its agent
    // pod is replaced by one whose eBPF programs are another build.
    let ping = path_traffic::background_ping(&p1.netns, p0.ip, 3000, 2).unwrap();
    let (stream, ()) = std::thread::scope(|s| {
        let iperf = s.spawn(|| path_traffic::iperf3_seconds(&p1.netns, &p0.netns, p0.ip, 6));
        std::thread::sleep(Duration::from_secs(2));
        nodes[0].remove_agent();
        std::fs::copy(&upgrade, nodes[0].config.0.join("upgrade.o")).unwrap();
        let toml_path = nodes[0].config.0.join("agent.toml");
        let text = std::fs::read_to_string(&toml_path).unwrap();
        std::fs::write(&toml_path, format!("{text}ebpf_object = \"/etc/knet/upgrade.o\"\n")).unwrap();
        nodes[0].run_agent(&c.api);
        (iperf.join().unwrap(), ())
    });
    let stream = stream.unwrap();
    let (sent, received) = ping.finish().unwrap();
    assert!(sent >= 2000, "only {sent} pings were sent");
    assert_eq!(sent, received, "pings were lost during the upgrade");
    assert!(stream.len() >= 5, "{stream:?}");
    for (second, bps) in stream.iter().enumerate() {
        assert!(*bps > 0.0, "iperf3 stalled in second {second}: {stream:?}");
    }
    let after = (nodes[0].program("eth0"), nodes[0].program(&veth));
    assert_ne!(after.0 .1, before.0 .1, "from_netdev on eth0 is not the new build's");
    assert_ne!(after.1 .1, before.1 .1, "from_pod on the pod's veth is not the new build's");
    path_traffic::ping(&p0.netns, p1.ip, 2).unwrap();
    for (n, p) in nodes.iter().zip([&p0, &p1]) {
        n.runtime.delete_pod(&p.id).unwrap();
    }
}
