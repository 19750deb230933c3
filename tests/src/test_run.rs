//! The agent's own eBPF object run on crafted frames with
//! `BPF_PROG_TEST_RUN`, its maps filled by the test: the engine under the
//! packet table (`tests/tests/packet_table`).
//!
//! The maps are BTF maps, pinned only where a loader names them (the
//! agent does); a map that asked to be pinned by name would go to a
//! directory of this run's own under `/sys/fs/bpf` (without one aya would
//! pin it in `/sys/fs/bpf` itself), removed on drop, also when a test
//! panics. Each run also returns the drop events it put in the ring.

use std::{
    mem::{offset_of, size_of},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use knet_common::{
    drop_event::DropEvent,
    ipv4_key, map_names,
    node::{DataplaneConfig, NodeInfo, NodeSubnet},
    program_names, Counter, Endpoint, STAT_SLOTS,
};

use crate::{cmd, netns::unique_name};

/// One of knet's TC programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    FromPod,
    FromNetdev,
    ToNetdev,
}

impl Program {
    pub const ALL: [Program; 3] = [Program::FromPod, Program::FromNetdev, Program::ToNetdev];

    pub fn name(self) -> &'static str {
        match self {
            Program::FromPod => program_names::FROM_POD,
            Program::FromNetdev => program_names::FROM_NETDEV,
            Program::ToNetdev => program_names::TO_NETDEV,
        }
    }
}

/// Everything the programs read from their maps: set whole before a run,
/// so no run sees what an earlier one left.
#[derive(Clone, Debug)]
pub struct Maps {
    pub config: DataplaneConfig,
    pub endpoints: Vec<(Ipv4Addr, Endpoint)>,
    /// (network address, prefix length, value).
    pub subnets: Vec<(Ipv4Addr, u32, NodeSubnet)>,
    /// Underlay addresses of the known nodes.
    pub nodes: Vec<Ipv4Addr>,
    /// The ICMP rate limit's theoretical arrival time (ns), on every CPU.
    pub icmp_tat: u64,
}

/// The `__sk_buff` fields a test run may set (the kernel refuses any
/// other non-zero field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skb {
    /// The device the packet is on; 0 (or 1) runs on loopback, ifindex 1.
    /// Another device must exist in the calling thread's namespace.
    pub ifindex: u32,
    /// Non-zero makes the skb a GSO packet (of no GSO type).
    pub gso_size: u32,
}

/// `struct __sk_buff` of include/uapi/linux/bpf.h (pointers as the
/// 64-bit fields they are to userspace): only its layout is used, to
/// find the fields read and written here.
#[repr(C)]
struct SkBuff {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    ingress_ifindex: u32,
    ifindex: u32,
    tc_index: u32,
    cb: [u32; 5],
    hash: u32,
    tc_classid: u32,
    data: u32,
    data_end: u32,
    napi_id: u32,
    family: u32,
    remote_ip4: u32,
    local_ip4: u32,
    remote_ip6: [u32; 4],
    local_ip6: [u32; 4],
    remote_port: u32,
    local_port: u32,
    data_meta: u32,
    flow_keys: u64,
    tstamp: u64,
    wire_len: u32,
    gso_segs: u32,
    sk: u64,
    gso_size: u32,
    tstamp_type: u8,
    hwtstamp: u64,
}

const SKB_SIZE: usize = size_of::<SkBuff>();
// As on Linux 6.18; a kernel whose struct is larger refuses a smaller
// ctx_out (ENOSPC), so a change shows.
const _: () = assert!(SKB_SIZE == 192);
const SKB_IFINDEX_AT: usize = offset_of!(SkBuff, ifindex);
const SKB_CB_AT: usize = offset_of!(SkBuff, cb);
const SKB_GSO_SIZE_AT: usize = offset_of!(SkBuff, gso_size);

/// What `cb[0]` and `cb[1]` hold before a run: a value no program writes,
/// so a run that leaves no redirect target shows it untouched.
pub const CB_UNTOUCHED: u32 = 0xdead_beef;

/// A program's run on one frame.
#[derive(Debug)]
pub struct Run {
    /// What the program did, or the kernel's refusal to run it.
    pub result: std::result::Result<Output, std::io::Error>,
    /// The `STATS` slots that moved (summed over CPUs): (slot, increase).
    pub moved: Vec<(u32, Counter)>,
    /// The drop events the run put in `DROP_EVENTS`.
    pub events: Vec<DropEvent>,
}

#[derive(Debug)]
pub struct Output {
    /// The TC return code.
    pub code: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// `cb[0]` and `cb[1]`: the redirect target (ifindex, next hop in
    /// wire order), or `CB_UNTOUCHED`.
    pub cb: [u32; 2],
}

/// The loaded object, its maps pinned in a directory of its own.
pub struct TestDataplane {
    ebpf: Ebpf,
    _pins: PinDir,
}

impl TestDataplane {
    /// Loads the object named by `KNET_EBPF_OBJECT` and its three programs.
    pub fn load() -> Result<Self> {
        let object = std::env::var_os("KNET_EBPF_OBJECT")
            .map(PathBuf::from)
            .context("KNET_EBPF_OBJECT is not set (run the tests with `cargo xtask test`)")?;
        let bytes = std::fs::read(&object).with_context(|| format!("cannot read {}", object.display()))?;
        ensure_bpffs()?;
        let pins = PinDir::new()?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .load(&bytes)
            .with_context(|| format!("cannot load {}", object.display()))?;
        for program in Program::ALL {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(program.name())
                .with_context(|| format!("no {} program", program.name()))?
                .try_into()?;
            prog.load().with_context(|| format!("the verifier rejected {}", program.name()))?;
        }
        Ok(TestDataplane { ebpf, _pins: pins })
    }

    /// Replaces the content of every map the programs read with `maps`.
    pub fn set_maps(&mut self, maps: &Maps) -> Result<()> {
        let mut endpoints: HashMap<_, u32, Endpoint> = HashMap::try_from(self.map_mut(map_names::ENDPOINTS)?)?;
        for key in endpoints.keys().collect::<Result<Vec<_>, _>>()? {
            endpoints.remove(&key)?;
        }
        for (ip, endpoint) in &maps.endpoints {
            endpoints.insert(ipv4_key(ip.octets()), endpoint, 0)?;
        }

        let mut subnets: LpmTrie<_, u32, NodeSubnet> = LpmTrie::try_from(self.map_mut(map_names::NODE_SUBNETS)?)?;
        for key in subnets.keys().collect::<Result<Vec<_>, _>>()? {
            subnets.remove(&key)?;
        }
        for (network, prefix_len, subnet) in &maps.subnets {
            subnets.insert(&Key::new(*prefix_len, ipv4_key(network.octets())), subnet, 0)?;
        }

        let mut nodes: HashMap<_, u32, NodeInfo> = HashMap::try_from(self.map_mut(map_names::NODES)?)?;
        for key in nodes.keys().collect::<Result<Vec<_>, _>>()? {
            nodes.remove(&key)?;
        }
        for ip in &maps.nodes {
            nodes.insert(ipv4_key(ip.octets()), NodeInfo { flags: 0 }, 0)?;
        }

        let mut config: Array<_, DataplaneConfig> = Array::try_from(self.map_mut(map_names::CONFIG)?)?;
        config.set(0, maps.config, 0)?;

        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let mut rate: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map_mut(map_names::ICMP_RATE)?)?;
        rate.set(0, PerCpuValues::try_from(vec![maps.icmp_tat; cpus])?, 0)?;
        // A full burst of drop events for every row.
        let mut events: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map_mut(map_names::DROP_EVENT_RATE)?)?;
        events.set(0, PerCpuValues::try_from(vec![0; cpus])?, 0)?;
        Ok(())
    }

    /// Runs `program` once on `frame` in the skb `skb`.
    pub fn run(&self, program: Program, frame: &[u8], skb: Skb) -> Result<Run> {
        let prog: &SchedClassifier =
            self.ebpf.program(program.name()).with_context(|| format!("no {} program", program.name()))?.try_into()?;
        let mut ctx_in = [0u8; SKB_SIZE];
        put(&mut ctx_in, SKB_IFINDEX_AT, skb.ifindex);
        put(&mut ctx_in, SKB_CB_AT, CB_UNTOUCHED);
        put(&mut ctx_in, SKB_CB_AT + 4, CB_UNTOUCHED);
        put(&mut ctx_in, SKB_GSO_SIZE_AT, skb.gso_size);
        let mut ctx_out = [0u8; SKB_SIZE];
        // Room for any growth (VXLAN adds 50 bytes).
        let mut data_out = vec![0u8; frame.len() + 256];

        self.drop_events()?;
        let before = self.stats()?;
        let ran = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::default()
        });
        let after = self.stats()?;
        let events = self.drop_events()?;
        let moved = (0..STAT_SLOTS)
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| b != a)
            .map(|(slot, (b, a))| (slot, Counter { packets: a.packets - b.packets, bytes: a.bytes - b.bytes }))
            .collect();

        let result = match ran {
            Ok(r) => {
                data_out.truncate(r.data_size_out as usize);
                // The kernel writes the device back (loopback for 0): a
                // check that the offsets above are the kernel's.
                let ifindex = get(&ctx_out, SKB_IFINDEX_AT);
                if ifindex != skb.ifindex.max(1) {
                    bail!("__sk_buff.ifindex {ifindex} after a run on {}: wrong layout", skb.ifindex.max(1));
                }
                Ok(Output {
                    code: r.return_value,
                    frame: data_out,
                    cb: [get(&ctx_out, SKB_CB_AT), get(&ctx_out, SKB_CB_AT + 4)],
                })
            }
            Err(ProgramError::SyscallError(e)) => Err(e.io_error),
            Err(e) => return Err(e.into()),
        };
        Ok(Run { result, moved, events })
    }

    /// The drop events waiting in the ring, taken out of it.
    fn drop_events(&self) -> Result<Vec<DropEvent>> {
        let map = self.ebpf.map(map_names::DROP_EVENTS).context("no DROP_EVENTS map")?;
        let mut ring = RingBuf::try_from(map)?;
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            events.push(DropEvent::decode(&item).with_context(|| format!("a drop event of {} bytes", item.len()))?);
        }
        Ok(events)
    }

    /// Every `STATS` slot, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<Counter>> {
        let map = self.ebpf.map(map_names::STATS).context("no STATS map")?;
        let stats: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map)?;
        (0..STAT_SLOTS)
            .map(|slot| {
                let per_cpu = stats.get(&slot, 0)?;
                Ok(per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
                    packets: sum.packets + c.packets,
                    bytes: sum.bytes + c.bytes,
                }))
            })
            .collect()
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf.map_mut(name).with_context(|| format!("no {name} map"))
    }
}

fn put(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

fn get(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// A directory under `/sys/fs/bpf` for this run's pins, removed with
/// everything in it on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Result<Self> {
        let path = Path::new(BPFFS).join(unique_name("table"));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(PinDir(path))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cleanup: cannot remove {}: {e}", self.0.display());
        }
    }
}

const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs where the agent would, unless a bpffs is there already
/// (a new machine has none).
fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut fields = l.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    });
    if !mounted {
        cmd::run("mount", &["-t", "bpf", "bpf", BPFFS])?;
    }
    Ok(())
}
