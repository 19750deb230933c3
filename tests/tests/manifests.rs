//! `deploy/` agrees with the agent: every YAML document is a Kubernetes
//! object of k8s-openapi's types with no field those types do not know; the
//! ConfigMap's `agent.toml` is a configuration the agent accepts; the
//! DaemonSet runs subcommands the agent binary has, mounts every host path
//! the agent uses, grants exactly the capabilities it needs, and names the
//! image `cargo xtask image` makes; the ClusterRole grants exactly what the
//! Kubernetes node source does. Needs no root: it reads files and runs
//! `knet-agent ... --help`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Container, ServiceAccount, Volume},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
    serde::{de::DeserializeOwned, Serialize},
};
use knet_agent::config::{Config, Mode, RawConfig, Source, DEFAULT_API_SOCKET, DEFAULT_BPF_PIN_DIR};
use serde_json::Value;

const NAMESPACE: &str = "kube-system";
const AGENT: &str = "/usr/local/bin/knet-agent";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every object of `deploy/`, each exactly once.
struct Deploy {
    service_account: ServiceAccount,
    cluster_role: ClusterRole,
    binding: ClusterRoleBinding,
    config_map: ConfigMap,
    daemon_set: DaemonSet,
}

/// Every document of every `deploy/*.yaml` as (file, JSON value).
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join("deploy"))
        .expect("deploy/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let values: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("deploy/{name} is not YAML: {e}"));
        docs.extend(values.into_iter().filter(|v| !v.is_null()).map(|v| (name.clone(), v)));
    }
    docs
}

/// `value` as a `T`, which must hold every field of it: serialized again,
/// it is the same document (a misspelt field would be dropped).
fn typed<T: DeserializeOwned + Serialize>(file: &str, value: &Value) -> T {
    let object: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
    let again = serde_json::to_value(&object).unwrap();
    assert_eq!(&again, value, "deploy/{file} has fields its kind does not know (left: as the type reads it)");
    object
}

fn deploy() -> Deploy {
    let (mut sa, mut role, mut binding, mut cm, mut ds) = (None, None, None, None, None);
    fn once<T>(slot: &mut Option<T>, file: &str, object: T) {
        assert!(slot.is_none(), "deploy/{file}: a second object of its kind");
        *slot = Some(object);
    }
    for (file, v) in documents() {
        match (v["apiVersion"].as_str().unwrap_or(""), v["kind"].as_str().unwrap_or("")) {
            ("v1", "ServiceAccount") => once(&mut sa, &file, typed(&file, &v)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => once(&mut role, &file, typed(&file, &v)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => once(&mut binding, &file, typed(&file, &v)),
            ("v1", "ConfigMap") => once(&mut cm, &file, typed(&file, &v)),
            ("apps/v1", "DaemonSet") => once(&mut ds, &file, typed(&file, &v)),
            (api, kind) => panic!("deploy/{file}: unexpected object {api} {kind}"),
        }
    }
    Deploy {
        service_account: sa.expect("no ServiceAccount in deploy/"),
        cluster_role: role.expect("no ClusterRole in deploy/"),
        binding: binding.expect("no ClusterRoleBinding in deploy/"),
        config_map: cm.expect("no ConfigMap in deploy/"),
        daemon_set: ds.expect("no DaemonSet in deploy/"),
    }
}

fn pod_spec(d: &Deploy) -> &k8s_openapi::api::core::v1::PodSpec {
    d.daemon_set.spec.as_ref().unwrap().template.spec.as_ref().expect("the DaemonSet has a pod spec")
}

fn container<'a>(d: &'a Deploy, name: &str) -> &'a Container {
    pod_spec(d).containers.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container {name}"))
}

fn init_container<'a>(d: &'a Deploy, name: &str) -> &'a Container {
    pod_spec(d)
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no init container {name}"))
}

fn agent(d: &Deploy) -> &Container {
    container(d, "knet-agent")
}

fn volume<'a>(d: &'a Deploy, name: &str) -> &'a Volume {
    pod_spec(d).volumes.iter().flatten().find(|v| v.name == name).unwrap_or_else(|| panic!("no volume {name}"))
}

/// (host path, mount path, propagation) of `c`'s hostPath mounts.
fn host_mounts(d: &Deploy, c: &Container) -> Vec<(String, String, Option<String>)> {
    c.volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let host = volume(d, &m.name).host_path.as_ref()?;
            Some((host.path.clone(), m.mount_path.clone(), m.mount_propagation.clone()))
        })
        .collect()
}

/// The one mount of `c` from host path `host`.
fn host_mount(d: &Deploy, c: &Container, host: &str) -> (String, Option<String>) {
    let found: Vec<_> = host_mounts(d, c).into_iter().filter(|(h, _, _)| h == host).collect();
    match found.as_slice() {
        [(_, at, propagation)] => (at.clone(), propagation.clone()),
        _ => panic!("container {} mounts host path {host} {} times, not once", c.name, found.len()),
    }
}

fn agent_toml(d: &Deploy) -> &str {
    d.config_map.data.as_ref().and_then(|m| m.get("agent.toml")).expect("knet-config has no agent.toml")
}

/// The file's settings, as a TOML table (read whether or not this agent
/// knows every key).
fn setting(d: &Deploy, key: &str) -> String {
    let table: toml::Table = toml::from_str(agent_toml(d)).expect("agent.toml is not TOML");
    table.get(key).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("agent.toml sets no {key}")).to_string()
}

fn argv(c: &Container) -> Vec<&str> {
    c.command.iter().flatten().chain(c.args.iter().flatten()).map(String::as_str).collect()
}

fn probe_argv(p: Option<&k8s_openapi::api::core::v1::Probe>) -> Vec<&str> {
    p.and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.as_ref())
        .expect("an exec probe")
        .iter()
        .map(String::as_str)
        .collect()
}

/// `knet-agent <subcommand...> --help` of the built binary: its stdout, or
/// an error naming the subcommand the binary lacks.
fn try_agent_help(subcommand: &[&str]) -> Result<String, String> {
    let bin = knet_tests::cmd::workspace_binary("KNET_AGENT_BIN", "knet-agent").map_err(|e| format!("{e:#}"))?;
    let out = std::process::Command::new(&bin).args(subcommand).arg("--help").output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "the DaemonSet runs `knet-agent {}`, which {} does not have ({}): {}",
            subcommand.join(" "),
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn agent_help(subcommand: &[&str]) -> String {
    try_agent_help(subcommand).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_document_is_one_known_object_and_they_refer_to_each_other() {
    let d = deploy();
    let meta = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        (m.name.clone().unwrap_or_default(), m.namespace.clone())
    };
    assert_eq!(meta(&d.service_account.metadata), ("knet".into(), Some(NAMESPACE.into())));
    assert_eq!(meta(&d.cluster_role.metadata), ("knet".into(), None));
    assert_eq!(meta(&d.binding.metadata), ("knet".into(), None));
    assert_eq!(meta(&d.config_map.metadata), ("knet-config".into(), Some(NAMESPACE.into())));
    assert_eq!(meta(&d.daemon_set.metadata), ("knet".into(), Some(NAMESPACE.into())));

    let role_ref = &d.binding.role_ref;
    assert_eq!(
        (role_ref.api_group.as_str(), role_ref.kind.as_str(), role_ref.name.as_str()),
        ("rbac.authorization.k8s.io", "ClusterRole", "knet")
    );
    let subjects: Vec<_> = d
        .binding
        .subjects
        .iter()
        .flatten()
        .map(|s| (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()))
        .collect();
    assert_eq!(subjects, [("ServiceAccount", "knet", Some(NAMESPACE))]);
    assert_eq!(pod_spec(&d).service_account_name.as_deref(), Some("knet"));
    assert_eq!(volume(&d, "config").config_map.as_ref().map(|c| c.name.as_str()), Some("knet-config"));

    let spec = d.daemon_set.spec.as_ref().unwrap();
    let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(!selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v)), "selector {selector:?}");
}

#[test]
fn the_config_map_is_a_kubernetes_source_config_the_agent_accepts() {
    let d = deploy();
    let text = agent_toml(&d);
    let raw: RawConfig = toml::from_str(text).unwrap_or_else(|e| {
        let missing = if e.to_string().contains("cni_conf_file") {
            " (the agent does not know the setting `cni_conf_file` yet: it comes with the lead's change to \
             knet-agent that writes the conflist)"
        } else {
            ""
        };
        panic!("knet-config's agent.toml is refused by the agent{missing}: {e}")
    });
    assert_eq!(raw.node_name, None, "the node's name comes from KNET_NODE_NAME, not the file");
    let raw = RawConfig { node_name: Some("node-1".into()), ..raw };
    let config = Config::try_from(raw).expect("the agent refuses agent.toml");
    assert_eq!(config.source, Source::Kubernetes { kubeconfig: None }, "in-cluster config");
    assert_eq!(config.mode, Mode::Vxlan);
    assert_eq!(config.pod_cidr, None, "the pod CIDR comes from the node's own Node");
    assert_eq!(config.api_socket, Path::new(DEFAULT_API_SOCKET));
    assert_eq!(config.bpf_pin_dir, Path::new(DEFAULT_BPF_PIN_DIR));
    assert_eq!(setting(&d, "cni_conf_file"), "/etc/cni/net.d/10-knet.conflist");
}

#[test]
fn the_agent_container_runs_the_agent_on_the_config_map() {
    let d = deploy();
    let agent = agent(&d);
    assert_eq!(argv(agent), [AGENT, "run", "--config", "/etc/knet/agent.toml"]);
    let help = agent_help(&["run"]);
    assert!(help.contains("--config"), "knet-agent run --help names no --config:\n{help}");
    let config = agent.volume_mounts.iter().flatten().find(|m| m.name == "config").expect("the ConfigMap's mount");
    assert_eq!((config.mount_path.as_str(), config.read_only), ("/etc/knet", Some(true)));

    let env: Vec<_> = agent.env.iter().flatten().collect();
    let node_name: Vec<_> = env.iter().filter(|e| e.name == "KNET_NODE_NAME").collect();
    assert_eq!(node_name.len(), 1, "KNET_NODE_NAME once");
    let field =
        node_name[0].value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("KNET_NODE_NAME from fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");
    assert_eq!(node_name[0].value, None);
    assert!(
        env.iter().all(|e| !e.name.starts_with("KNET_") || e.name == "KNET_NODE_NAME"),
        "no other setting overrides the ConfigMap: {env:?}"
    );
}

#[test]
fn the_probes_are_the_agents_probe_subcommand_on_the_configured_socket() {
    let d = deploy();
    let agent = agent(&d);
    assert_eq!(probe_argv(agent.liveness_probe.as_ref()), [AGENT, "probe", "live"]);
    assert_eq!(probe_argv(agent.readiness_probe.as_ref()), [AGENT, "probe", "ready"]);
    for what in ["live", "ready"] {
        agent_help(&["probe", what]);
    }
    // Without --api-socket the probes use the agent's default socket: the
    // one the ConfigMap configures, inside the /run/knet host mount.
    assert_eq!(setting(&d, "api_socket"), DEFAULT_API_SOCKET);
    let help = agent_help(&["probe"]);
    assert!(help.contains(DEFAULT_API_SOCKET), "`knet-agent probe --help` names another default socket:\n{help}");
    let (at, _) = host_mount(&d, agent, "/run/knet");
    assert!(Path::new(DEFAULT_API_SOCKET).parent() == Some(Path::new(&at)), "the socket's directory {at} is mounted");
}

#[test]
fn prometheus_scrapes_the_port_the_agent_serves_its_metrics_on() {
    let d = deploy();
    let address: std::net::SocketAddr = setting(&d, "metrics_address").parse().expect("metrics_address");
    let agent = agent(&d);
    let port = agent.ports.iter().flatten().find(|p| p.name.as_deref() == Some("metrics")).expect("a metrics port");
    assert_eq!(port.container_port, i32::from(address.port()));
    let template = d.daemon_set.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
    let annotations = template.annotations.as_ref().expect("scrape annotations");
    assert_eq!(annotations.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(annotations.get("prometheus.io/port"), Some(&address.port().to_string()));
    assert_eq!(annotations.get("prometheus.io/path").map(String::as_str), Some("/metrics"));
    // The scraper comes from another host: not loopback.
    assert!(!address.ip().is_loopback(), "metrics_address {address} is out of a scraper's reach");
}

#[test]
fn every_host_path_the_agent_uses_is_mounted_where_the_host_has_it() {
    let d = deploy();
    let agent = agent(&d);
    // The agent sees the host's bpffs (mounted by the init container).
    assert_eq!(host_mount(&d, agent, "/sys/fs/bpf"), ("/sys/fs/bpf".into(), Some("HostToContainer".into())));
    assert!(setting(&d, "bpf_pin_dir").starts_with("/sys/fs/bpf/"));
    // Same path inside as outside: the CNI plugin on the host dials the
    // socket the agent made, the runtime reads the conflist it wrote.
    assert_eq!(host_mount(&d, agent, "/run/knet").0, "/run/knet");
    assert_eq!(host_mount(&d, agent, "/etc/cni/net.d").0, "/etc/cni/net.d");
    assert_eq!(Path::new(&setting(&d, "cni_conf_file")).parent(), Some(Path::new("/etc/cni/net.d")));
    for dir in ["/run/knet", "/etc/cni/net.d", "/sys/fs/bpf", "/opt/cni/bin"] {
        let name = pod_spec(&d)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == dir))
            .unwrap_or_else(|| panic!("no hostPath volume {dir}"));
        assert_eq!(name.host_path.as_ref().unwrap().type_.as_deref(), Some("DirectoryOrCreate"), "{dir}");
    }

    let mount = init_container(&d, "mount-bpf-fs");
    assert_eq!(argv(mount), [AGENT, "mount-bpffs"]);
    assert_eq!(host_mount(&d, mount, "/sys/fs/bpf"), ("/sys/fs/bpf".into(), Some("Bidirectional".into())));
    assert_eq!(mount.security_context.as_ref().and_then(|s| s.privileged), Some(true), "mount(2) and Bidirectional");

    let install = init_container(&d, "install-cni");
    let (at, _) = host_mount(&d, install, "/opt/cni/bin");
    assert_eq!(argv(install), [AGENT, "install-cni", "--from", "/usr/local/bin/knet", "--to", at.as_str()]);
    assert_eq!(at, "/host/opt/cni/bin");

    let names: Vec<_> = pod_spec(&d).init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["mount-bpf-fs", "install-cni"], "bpffs first, then the plugin");
}

/// Fails, naming them, until the `mount-bpffs` and `install-cni`
/// subcommands (the lead's change to knet-agent) are in the binary.
#[test]
fn the_init_containers_run_subcommands_the_agent_has() {
    let missing: Vec<String> =
        ["mount-bpffs", "install-cni"].into_iter().filter_map(|sub| try_agent_help(&[sub]).err()).collect();
    assert!(missing.is_empty(), "knet-agent lacks subcommands the init containers run:\n{}", missing.join("\n"));
    let help = agent_help(&["install-cni"]);
    assert!(help.contains("--from") && help.contains("--to"), "install-cni takes --from and --to:\n{help}");
}

#[test]
fn the_agent_container_is_unprivileged_with_exactly_its_capabilities() {
    let d = deploy();
    let sc = agent(&d).security_context.as_ref().expect("the agent's securityContext");
    assert_eq!(sc.privileged, Some(false));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    fn set(v: &Option<Vec<String>>) -> BTreeSet<&str> {
        v.iter().flatten().map(String::as_str).collect()
    }
    assert_eq!(set(&caps.add), BTreeSet::from(["NET_ADMIN", "BPF", "PERFMON", "SYS_ADMIN"]));
    assert_eq!(caps.add.as_ref().map(Vec::len), Some(set(&caps.add).len()), "no capability twice");
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    let requests = agent(&d).resources.as_ref().and_then(|r| r.requests.as_ref()).expect("resource requests");
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("100m"));
    assert_eq!(requests.get("memory").map(|q| q.0.as_str()), Some("64Mi"));
}

#[test]
fn the_cluster_role_grants_exactly_what_the_node_source_uses() {
    let d = deploy();
    assert!(d.cluster_role.aggregation_rule.is_none());
    let mut grants = BTreeSet::new();
    for rule in d.cluster_role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none(), "{rule:?}");
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert!(grants.insert((group.as_str(), resource.as_str(), verb.as_str())), "twice: {rule:?}");
                }
            }
        }
    }
    assert_eq!(
        grants,
        BTreeSet::from([
            ("", "nodes", "get"),
            ("", "nodes", "list"),
            ("", "nodes", "watch"),
            ("", "nodes", "patch"),
            ("", "nodes/status", "patch"),
        ])
    );
}

#[test]
fn the_daemon_set_runs_on_every_node_before_anything_else() {
    let d = deploy();
    let pod = pod_spec(&d);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let tolerations = pod.tolerations.as_ref().expect("tolerations");
    assert_eq!(tolerations.len(), 1);
    let t = &tolerations[0];
    assert_eq!(t.operator.as_deref(), Some("Exists"));
    assert!(t.key.is_none() && t.effect.is_none() && t.value.is_none(), "every taint: {t:?}");
    let strategy = d.daemon_set.spec.as_ref().unwrap().update_strategy.as_ref().expect("updateStrategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().expect("rollingUpdate");
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)), "never two agents on one pin directory");
}

/// The repository of `xtask/src/image.rs` and the workspace's version.
fn xtask_image_name() -> String {
    let image_rs = std::fs::read_to_string(workspace().join("xtask/src/image.rs")).unwrap();
    let repository = image_rs
        .lines()
        .find_map(|l| l.strip_prefix("pub const REPOSITORY: &str = \"")?.strip_suffix("\";"))
        .expect("xtask/src/image.rs has its `pub const REPOSITORY` line");
    let cargo: toml::Table = toml::from_str(&std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap()).unwrap();
    let version = cargo["workspace"]["package"]["version"].as_str().expect("the workspace version");
    format!("{repository}:{version}")
}

#[test]
fn every_container_runs_the_image_cargo_xtask_image_makes() {
    let d = deploy();
    let image = xtask_image_name();
    assert_eq!(image, format!("localhost/knet:{}", env!("CARGO_PKG_VERSION")));
    let pod = pod_spec(&d);
    let all: Vec<&Container> = pod.init_containers.iter().flatten().chain(&pod.containers).collect();
    assert_eq!(all.len(), 3);
    for c in all {
        assert_eq!(c.image.as_deref(), Some(image.as_str()), "container {}", c.name);
    }
}
