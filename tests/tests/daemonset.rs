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
    agent_container: String,
    _pins: PinDir,
    _config: TempDir,
    node: Node,
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
        let name = cluster::node_name(i);
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
        let ds = daemonset();
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.host_network, Some(true));
        let meta = PodMeta { name: format!("knet-{i}"), namespace: "kube-system".into(), uid: unique_name("uid") };
        let sandbox_config = Cri::sandbox_config(&meta, &runtime.cgroup_parent(&meta.uid), true);
        let sandbox = runtime.cri().run_sandbox(sandbox_config.clone()).unwrap();
        // The init container that installs the plugin, then the agent.
        let install = pod.init_containers.as_ref().unwrap().iter().find(|c| c.name == "install-cni").unwrap();
        let id = runtime
            .cri()
            .run_container(&sandbox, &sandbox_config, container_config(install, &ds, &name, &paths, api))
            .unwrap();
        wait::until("install-cni to finish", WAIT, || {
            let s = runtime.cri().container_status(&id).ok()?.status?;
            (s.state == k8s_cri::v1::ContainerState::ContainerExited as i32).then_some(s.exit_code)
        })
        .map(|code| assert_eq!(code, 0, "install-cni failed:\n{}", runtime.log_tail(40)))
        .unwrap();
        assert!(runtime.cni_bin_dir().join("knet").is_file(), "install-cni did not install the plugin");
        let agent = pod.containers.iter().find(|c| c.name == "knet-agent").unwrap();
        let agent_container = runtime
            .cri()
            .run_container(&sandbox, &sandbox_config, container_config(agent, &ds, &name, &paths, api))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", runtime.log_tail(40)));
        // The readiness probe, run as kubelet runs it.
        let probe = agent.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.clone().unwrap();
        wait::until("the agent's readiness probe to pass", WAIT, || {
            let (code, _, _) = runtime.cri().exec_sync(&agent_container, &probe, 5).ok()?;
            (code == 0).then_some(())
        })
        .unwrap_or_else(|e| {
            let out = runtime.cri().exec_sync(&agent_container, &probe, 5);
            panic!("{e:#}: {out:?}\n{}", runtime.log_tail(40))
        });
        KnetNode { runtime, agent_container, _pins: pins, _config: config, node }
    }
}

#[test]
fn the_knet_image_run_as_the_daemonset_runs_it_forwards_pod_traffic_across_nodes() {
    let image = PathBuf::from(
        std::env::var_os("KNET_IMAGE_ARCHIVE").expect("run with `cargo xtask test` (it builds the image)"),
    );
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

    let nodes: Vec<KnetNode> = (0..2).map(|i| KnetNode::start(&fabric, i, &api, &image)).collect();
    for (i, n) in nodes.iter().enumerate() {
        // The agent wrote its network configuration into the runtime's directory.
        let conflist = std::fs::read_to_string(n.runtime.cni_conf_dir().join("10-knet.conflist")).unwrap();
        assert!(conflist.contains(&cluster::pod_cidr(i)), "{conflist}");
        // And cleared NetworkUnavailable on its own Node.
        wait::until("NetworkUnavailable cleared", WAIT, || {
            let node = api.node(&cluster::node_name(i))?;
            let conds = node["status"]["conditions"].as_array()?.clone();
            conds.iter().any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False").then_some(())
        })
        .unwrap();
    }

    // Pods made through the CRI, one per node, reach each other across nodes.
    let pods: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let meta = PodMeta { name: format!("web-{i}"), namespace: "shop".into(), uid: unique_name("uid") };
            let id =
                wait::until("containerd to take the agent's CNI configuration", WAIT, || n.runtime.run_pod(&meta).ok())
                    .unwrap_or_else(|e| panic!("{e:#}\n{}", n.runtime.log_tail(40)));
            n.runtime.sandbox(&id).unwrap()
        })
        .collect();
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
    for n in &nodes {
        let probe: Vec<String> = ["/usr/local/bin/knet-agent", "probe", "live"].map(String::from).into();
        assert_eq!(n.runtime.cri().exec_sync(&n.agent_container, &probe, 5).unwrap().0, 0);
        let _ = &n.node;
    }
}
