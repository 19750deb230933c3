//! The agent's settings: from a TOML file, each overridable by a flag or an
//! environment variable, validated once into [`Config`].

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::sources::SourceKind;

pub const DEFAULT_API_SOCKET: &str = "/run/knet/agent.sock";
pub const DEFAULT_BPF_PIN_DIR: &str = "/sys/fs/bpf/knet";
/// Loopback: out of the pods' reach (they reach the node's other
/// addresses). A DaemonSet that wants scrapes sets the node's address.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9965";
/// etcd's own client port on this host, as flanneld's default has it.
pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";
/// flanneld's `--etcd-prefix` default.
pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";

/// Settings as given, before validation. Used both as the file's schema and
/// as the command line's (each field a flag and an env var).
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This node's name, as the cluster knows it.
    #[arg(long, env = "KNET_NODE_NAME")]
    pub node_name: Option<String>,
    /// The IPv4 subnet this node gives its pods, e.g. 10.244.1.0/24
    /// (with the kubernetes source: from this node's Node object).
    #[arg(long, env = "KNET_POD_CIDR")]
    pub pod_cidr: Option<String>,
    /// Unix socket of the local endpoint API [default: /run/knet/agent.sock].
    #[arg(long, env = "KNET_API_SOCKET")]
    pub api_socket: Option<PathBuf>,
    /// bpffs directory where maps are pinned [default: /sys/fs/bpf/knet].
    #[arg(long, env = "KNET_BPF_PIN_DIR")]
    pub bpf_pin_dir: Option<PathBuf>,
    /// Where the other nodes come from [default: file with a nodes_file,
    /// else none].
    #[arg(long, env = "KNET_NODE_SOURCE", value_enum)]
    pub node_source: Option<SourceKind>,
    /// Static node file (`name underlay-ip pod-cidr` per line), watched for
    /// changes (node_source = file).
    #[arg(long, env = "KNET_NODES_FILE")]
    pub nodes_file: Option<PathBuf>,
    /// kubeconfig for the kubernetes source [default: in-cluster, then
    /// $KUBECONFIG].
    #[arg(long, env = "KNET_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How traffic crosses to other nodes [default: vxlan].
    #[arg(long, env = "KNET_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// Where to write the CNI network configuration once this node's pod
    /// CIDR is known (e.g. /etc/cni/net.d/10-knet.conflist) [default: none].
    #[arg(long, env = "KNET_CNI_CONF_FILE")]
    pub cni_conf_file: Option<PathBuf>,
    /// An eBPF object to load instead of the built-in one (another build of
    /// knet-ebpf, to try on a running node) [default: the built-in one].
    #[arg(long, env = "KNET_EBPF_OBJECT_FILE")]
    pub ebpf_object: Option<PathBuf>,
    /// VXLAN network identifier [default: 1].
    #[arg(long, env = "KNET_VNI")]
    pub vni: Option<u32>,
    /// Log lines as `text` or as one JSON object each (`json`) [default:
    /// text].
    #[arg(long, env = "KNET_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Which log lines: a level (error, warn, info, debug, trace) or
    /// tracing directives such as `info,knet_agent::reconciler=debug`
    /// [default: info; RUST_LOG, when set, wins].
    #[arg(long, env = "KNET_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// TCP address serving /metrics (Prometheus), /healthz and /readyz, or
    /// "off" [default: 127.0.0.1:9965].
    #[arg(long, env = "KNET_METRICS_ADDRESS")]
    pub metrics_address: Option<String>,
    /// Turn on the eBPF programs' diagnostics (aya-log) and log them
    /// through the agent; off, the verifier removes them [default: false].
    #[arg(long, env = "KNET_EBPF_LOG", num_args = 0..=1, default_missing_value = "true")]
    pub ebpf_log: Option<bool>,
    /// BIG TCP in native mode: pods' veths and the underlay carry IPv4
    /// packets of up to 192 KiB (as far as the underlay's driver allows)
    /// [default: true; VXLAN mode never].
    #[arg(long, env = "KNET_BIG_TCP", num_args = 0..=1, default_missing_value = "true")]
    pub big_tcp: Option<bool>,
    /// etcd endpoints for the etcd source, comma-separated on the command
    /// line [default: http://127.0.0.1:2379].
    #[arg(long, env = "KNET_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Key prefix of flannel's layout in etcd [default: /coreos.com/network].
    #[arg(long, env = "KNET_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// CA certificate (PEM) that etcd's server certificate is checked
    /// against [default: none; needed for https endpoints].
    #[arg(long, env = "KNET_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd [default: none].
    #[arg(long, env = "KNET_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// Client certificate's key (PEM) for etcd [default: none].
    #[arg(long, env = "KNET_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// TTL of this node's subnet lease in etcd, in seconds, kept alive
    /// while the agent runs [default: 86400, flanneld's 24 h].
    #[arg(long, env = "KNET_ETCD_LEASE_TTL_SECONDS")]
    pub etcd_lease_ttl_seconds: Option<u64>,
    /// This node's underlay address, published as its lease's PublicIP
    /// (flanneld's --public-ip); required with the etcd source.
    #[arg(long, env = "KNET_PUBLIC_IP")]
    pub public_ip: Option<Ipv4Addr>,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The log's format and filter, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

/// The log filter when none is configured.
pub const DEFAULT_LOG_LEVEL: &str = "info";

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The config file's text as settings (not yet validated: see
    /// [`Config::try_from`]).
    pub fn from_toml(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Fields set in `over` win over the ones in `self`.
    pub fn overridden_by(self, over: RawConfig) -> RawConfig {
        RawConfig {
            node_name: over.node_name.or(self.node_name),
            pod_cidr: over.pod_cidr.or(self.pod_cidr),
            api_socket: over.api_socket.or(self.api_socket),
            bpf_pin_dir: over.bpf_pin_dir.or(self.bpf_pin_dir),
            node_source: over.node_source.or(self.node_source),
            nodes_file: over.nodes_file.or(self.nodes_file),
            kubeconfig: over.kubeconfig.or(self.kubeconfig),
            mode: over.mode.or(self.mode),
            vni: over.vni.or(self.vni),
            cni_conf_file: over.cni_conf_file.or(self.cni_conf_file),
            ebpf_object: over.ebpf_object.or(self.ebpf_object),
            log_format: over.log_format.or(self.log_format),
            log_level: over.log_level.or(self.log_level),
            metrics_address: over.metrics_address.or(self.metrics_address),
            ebpf_log: over.ebpf_log.or(self.ebpf_log),
            big_tcp: over.big_tcp.or(self.big_tcp),
            etcd_endpoints: over.etcd_endpoints.or(self.etcd_endpoints),
            etcd_prefix: over.etcd_prefix.or(self.etcd_prefix),
            etcd_ca_file: over.etcd_ca_file.or(self.etcd_ca_file),
            etcd_cert_file: over.etcd_cert_file.or(self.etcd_cert_file),
            etcd_key_file: over.etcd_key_file.or(self.etcd_key_file),
            etcd_lease_ttl_seconds: over.etcd_lease_ttl_seconds.or(self.etcd_lease_ttl_seconds),
            public_ip: over.public_ip.or(self.public_ip),
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node_name: String,
    /// Required but for the kubernetes source, which reads it from the
    /// node's own Node object (and checks it against this when set), and
    /// the etcd source, which leases it.
    pub pod_cidr: Option<Ipv4Net>,
    pub api_socket: PathBuf,
    pub bpf_pin_dir: PathBuf,
    pub source: Source,
    pub mode: Mode,
    pub vni: u32,
    /// The conflist the agent writes once it serves pods.
    pub cni_conf_file: Option<PathBuf>,
    pub ebpf_object: Option<PathBuf>,
    pub log: LogSettings,
    /// `None`: no metrics listener.
    pub metrics_address: Option<SocketAddr>,
    /// The programs' aya-log diagnostics are compiled in and read.
    pub ebpf_log: bool,
    /// Native mode gives pods BIG TCP.
    pub big_tcp: bool,
}

/// The node source with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    None,
    File(PathBuf),
    Kubernetes { kubeconfig: Option<PathBuf> },
    Etcd(EtcdSettings),
}

impl Source {
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::None => SourceKind::None,
            Source::File(_) => SourceKind::File,
            Source::Kubernetes { .. } => SourceKind::Kubernetes,
            Source::Etcd(_) => SourceKind::Etcd,
        }
    }

    /// The operator's own file (or nothing): a bad one stops the start.
    /// The other sources' worlds may get better, so the agent serves, not
    /// ready, and keeps trying.
    pub fn is_static(&self) -> bool {
        matches!(self, Source::None | Source::File(_))
    }
}

/// The etcd source's settings. Holds file names only: the key is read
/// when the client is built, so no Debug print or log line carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// No trailing slash: keys are `<prefix>/config`, `<prefix>/subnets/...`.
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    pub lease_ttl: Duration,
    /// This node's underlay address, its lease's PublicIP.
    pub public_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl EtcdSettings {
    fn from_raw(raw: &RawConfig) -> Result<Self> {
        let endpoints = raw.etcd_endpoints.clone().unwrap_or_else(|| vec![DEFAULT_ETCD_ENDPOINT.into()]);
        if endpoints.is_empty() {
            bail!("etcd_endpoints is empty");
        }
        for e in &endpoints {
            let rest = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                bail!("etcd_endpoints: {e:?} is not an http:// or https:// URL (e.g. https://10.0.0.5:2379)");
            }
        }
        let prefix = raw.etcd_prefix.clone().unwrap_or_else(|| DEFAULT_ETCD_PREFIX.into());
        if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
            bail!("etcd_prefix {prefix:?} must start with '/' and not end with one (e.g. /coreos.com/network)");
        }
        let tls = match (&raw.etcd_ca_file, &raw.etcd_cert_file, &raw.etcd_key_file) {
            (None, None, None) => None,
            (_, Some(_), None) | (_, None, Some(_)) => {
                bail!("etcd_cert_file and etcd_key_file go together: set both or neither")
            }
            (ca, cert, key) => Some(EtcdTls { ca_file: ca.clone(), cert_file: cert.clone(), key_file: key.clone() }),
        };
        if endpoints.iter().any(|e| e.starts_with("https://")) && tls.as_ref().is_none_or(|t| t.ca_file.is_none()) {
            bail!("https etcd endpoints need etcd_ca_file (the CA that signed etcd's server certificate)");
        }
        let ttl = raw.etcd_lease_ttl_seconds.unwrap_or(crate::sources::etcd::flannel::FLANNEL_LEASE_TTL_SECONDS);
        // etcd's own bound on a lease's TTL.
        if ttl == 0 || ttl > 9_000_000_000 {
            bail!("etcd_lease_ttl_seconds {ttl} must be between 1 and 9000000000");
        }
        let public_ip = raw.public_ip.context(
            "node_source = \"etcd\" needs public_ip, this node's underlay address (--public-ip or KNET_PUBLIC_IP)",
        )?;
        Ok(EtcdSettings { endpoints, prefix, tls, lease_ttl: Duration::from_secs(ttl), public_ip })
    }
}

/// How traffic crosses to other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Vxlan,
    Native,
}

impl std::fmt::Display for Mode {
    /// As the config file and the flags spell it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Vxlan => "vxlan",
            Mode::Native => "native",
        })
    }
}

impl Mode {
    /// The programs' `CONFIG.mode` code for this mode.
    pub fn code(self) -> u32 {
        match self {
            Mode::Vxlan => knet_common::node::MODE_VXLAN,
            Mode::Native => knet_common::node::MODE_NATIVE,
        }
    }

    /// The mode a `CONFIG.mode` code stands for; `None` for local-only (no
    /// cross-node path programmed) or a code this build does not know.
    pub fn from_code(code: u32) -> Option<Mode> {
        [Mode::Vxlan, Mode::Native].into_iter().find(|m| m.code() == code)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = anyhow::Error;

    fn try_from(raw: RawConfig) -> Result<Self> {
        // Read before the fields below are taken out of `raw`.
        let etcd = (raw.node_source == Some(SourceKind::Etcd)).then(|| EtcdSettings::from_raw(&raw));
        let node_name = raw.node_name.context("node_name is not set (config file, --node-name or KNET_NODE_NAME)")?;
        validate_node_name(&node_name)?;
        let pod_cidr = raw.pod_cidr.as_deref().map(parse_pod_cidr).transpose()?;
        pod_cidr.map(check_pod_cidr_capacity).transpose()?;
        let kind =
            raw.node_source.unwrap_or(if raw.nodes_file.is_some() { SourceKind::File } else { SourceKind::None });
        if raw.nodes_file.is_some() && kind != SourceKind::File {
            bail!("nodes_file is read only with node_source = \"file\"");
        }
        if raw.kubeconfig.is_some() && kind != SourceKind::Kubernetes {
            bail!("kubeconfig is read only with node_source = \"kubernetes\"");
        }
        let etcd_set = [
            raw.etcd_endpoints.is_some(),
            raw.etcd_prefix.is_some(),
            raw.etcd_ca_file.is_some(),
            raw.etcd_cert_file.is_some(),
            raw.etcd_key_file.is_some(),
            raw.etcd_lease_ttl_seconds.is_some(),
            raw.public_ip.is_some(),
        ];
        if etcd_set.contains(&true) && kind != SourceKind::Etcd {
            bail!("the etcd_* settings and public_ip are read only with node_source = \"etcd\"");
        }
        if pod_cidr.is_some() && kind == SourceKind::Etcd {
            bail!("pod_cidr comes from this node's etcd lease with node_source = \"etcd\"; leave it unset");
        }
        let source = match kind {
            SourceKind::None => Source::None,
            SourceKind::File => Source::File(
                raw.nodes_file.context("node_source = \"file\" needs nodes_file (--nodes-file or KNET_NODES_FILE)")?,
            ),
            SourceKind::Kubernetes => Source::Kubernetes { kubeconfig: raw.kubeconfig.clone() },
            SourceKind::Etcd => Source::Etcd(etcd.expect("read above for the etcd source")?),
        };
        if pod_cidr.is_none() && source.is_static() {
            bail!("pod_cidr is not set (config file, --pod-cidr or KNET_POD_CIDR)");
        }
        let api_socket = raw.api_socket.unwrap_or_else(|| DEFAULT_API_SOCKET.into());
        if !api_socket.is_absolute() {
            bail!("api_socket {} must be an absolute path", api_socket.display());
        }
        let bpf_pin_dir = raw.bpf_pin_dir.unwrap_or_else(|| DEFAULT_BPF_PIN_DIR.into());
        if !bpf_pin_dir.starts_with("/sys/fs/bpf/") {
            bail!("bpf_pin_dir {} must be a directory under /sys/fs/bpf", bpf_pin_dir.display());
        }
        let mode = raw.mode.unwrap_or(Mode::Vxlan);
        let vni = raw.vni.unwrap_or(1);
        if vni == 0 || vni >= 1 << 24 {
            bail!("vni {vni} is not a VXLAN network identifier (1 to 16777215)");
        }
        if let Some(f) = &raw.cni_conf_file {
            if !f.is_absolute() || f.file_name().is_none() {
                bail!("cni_conf_file {} must be an absolute path to a file", f.display());
            }
        }
        let filter = raw.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.into());
        tracing_subscriber::EnvFilter::try_new(&filter)
            .map_err(|e| anyhow::anyhow!("log_level {filter:?} is not a level or tracing filter: {e}"))?;
        let metrics_address = parse_metrics_address(raw.metrics_address.as_deref().unwrap_or(DEFAULT_METRICS_ADDRESS))?;
        Ok(Config {
            log: LogSettings { format: raw.log_format.unwrap_or_default(), filter },
            node_name,
            pod_cidr,
            api_socket,
            bpf_pin_dir,
            source,
            mode,
            vni,
            cni_conf_file: raw.cni_conf_file,
            ebpf_object: raw.ebpf_object,
            metrics_address,
            ebpf_log: raw.ebpf_log.unwrap_or(false),
            big_tcp: raw.big_tcp.unwrap_or(true),
        })
    }
}

/// `host:port` with an IP address (the agent binds it before it resolves
/// anything), or "off".
pub fn parse_metrics_address(text: &str) -> Result<Option<SocketAddr>> {
    if text == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = text.parse().map_err(|_| {
        anyhow::anyhow!("metrics_address {text:?} is not an IP address and port (e.g. 127.0.0.1:9965) or \"off\"")
    })?;
    Ok(Some(addr))
}

/// A node name must be a DNS subdomain, as Kubernetes requires.
pub fn validate_node_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !ok {
        bail!("node_name {name:?} is not a valid node name (lowercase letters, digits, '-' and '.')");
    }
    Ok(())
}

/// The pod subnet: IPv4, written as its network address, with room for pods.
pub fn parse_pod_cidr(text: &str) -> Result<Ipv4Net> {
    let net: ipnet::IpNet =
        text.parse().map_err(|_| anyhow::anyhow!("pod_cidr {text:?} is not a CIDR (expected e.g. 10.244.1.0/24)"))?;
    let net = match net {
        ipnet::IpNet::V4(net) => net,
        ipnet::IpNet::V6(_) => bail!("pod_cidr {text:?} is IPv6; knet supports IPv4 pod subnets"),
    };
    if net.trunc() != net {
        bail!("pod_cidr {text:?} has host bits set; did you mean {}?", net.trunc());
    }
    if net.prefix_len() > 30 {
        bail!("pod_cidr {text:?} is too small for pods (at most /30)");
    }
    if IpAddr::V4(net.network()).is_unspecified() {
        bail!("pod_cidr {text:?} cannot start at 0.0.0.0");
    }
    Ok(net)
}

/// This node's pod subnet must fit its endpoint map: a larger one would
/// hand out addresses that cannot be programmed (the kernel refuses the
/// entry). Other nodes' subnets are their own agents' to refuse.
pub fn check_pod_cidr_capacity(net: Ipv4Net) -> Result<()> {
    let addresses = 1u64 << (32 - net.prefix_len());
    if addresses > u64::from(knet_common::endpoint::MAX_ENDPOINTS) {
        bail!(
            "pod_cidr {net} holds {addresses} addresses, more than the {} pods a node's endpoint map holds; use a /{} or smaller",
            knet_common::endpoint::MAX_ENDPOINTS,
            32 - knet_common::endpoint::MAX_ENDPOINTS.trailing_zeros()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_cidr_larger_than_the_endpoint_map_is_refused() {
        let cidr = |s: &str| parse_pod_cidr(s).unwrap();
        assert!(check_pod_cidr_capacity(cidr("10.244.0.0/18")).is_ok());
        let e = check_pod_cidr_capacity(cidr("10.244.0.0/17")).unwrap_err().to_string();
        assert!(e.contains("holds 32768 addresses") && e.contains("use a /18 or smaller"), "{e}");
        let e = Config::try_from(raw("n", "10.0.0.0/8")).unwrap_err().to_string();
        assert!(e.contains("more than the 16384 pods"), "{e}");
    }

    fn raw(name: &str, cidr: &str) -> RawConfig {
        RawConfig { node_name: Some(name.into()), pod_cidr: Some(cidr.into()), ..Default::default() }
    }

    #[test]
    fn valid_config_gets_defaults() {
        let c = Config::try_from(raw("node-1", "10.244.1.0/24")).unwrap();
        assert_eq!(c.pod_cidr.unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(c.source, Source::None);
        assert_eq!(c.api_socket, PathBuf::from(DEFAULT_API_SOCKET));
        assert_eq!(c.bpf_pin_dir, PathBuf::from(DEFAULT_BPF_PIN_DIR));
        assert_eq!(c.metrics_address, Some(DEFAULT_METRICS_ADDRESS.parse().unwrap()));
        assert!(!c.ebpf_log, "the eBPF diagnostics are off unless asked for");
        assert!(c.big_tcp, "BIG TCP is on unless turned off");
    }

    #[test]
    fn metrics_address_is_an_ip_and_port_or_off() {
        let mut r = raw("n", "10.0.0.0/24");
        r.metrics_address = Some("off".into());
        assert_eq!(Config::try_from(r.clone()).unwrap().metrics_address, None);
        r.metrics_address = Some("0.0.0.0:9100".into());
        assert_eq!(Config::try_from(r.clone()).unwrap().metrics_address, Some("0.0.0.0:9100".parse().unwrap()));
        for bad in ["localhost:9965", "127.0.0.1", "", "127.0.0.1:99999"] {
            r.metrics_address = Some(bad.into());
            let e = Config::try_from(r.clone()).unwrap_err().to_string();
            assert!(e.contains("metrics_address"), "{bad}: {e}");
        }
        let file = RawConfig::from_toml("metrics_address = \"[::1]:9965\"\n").unwrap();
        assert_eq!(file.metrics_address.as_deref(), Some("[::1]:9965"));
    }

    #[test]
    fn ebpf_log_from_the_file_and_the_flag() {
        let file = RawConfig::from_toml("ebpf_log = true\n").unwrap();
        assert_eq!(file.ebpf_log, Some(true));
        let merged = file.overridden_by(RawConfig { ebpf_log: Some(false), ..Default::default() });
        let mut r = raw("n", "10.0.0.0/24");
        r.ebpf_log = merged.ebpf_log;
        assert!(!Config::try_from(r).unwrap().ebpf_log, "the flag wins over the file");
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            raw: RawConfig,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["knet-agent", "--ebpf-log"]).unwrap();
        assert_eq!(cli.raw.ebpf_log, Some(true), "the bare flag turns it on");
        let mut r = raw("n", "10.0.0.0/24");
        r.big_tcp = RawConfig::from_toml("big_tcp = false\n").unwrap().big_tcp;
        assert!(!Config::try_from(r).unwrap().big_tcp, "big_tcp = false turns it off");
    }

    #[test]
    fn invalid_cidrs_are_named_in_the_error() {
        for (cidr, needle) in [
            ("10.244.1.0/33", "not a CIDR"),
            ("10.244.1/24", "not a CIDR"),
            ("banana", "not a CIDR"),
            ("10.244.1.5/24", "host bits"),
            ("fd00::/64", "IPv6"),
            ("10.0.0.0/31", "too small"),
            ("0.0.0.0/0", "0.0.0.0"),
        ] {
            let err = Config::try_from(raw("n", cidr)).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("pod_cidr"), "{cidr}: {err}");
        }
    }

    #[test]
    fn missing_and_bad_fields() {
        assert!(Config::try_from(RawConfig::default()).unwrap_err().to_string().contains("node_name"));
        assert!(Config::try_from(raw("Node_1", "10.0.0.0/24")).is_err());
        let mut r = raw("n", "10.0.0.0/24");
        r.bpf_pin_dir = Some("/tmp/x".into());
        assert!(Config::try_from(r).unwrap_err().to_string().contains("/sys/fs/bpf"));
        let mut r = raw("n", "10.0.0.0/24");
        r.api_socket = Some("rel.sock".into());
        assert!(Config::try_from(r).is_err());
    }

    #[test]
    fn mode_codes_round_trip() {
        for m in [Mode::Vxlan, Mode::Native] {
            assert_eq!(Mode::from_code(m.code()), Some(m));
            let file = RawConfig::from_toml(&format!("mode = \"{m}\"\n")).unwrap();
            assert_eq!(file.mode, Some(m), "Display spells {m} as the file does");
        }
        assert_eq!(Mode::from_code(knet_common::node::MODE_LOCAL_ONLY), None);
    }

    #[test]
    fn log_format_and_level() {
        let file =
            RawConfig::from_toml("log_format = \"json\"\nlog_level = \"info,knet_agent::reconciler=debug\"\n").unwrap();
        let mut r = raw("node-1", "10.244.1.0/24");
        r.log_format = file.log_format;
        r.log_level = file.log_level;
        let log = Config::try_from(r.clone()).unwrap().log;
        assert_eq!(log, LogSettings { format: LogFormat::Json, filter: "info,knet_agent::reconciler=debug".into() });
        assert_eq!(Config::try_from(raw("node-1", "10.244.1.0/24")).unwrap().log.format, LogFormat::Text);
        r.log_level = Some("info,=[".into());
        let err = Config::try_from(r).unwrap_err().to_string();
        assert!(err.contains("log_level") && err.contains("not a level"), "{err}");
        assert!(RawConfig::from_toml("log_format = \"xml\"\n").is_err());
    }

    #[test]
    fn mode_and_vni() {
        let mut r = raw("n", "10.0.0.0/24");
        assert_eq!(Config::try_from(r.clone()).unwrap().mode, Mode::Vxlan);
        r.mode = Some(Mode::Native);
        assert_eq!(Config::try_from(r.clone()).unwrap().mode, Mode::Native);
        let err = RawConfig::from_toml("mode = \"geneve\"\n").unwrap_err();
        assert!(err.to_string().contains("geneve"), "{err}");
        r.mode = None;
        r.vni = Some(1 << 24);
        assert!(Config::try_from(r).unwrap_err().to_string().contains("vni"));
    }

    #[test]
    fn node_sources_and_what_each_needs() {
        let mut r = raw("n", "10.0.0.0/24");
        r.nodes_file = Some("/etc/knet/nodes".into());
        assert_eq!(Config::try_from(r.clone()).unwrap().source, Source::File("/etc/knet/nodes".into()));
        r.node_source = Some(SourceKind::Kubernetes);
        assert!(Config::try_from(r.clone()).unwrap_err().to_string().contains("nodes_file is read only with"));
        r.nodes_file = None;
        r.pod_cidr = None;
        r.kubeconfig = Some("/etc/knet/kubeconfig".into());
        let c = Config::try_from(r.clone()).unwrap();
        assert_eq!(c.source, Source::Kubernetes { kubeconfig: Some("/etc/knet/kubeconfig".into()) });
        assert_eq!(c.pod_cidr, None, "the kubernetes source needs no pod_cidr");
        r.node_source = Some(SourceKind::File);
        r.kubeconfig = None;
        assert!(Config::try_from(r.clone()).unwrap_err().to_string().contains("needs nodes_file"));
        r.node_source = None;
        assert!(Config::try_from(r).unwrap_err().to_string().contains("pod_cidr is not set"));
        let file = RawConfig::from_toml("node_source = \"kubernetes\"\nmode = \"native\"\n").unwrap();
        assert_eq!((file.node_source, file.mode), (Some(SourceKind::Kubernetes), Some(Mode::Native)));
    }

    #[test]
    fn the_etcd_source_and_what_it_needs() {
        let mut r =
            RawConfig { node_name: Some("n".into()), node_source: Some(SourceKind::Etcd), ..Default::default() };
        let e = Config::try_from(r.clone()).unwrap_err().to_string();
        assert!(e.contains("needs public_ip"), "{e}");
        r.public_ip = Some("192.168.77.10".parse().unwrap());
        let c = Config::try_from(r.clone()).unwrap();
        assert_eq!(c.pod_cidr, None, "the etcd source leases it");
        let Source::Etcd(etcd) = &c.source else { panic!("{:?}", c.source) };
        assert_eq!(etcd.endpoints, [DEFAULT_ETCD_ENDPOINT]);
        assert_eq!(etcd.prefix, DEFAULT_ETCD_PREFIX);
        assert_eq!(etcd.lease_ttl, Duration::from_secs(86_400), "flanneld's 24 h");
        assert_eq!(etcd.tls, None);
        let file = RawConfig::from_toml(
            "node_source = \"etcd\"\netcd_endpoints = [\"https://10.0.0.5:2379\", \"https://10.0.0.6:2379\"]\n\
             etcd_prefix = \"/knet/network\"\netcd_ca_file = \"/etc/knet/etcd/ca.pem\"\n\
             etcd_cert_file = \"/etc/knet/etcd/client.pem\"\netcd_key_file = \"/etc/knet/etcd/client-key.pem\"\n\
             etcd_lease_ttl_seconds = 30\npublic_ip = \"192.168.77.10\"\n",
        )
        .unwrap();
        let mut f = file.clone();
        f.node_name = Some("n".into());
        let Source::Etcd(etcd) = Config::try_from(f.clone()).unwrap().source else { panic!() };
        assert_eq!(etcd.endpoints.len(), 2);
        assert_eq!((etcd.prefix.as_str(), etcd.lease_ttl.as_secs()), ("/knet/network", 30));
        assert_eq!(etcd.tls.unwrap().key_file, Some("/etc/knet/etcd/client-key.pem".into()));
        for (change, needle) in [
            (RawConfig { etcd_key_file: None, ..f.clone() }, "go together"),
            (RawConfig { etcd_ca_file: None, ..f.clone() }, "need etcd_ca_file"),
            (RawConfig { etcd_prefix: Some("/knet/".into()), ..f.clone() }, "etcd_prefix"),
            (RawConfig { etcd_prefix: Some("knet".into()), ..f.clone() }, "etcd_prefix"),
            (RawConfig { etcd_endpoints: Some(vec!["10.0.0.5:2379".into()]), ..f.clone() }, "not an http"),
            (RawConfig { etcd_endpoints: Some(vec![]), ..f.clone() }, "empty"),
            (RawConfig { etcd_lease_ttl_seconds: Some(0), ..f.clone() }, "between 1 and"),
            (RawConfig { pod_cidr: Some("10.244.1.0/24".into()), ..f.clone() }, "leave it unset"),
            (
                RawConfig { node_source: Some(SourceKind::File), nodes_file: Some("/x".into()), ..f.clone() },
                "read only with",
            ),
        ] {
            let e = Config::try_from(change).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            raw: RawConfig,
        }
        let cli =
            <Cli as clap::Parser>::try_parse_from(["knet-agent", "--etcd-endpoints", "http://a:2379,http://b:2379"])
                .unwrap();
        assert_eq!(cli.raw.etcd_endpoints.unwrap(), ["http://a:2379", "http://b:2379"]);
    }

    #[test]
    fn flags_override_file() {
        let file = raw("from-file", "10.0.0.0/24");
        let flags = RawConfig { pod_cidr: Some("10.1.0.0/24".into()), ..Default::default() };
        let merged = file.overridden_by(flags);
        assert_eq!(merged.node_name.as_deref(), Some("from-file"));
        assert_eq!(merged.pod_cidr.as_deref(), Some("10.1.0.0/24"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = RawConfig::from_toml("node_name = \"a\"\npod_cdr = \"10.0.0.0/24\"\n").unwrap_err();
        assert!(err.to_string().contains("pod_cdr"), "{err}");
    }
}
