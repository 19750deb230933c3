//! Owns the loaded eBPF object: the bpffs pins, the programs' attach points
//! and typed access to the maps. The node maps are handed out once, as
//! `NodeMaps`, to their one writer (the reconciler); nothing else touches
//! BPF state.

use std::{
    borrow::Borrow,
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap,
    },
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink},
        SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
    Ebpf, EbpfLoader,
};
use ipnet::Ipv4Net;
use knet_common::{
    ipv4_key, map_names,
    node::{DataplaneConfig, NodeInfo, NodeSubnet, SUBNET_LOCAL, SUBNET_NEIGHBOUR},
    peer::PeerCounters,
    program_names, Counter, Endpoint as MapEndpoint, Stat,
};
use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

use crate::mac::MacAddr;

/// The programs' read-only switch for their aya-log diagnostics (the
/// symbol of `knet-ebpf/src/diag.rs`).
const EBPF_LOG_GLOBAL: &str = "KNET_EBPF_LOG";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/knet.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum SetEndpointError {
    #[error("the endpoint map is full")]
    Full,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct Dataplane {
    ebpf: Ebpf,
    /// Where attachments are pinned: `<pin_dir>/links/<program>-<ifindex>`.
    links_dir: PathBuf,
    /// Attachments this agent made or adopted, by (program, ifindex).
    attached: HashMap<(&'static str, u32), Attachment>,
}

/// How an attachment is kept alive.
enum Attachment {
    /// A tcx link pinned in bpffs: it outlives the agent, so a restart or a
    /// crash never takes the data path down.
    Pinned(PathBuf),
    /// A clsact filter (kernels before 6.6), held by this process.
    Held(#[expect(dead_code, reason = "held only to keep the filter attached")] SchedClassifierLink),
}

fn uses_tcx() -> bool {
    KernelVersion::current().map(|v| v >= KernelVersion::new(6, 6, 0)).unwrap_or(false)
}

impl Dataplane {
    /// Loads the programs (the verifier runs here) and opens the maps,
    /// adopting maps already pinned in `pin_dir` so their entries survive.
    /// The node maps go apart: their one writer is the reconciler.
    /// `object`: a file to load instead of the built-in object (another
    /// build of `knet-ebpf`, e.g. to try it on a running node).
    /// `ebpf_log`: keep the programs' aya-log diagnostics (see
    /// `forward_ebpf_logs`); off, the verifier removes them.
    pub fn load(pin_dir: &Path, object: Option<&Path>, ebpf_log: bool) -> Result<(Self, NodeMaps)> {
        let file;
        let bytes: &[u8] = match object {
            Some(path) => {
                file =
                    std::fs::read(path).with_context(|| format!("cannot read the eBPF object {}", path.display()))?;
                &file
            }
            None if !cfg!(knet_ebpf_embedded) || OBJECT.is_empty() => {
                bail!("this knet-agent was built without its eBPF object; build it with `cargo xtask build`")
            }
            None => OBJECT,
        };
        let bpffs_root = Path::new("/sys/fs/bpf");
        ensure_bpffs(bpffs_root)?;
        let links_dir = pin_dir.join("links");
        std::fs::create_dir_all(&links_dir).with_context(|| format!("cannot create {}", links_dir.display()))?;
        let carried = crate::pinned_maps::check(pin_dir)?;
        let mut loader = EbpfLoader::new();
        // BTF maps carry no pinning of their own: the agent names each map
        // it pins (a pin found there is adopted).
        let pins: Vec<_> = crate::pinned_maps::EXPECTED.iter().map(|(name, _)| (*name, pin_dir.join(name))).collect();
        for (name, pin) in &pins {
            loader.map_pin_path(name, pin.as_path());
        }
        let mut ebpf = loader
            // Required only to turn the diagnostics on: an object of an
            // older build has no such switch and runs without them.
            .override_global(EBPF_LOG_GLOBAL, &u32::from(ebpf_log), ebpf_log)
            .load(bytes)
            .context("loading the eBPF object failed")?;
        for name in [program_names::FROM_POD, program_names::FROM_NETDEV, program_names::TO_NETDEV] {
            let prog: &mut SchedClassifier =
                ebpf.program_mut(name).with_context(|| format!("the eBPF object has no {name} program"))?.try_into()?;
            prog.load().with_context(|| format!("the verifier rejected {name}"))?;
        }
        let mut node_maps = NodeMaps::take(&mut ebpf)?;
        // Before any program of this build is attached: until then the old
        // programs forward on the old map, and after it on these entries.
        for (net, entry) in &carried.subnets {
            node_maps.set_subnet(*net, *entry)?;
        }
        carried.done()?;
        Ok((Dataplane { ebpf, links_dir, attached: HashMap::new() }, node_maps))
    }

    /// Logs the programs' aya-log records through `tracing` (their target
    /// is the eBPF module, `knet::diag`), from a thread of its own (the
    /// records are rare; it sleeps in `poll`), for as long as the agent runs.
    pub fn forward_ebpf_logs(&mut self) -> Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut logger = aya_log::EbpfLogger::init(&mut self.ebpf).context("cannot read the eBPF programs' logs")?;
        std::thread::Builder::new().name("ebpf-log".into()).spawn(move || loop {
            match poll(&mut [PollFd::new(logger.as_fd(), PollFlags::POLLIN)], PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => logger.flush(),
                Err(e) => {
                    tracing::warn!(error = %e, "the eBPF log reader stopped");
                    return;
                }
            }
        })?;
        tracing::info!("eBPF diagnostics on (ebpf_log)");
        Ok(())
    }

    /// Attaches `program` to `ifname` (ifindex `ifindex`). With tcx the link
    /// is pinned; a link a previous agent pinned there is adopted by
    /// swapping this agent's program into it atomically, so no packet
    /// meets an empty hook.
    fn attach(&mut self, program: &'static str, ifname: &str, ifindex: u32, at: TcAttachType) -> Result<()> {
        if self.attached.contains_key(&(program, ifindex)) {
            return Ok(());
        }
        let prog: &mut SchedClassifier = self.ebpf.program_mut(program).context("program missing")?.try_into()?;
        if !uses_tcx() {
            // Without tcx, TC programs hang off a clsact qdisc; "exists" is fine.
            let _ = tc::qdisc_add_clsact(ifname);
            let id = prog.attach(ifname, at).with_context(|| format!("cannot attach {program} to {ifname}"))?;
            let link = prog.take_link(id)?;
            self.attached.insert((program, ifindex), Attachment::Held(link));
            return Ok(());
        }
        let pin = self.links_dir.join(link_pin_name(program, ifindex));
        let adopted = match PinnedLink::from_pin(&pin) {
            Ok(pinned) => SchedClassifierLink::try_from(FdLink::from(pinned))
                .ok()
                .and_then(|link| prog.attach_to_link(link).ok())
                .map(|id| prog.take_link(id))
                .is_some(),
            Err(_) => false,
        };
        if !adopted {
            // No pin, or one whose device is gone (its ifindex reused).
            let _ = std::fs::remove_file(&pin);
            let id = prog.attach(ifname, at).with_context(|| format!("cannot attach {program} to {ifname}"))?;
            let link: FdLink = prog.take_link(id)?.try_into()?;
            link.pin(&pin).with_context(|| format!("cannot pin the {program} link at {}", pin.display()))?;
        }
        self.attached.insert((program, ifindex), Attachment::Pinned(pin));
        Ok(())
    }

    /// Detaches `program` from ifindex before it returns. The pin is the
    /// link's last reference, but the kernel releases a link whose last
    /// pin goes away later, from a work queue; closing the last descriptor
    /// releases it at once. So: open the pin, unpin it, close.
    fn detach(&mut self, program: &'static str, ifindex: u32) -> Result<()> {
        if let Some(Attachment::Pinned(pin)) = self.attached.remove(&(program, ifindex)) {
            match PinnedLink::from_pin(&pin) {
                Ok(link) => drop(link.unpin().with_context(|| format!("cannot unpin {}", pin.display()))?),
                Err(_) => absent_file_is_fine(std::fs::remove_file(&pin))
                    .with_context(|| format!("cannot unpin {}", pin.display()))?,
            }
        }
        Ok(())
    }

    /// Removes pinned links this agent did not adopt (their endpoints or
    /// devices are gone).
    pub fn prune_links(&mut self) -> Result<()> {
        let kept: Vec<PathBuf> = self
            .attached
            .values()
            .filter_map(|a| match a {
                Attachment::Pinned(p) => Some(p.clone()),
                Attachment::Held(_) => None,
            })
            .collect();
        for entry in std::fs::read_dir(&self.links_dir)? {
            let path = entry?.path();
            if !kept.contains(&path) {
                std::fs::remove_file(&path).with_context(|| format!("cannot unpin {}", path.display()))?;
                tracing::info!(pin = %path.display(), "removed stale link");
            }
        }
        Ok(())
    }

    /// Attaches `from_pod` to the ingress of a host-side veth.
    pub fn attach_from_pod(&mut self, ifname: &str, ifindex: u32) -> Result<()> {
        self.attach(program_names::FROM_POD, ifname, ifindex, TcAttachType::Ingress)
    }

    pub fn detach_from_pod(&mut self, ifindex: u32) -> Result<()> {
        self.detach(program_names::FROM_POD, ifindex)
    }

    /// Attaches `from_netdev` (ingress) and, if `with_egress`, `to_netdev`
    /// (egress) to the underlay device.
    pub fn attach_underlay(&mut self, ifname: &str, ifindex: u32, with_egress: bool) -> Result<()> {
        self.attach(program_names::FROM_NETDEV, ifname, ifindex, TcAttachType::Ingress)?;
        if with_egress {
            self.attach(program_names::TO_NETDEV, ifname, ifindex, TcAttachType::Egress)?;
        }
        Ok(())
    }

    pub fn detach_underlay(&mut self, ifindex: u32) -> Result<()> {
        self.detach(program_names::FROM_NETDEV, ifindex)?;
        self.detach(program_names::TO_NETDEV, ifindex)
    }

    /// The programs the kernel has on the tcx ingress of `ifname`: (name,
    /// id, tag).
    pub fn tcx_ingress_programs(ifname: &str) -> Result<Vec<(String, u32, u64)>> {
        let (_, programs) = SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
            .with_context(|| format!("cannot query tcx ingress of {ifname}"))?;
        Ok(programs.iter().map(|p| (p.name_as_str().unwrap_or("").to_string(), p.id(), p.tag())).collect())
    }

    fn endpoints_map(&mut self) -> Result<BpfHashMap<&mut MapData, u32, MapEndpoint>> {
        let map = self.ebpf.map_mut(map_names::ENDPOINTS).context("ENDPOINTS map missing")?;
        Ok(BpfHashMap::try_from(map)?)
    }

    pub fn set_endpoint(&mut self, ip: Ipv4Addr, value: MapEndpoint) -> Result<(), SetEndpointError> {
        match self.endpoints_map()?.insert(ipv4_key(ip.octets()), value, 0) {
            Ok(()) => Ok(()),
            // The kernel's answer for a new key in a full hash map.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(nix::errno::Errno::E2BIG as i32) => {
                Err(SetEndpointError::Full)
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot write ENDPOINTS[{ip}]")).into()),
        }
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<()> {
        let removed = self.endpoints_map()?.remove(&ipv4_key(ip.octets()));
        absent_is_fine(removed).with_context(|| format!("cannot remove ENDPOINTS[{ip}]"))
    }

    /// Every entry of `ENDPOINTS`, including ones a previous agent pinned.
    pub fn map_endpoints(&mut self) -> Result<Vec<(Ipv4Addr, MapEndpoint)>> {
        endpoint_entries(&self.endpoints_map()?)
    }

    /// `STATS` summed over CPUs, one entry per code.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>> {
        let map = self.ebpf.map(map_names::STATS).context("STATS map missing")?;
        summed_stats(&PerCpuArray::try_from(map)?)
    }
}

/// Where the tcx link of `program` on `ifindex` is pinned, under the pin
/// directory's `links/`.
pub fn link_pin_name(program: &str, ifindex: u32) -> String {
    format!("{program}-{ifindex}")
}

/// The program and ifindex a link pin's name stands for.
pub fn parse_link_pin_name(name: &str) -> Option<(&str, u32)> {
    let (program, ifindex) = name.rsplit_once('-')?;
    let identifier = !program.is_empty() && program.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    Some((program, ifindex.parse().ok()?)).filter(|_| identifier)
}

/// Every entry of an `ENDPOINTS` map, the agent's own or opened by pin.
pub fn endpoint_entries<T: Borrow<MapData>>(
    map: &BpfHashMap<T, u32, MapEndpoint>,
) -> Result<Vec<(Ipv4Addr, MapEndpoint)>> {
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, value) = entry.context("cannot read ENDPOINTS")?;
        out.push((Ipv4Addr::from(key.to_ne_bytes()), value));
    }
    Ok(out)
}

/// A `STATS` map summed over CPUs, one entry per code, in `Stat::ALL`'s
/// order.
pub fn summed_stats<T: Borrow<MapData>>(stats: &PerCpuArray<T, Counter>) -> Result<Vec<(Stat, Counter)>> {
    Stat::ALL
        .iter()
        .map(|&stat| Ok((stat, summed(stats.get(&stat.slot(), 0).context("cannot read STATS")?.iter().copied()))))
        .collect()
}

/// One counter's values on every CPU, added up.
fn summed(per_cpu: impl Iterator<Item = Counter>) -> Counter {
    per_cpu.fold(Counter::default(), |acc, c| Counter { packets: acc.packets + c.packets, bytes: acc.bytes + c.bytes })
}

/// How many keys a map's key iterator yields.
fn key_count<K>(name: &str, keys: impl Iterator<Item = Result<K, MapError>>) -> Result<u32> {
    let mut n = 0u32;
    for key in keys {
        key.with_context(|| format!("cannot read {name}"))?;
        n += 1;
    }
    Ok(n)
}

/// A map a running (or stopped) agent pinned in `pin_dir`.
pub fn open_pinned_map(pin_dir: &Path, name: &str) -> Result<aya::maps::Map> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(aya::maps::Map::from_map_data(data)?)
}

/// Read-only handles on every pinned map, opened from the pins (file
/// descriptors of their own): a view such as the metrics reads the
/// kernel's live values without waiting for the maps' owners.
pub struct PinnedMaps {
    stats: PerCpuArray<MapData, Counter>,
    endpoints: BpfHashMap<MapData, u32, MapEndpoint>,
    node_maps: NodeMaps,
}

impl PinnedMaps {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        Ok(PinnedMaps {
            stats: PerCpuArray::try_from(open_pinned_map(pin_dir, map_names::STATS)?)?,
            endpoints: BpfHashMap::try_from(open_pinned_map(pin_dir, map_names::ENDPOINTS)?)?,
            node_maps: NodeMaps::open_pinned(pin_dir)?,
        })
    }

    /// `STATS` summed over CPUs, as `Dataplane::stats` reads it.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>> {
        summed_stats(&self.stats)
    }

    pub fn peer_counters(&self) -> Result<Vec<(Ipv4Addr, PeerCounters)>> {
        self.node_maps.peer_counters()
    }

    /// Every entry of `ENDPOINTS`.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, MapEndpoint)>> {
        endpoint_entries(&self.endpoints)
    }

    /// `NODE_SUBNETS`, `NODES` and `CONFIG`, read-only.
    pub fn node_maps(&self) -> &NodeMaps {
        &self.node_maps
    }

    /// How many entries each pinned map holds now (an array holds all its
    /// slots), in `pinned_maps::EXPECTED`'s order.
    pub fn entries(&self) -> Result<Vec<(&'static str, u32)>> {
        let maps = &self.node_maps;
        Ok(vec![
            (map_names::ENDPOINTS, key_count(map_names::ENDPOINTS, self.endpoints.keys())?),
            (map_names::NODE_SUBNETS, key_count(map_names::NODE_SUBNETS, maps.subnets.keys())?),
            (map_names::NODES, key_count(map_names::NODES, maps.nodes.keys())?),
            (map_names::CONFIG, maps.config.len()),
            (map_names::STATS, self.stats.len()),
            (map_names::PEER_STATS, key_count(map_names::PEER_STATS, maps.peers.keys())?),
        ])
    }
}

/// `NODE_SUBNETS`, `NODES`, `CONFIG` and the per-peer counters
/// (`PEER_STATS`, whose entries leave with their peers): owned by the
/// reconciler, or opened read-only from their pins by whoever wants to look.
pub struct NodeMaps {
    subnets: LpmTrie<MapData, u32, NodeSubnet>,
    nodes: BpfHashMap<MapData, u32, NodeInfo>,
    config: Array<MapData, DataplaneConfig>,
    peers: PerCpuHashMap<MapData, u32, PeerCounters>,
}

/// A `NODE_SUBNETS` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetEntry {
    pub node_ip: Ipv4Addr,
    pub local: bool,
    /// The node is on the underlay's L2 segment: the programs send to its
    /// address without a route lookup (`SUBNET_NEIGHBOUR`).
    pub neighbour: bool,
    /// The inner destination MAC toward the node (zeros for this node's
    /// own subnet, which is never encapsulated to).
    pub vtep_mac: MacAddr,
}

impl SubnetEntry {
    fn to_map(self) -> NodeSubnet {
        NodeSubnet {
            node_ip: ipv4_key(self.node_ip.octets()),
            flags: if self.local { SUBNET_LOCAL } else { 0 } | if self.neighbour { SUBNET_NEIGHBOUR } else { 0 },
            vtep_mac: self.vtep_mac.0,
            _pad: [0; 2],
        }
    }

    fn from_map(v: &NodeSubnet) -> Self {
        SubnetEntry {
            node_ip: Ipv4Addr::from(v.node_ip.to_ne_bytes()),
            local: v.flags & SUBNET_LOCAL != 0,
            neighbour: v.flags & SUBNET_NEIGHBOUR != 0,
            vtep_mac: MacAddr(v.vtep_mac),
        }
    }
}

fn lpm_key(subnet: Ipv4Net) -> Key<u32> {
    Key::new(u32::from(subnet.prefix_len()), ipv4_key(subnet.network().octets()))
}

impl NodeMaps {
    fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("the eBPF object has no {name} map"));
        Ok(NodeMaps {
            subnets: LpmTrie::try_from(take(map_names::NODE_SUBNETS)?)?,
            nodes: BpfHashMap::try_from(take(map_names::NODES)?)?,
            config: Array::try_from(take(map_names::CONFIG)?)?,
            peers: PerCpuHashMap::try_from(take(map_names::PEER_STATS)?)?,
        })
    }

    /// The maps a running agent pinned in `pin_dir`, for reading.
    pub fn open_pinned(pin_dir: &Path) -> Result<Self> {
        let open = |name: &str| open_pinned_map(pin_dir, name);
        Ok(NodeMaps {
            subnets: LpmTrie::try_from(open(map_names::NODE_SUBNETS)?)?,
            nodes: BpfHashMap::try_from(open(map_names::NODES)?)?,
            config: Array::try_from(open(map_names::CONFIG)?)?,
            peers: PerCpuHashMap::try_from(open(map_names::PEER_STATS)?)?,
        })
    }

    pub fn config(&self) -> Result<DataplaneConfig> {
        self.config.get(&0, 0).context("cannot read CONFIG")
    }

    pub fn set_config(&mut self, config: DataplaneConfig) -> Result<()> {
        self.config.set(0, config, 0).context("cannot write CONFIG")
    }

    pub fn set_subnet(&mut self, subnet: Ipv4Net, entry: SubnetEntry) -> Result<()> {
        self.subnets
            .insert(&lpm_key(subnet), entry.to_map(), 0)
            .with_context(|| format!("cannot write NODE_SUBNETS[{subnet}]"))
    }

    pub fn remove_subnet(&mut self, subnet: Ipv4Net) -> Result<()> {
        absent_is_fine(self.subnets.remove(&lpm_key(subnet)))
            .with_context(|| format!("cannot remove NODE_SUBNETS[{subnet}]"))
    }

    /// A node whose VXLAN packets are accepted.
    pub fn add_tunnel_source(&mut self, node_ip: Ipv4Addr) -> Result<()> {
        self.nodes
            .insert(ipv4_key(node_ip.octets()), NodeInfo { flags: 0 }, 0)
            .with_context(|| format!("cannot write NODES[{node_ip}]"))
    }

    pub fn remove_tunnel_source(&mut self, node_ip: Ipv4Addr) -> Result<()> {
        absent_is_fine(self.nodes.remove(&ipv4_key(node_ip.octets())))
            .with_context(|| format!("cannot remove NODES[{node_ip}]"))
    }

    /// The entry for exactly `subnet`, if there is one.
    pub fn subnet(&self, subnet: Ipv4Net) -> Result<Option<SubnetEntry>> {
        match self.subnets.get(&lpm_key(subnet), 0) {
            Ok(v) => Ok(Some(SubnetEntry::from_map(&v))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read NODE_SUBNETS[{subnet}]")),
        }
    }

    /// Every entry of `NODE_SUBNETS`.
    pub fn subnets(&self) -> Result<Vec<(Ipv4Net, SubnetEntry)>> {
        let mut out = Vec::new();
        for entry in self.subnets.iter() {
            let (key, value) = entry.context("cannot read NODE_SUBNETS")?;
            let net = Ipv4Net::new(Ipv4Addr::from(key.data().to_ne_bytes()), key.prefix_len() as u8)?;
            out.push((net, SubnetEntry::from_map(&value)));
        }
        Ok(out)
    }

    /// Every key of `NODES`.
    pub fn tunnel_sources(&self) -> Result<Vec<Ipv4Addr>> {
        self.nodes.keys().map(|k| Ok(Ipv4Addr::from(k.context("cannot read NODES")?.to_ne_bytes()))).collect()
    }

    /// `PEER_STATS` summed over CPUs, by peer underlay address.
    pub fn peer_counters(&self) -> Result<Vec<(Ipv4Addr, PeerCounters)>> {
        let mut out = Vec::new();
        for entry in self.peers.iter() {
            let (key, per_cpu) = entry.context("cannot read PEER_STATS")?;
            let counters =
                PeerCounters { tx: summed(per_cpu.iter().map(|c| c.tx)), rx: summed(per_cpu.iter().map(|c| c.rx)) };
            out.push((Ipv4Addr::from(key.to_ne_bytes()), counters));
        }
        Ok(out)
    }

    /// Removes the counters of every peer not in `peers` (nodes that left,
    /// or all of them when the tunnel is gone).
    pub fn retain_peer_counters(&mut self, peers: &std::collections::BTreeSet<Ipv4Addr>) -> Result<()> {
        let keys: Vec<u32> = self.peers.keys().collect::<Result<_, _>>().context("cannot read PEER_STATS")?;
        for key in keys {
            let ip = Ipv4Addr::from(key.to_ne_bytes());
            if !peers.contains(&ip) {
                absent_is_fine(self.peers.remove(&key)).with_context(|| format!("cannot remove PEER_STATS[{ip}]"))?;
            }
        }
        Ok(())
    }
}

/// A removal of a key that is not there is no error: removals are
/// idempotent. aya reports it as `KeyNotFound` or as the syscall's ENOENT.
fn absent_is_fine(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn absent_file_is_fine(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Mounts bpffs at `root` unless it already is one.
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    let is_bpffs = statfs(root).map(|st| st.filesystem_type() == BPF_FS_MAGIC).unwrap_or(false);
    if is_bpffs {
        return Ok(());
    }
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    mount(Some("bpf"), root, Some("bpf"), MsFlags::empty(), None::<&str>)
        .with_context(|| format!("cannot mount bpffs at {}", root.display()))?;
    tracing::info!(path = %root.display(), "mounted bpffs");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip() {
        let name = link_pin_name(program_names::FROM_POD, 17);
        assert_eq!(parse_link_pin_name(&name), Some((program_names::FROM_POD, 17)));
        assert_eq!(parse_link_pin_name("from_netdev-3"), Some(("from_netdev", 3)));
        for bad in ["from_pod", "from_pod-", "-4", "from_pod-x1", "from_pod--1"] {
            assert_eq!(parse_link_pin_name(bad), None, "{bad}");
        }
    }
}
