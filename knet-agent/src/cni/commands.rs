//! ADD, DEL, CHECK and VERSION. ADD checks everything it can before its
//! first side effect and undoes its own steps when a later one fails; DEL
//! cleans what there is and is idempotent; CHECK reports every difference.

use std::{net::Ipv4Addr, os::fd::AsFd};

use super::{
    agent, check,
    env::{self, CniArgs, Command},
    ipam::Ipam,
    names, netns,
    routes::{self, NodeRoutes},
    spec::{self, code, CniError, CniResult, NetConf, VersionInfo},
    wiring,
};

/// One invocation: the environment through `get`, the configuration on
/// `stdin`. What to print on stdout on success.
pub fn run(get: &impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<String, CniError> {
    let command = env::command(get)?;
    if command == Command::Version {
        let requested: Option<String> = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string));
        return Ok(to_json(&VersionInfo::new(requested.as_deref())));
    }
    let args = env::args(command, get)?;
    let conf = spec::parse_netconf(stdin)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::IO, "cannot build a runtime").with_details(e.to_string()))?;
    runtime.block_on(async {
        match command {
            Command::Add => add(&args, &conf, stdin).await.map(|r| to_json(&r)),
            Command::Del => del(&args, &conf, stdin).await.map(|()| String::new()),
            Command::Check => check(&args, &conf, stdin).await.map(|()| String::new()),
            Command::Version => unreachable!("answered above"),
        }
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("CNI types serialize")
}

/// What ADD has done so far, to be undone in reverse if a later step fails.
#[derive(Default)]
struct Done {
    veth: Option<String>,
    ipam: bool,
    endpoint: Option<Ipv4Addr>,
}

impl Done {
    async fn undo(self, handle: &rtnetlink::Handle, agent: &agent::Agent<'_>, ipam: &Ipam) {
        if let Some(ip) = self.endpoint {
            if let Err(e) = agent.unregister(ip).await {
                eprintln!("knet: undoing ADD: {e}");
            }
        }
        if self.ipam {
            if let Err(e) = ipam.exec("DEL").await {
                eprintln!("knet: undoing ADD: {e}");
            }
        }
        if let Some(name) = self.veth {
            // Deleting one end deletes the pair, wherever the other end is,
            // and with it the node's route through it.
            match wiring::link(handle, &name).await {
                Ok(Some(link)) => {
                    if let Err(e) = wiring::delete_link(handle, link.index).await {
                        eprintln!("knet: undoing ADD: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => eprintln!("knet: undoing ADD: {e}"),
            }
        }
    }
}

async fn add(args: &CniArgs, conf: &NetConf, stdin: &[u8]) -> Result<CniResult, CniError> {
    // Everything that can be checked without a side effect, first.
    let netns_path = args.netns.as_ref().expect("ADD requires CNI_NETNS");
    let ns = netns::open(netns_path)?;
    netns::refuse_node_namespace(&ns, netns_path)?;
    let ipam = Ipam::prepare(&conf.ipam_type, &args.path, &conf.cni_version, stdin).await?;
    let host = names::host_veth(&args.container_id, &args.ifname);
    let alias = names::owner_alias(&args.container_id, &args.ifname);
    let node = wiring::connect()?;
    let ifname = args.ifname.clone();
    let in_pod = netns::run_in(&ns, move |h| async move { wiring::link(&h, &ifname).await }).await?;
    if in_pod.is_some() {
        return Err(CniError::new(
            code::ALREADY_EXISTS,
            format!("{} already exists in {}", args.ifname, netns_path.display()),
        ));
    }
    if let Some(existing) = wiring::link(&node, &host).await? {
        return Err(CniError::new(
            code::ALREADY_EXISTS,
            format!(
                "host veth {host} already exists (owner {:?}): container {} interface {} was added before",
                existing.alias.unwrap_or_default(),
                args.container_id,
                args.ifname
            ),
        ));
    }
    // The one request before any side effect: the agent answers, and says
    // whether pod routes that leave the node need a smaller MTU and what
    // packet size the veth may take (BIG TCP).
    let agent = agent::Agent::new(&conf.agent_socket, args.command);
    let view = agent.node().await?;
    let node_routes = NodeRoutes::of(&view);

    let mut done = Done::default();
    let veth = Veth { host: &host, alias: &alias, gso_max_size: view.gso_max_size };
    match add_steps(args, conf, &ns, &node, &ipam, &agent, node_routes, &mut done, veth).await {
        Ok(result) => Ok(result),
        Err(e) => {
            done.undo(&node, &agent, &ipam).await;
            Err(e)
        }
    }
}

/// The pod's veth pair as ADD creates it.
struct Veth<'a> {
    host: &'a str,
    /// The host side's alias: which container and interface it wires.
    alias: &'a str,
    /// IPv4 GSO and GRO size of both ends, when the agent offers BIG TCP.
    gso_max_size: Option<u32>,
}

#[allow(clippy::too_many_arguments)]
async fn add_steps(
    args: &CniArgs,
    conf: &NetConf,
    ns: &std::fs::File,
    node: &rtnetlink::Handle,
    ipam: &Ipam,
    agent: &agent::Agent<'_>,
    node_routes: Option<NodeRoutes>,
    done: &mut Done,
    Veth { host, alias, gso_max_size }: Veth<'_>,
) -> Result<CniResult, CniError> {
    wiring::create_veth(node, host, &args.ifname, conf.mtu, gso_max_size, ns.as_fd()).await?;
    done.veth = Some(host.to_string());
    let missing = |name: &str| CniError::new(code::NETLINK, format!("{name} vanished after creation"));
    let host_link = wiring::link(node, host).await?.ok_or_else(|| missing(host))?;
    let host_mac = host_link.mac.ok_or_else(|| CniError::new(code::NETLINK, format!("{host} has no MAC address")))?;
    wiring::set_up(node, host_link.index, Some(alias), None).await?;

    let ipam_result =
        ipam.exec("ADD").await?.ok_or_else(|| CniError::new(code::IPAM_RESULT, "the IPAM plugin printed nothing"))?;
    done.ipam = true;
    let ip = ipam_result.single_ipv4()?.addr();
    let routes = routes::plan(&ipam_result, conf.mtu, node_routes);

    let (ifname, mtu, pod_routes) = (args.ifname.clone(), conf.mtu, routes.clone());
    let pod = netns::run_in(ns, move |h| wiring::configure_pod(h, ifname, ip, mtu, host_mac, pod_routes)).await?;
    let pod_mac = pod.mac.ok_or_else(|| CniError::new(code::NETLINK, "the pod's interface has no MAC address"))?;
    wiring::add_host_route(node, ip, host_link.index).await?;

    // Recorded before the request: an agent that writes the entry and dies
    // before it answers leaves one, and undoing a DELETE of an entry that
    // was never written is harmless (404 is fine).
    done.endpoint = Some(ip);
    agent.register(ip, host, pod_mac).await?;

    let dns = if ipam_result.dns.is_empty() { conf.dns.clone() } else { ipam_result.dns.clone() };
    Ok(spec::add_result(spec::AddOutcome {
        version: &conf.cni_version,
        host_veth: host,
        host_mac: &host_mac.to_string(),
        ifname: &args.ifname,
        pod_mac: &pod_mac.to_string(),
        sandbox: &args.netns.as_ref().expect("checked").display().to_string(),
        ip,
        routes: &routes,
        dns,
    }))
}

/// Removes the endpoint, the lease and the veth. What is already gone is
/// fine; every step runs even if an earlier one failed, and the first
/// failure is reported (so the runtime retries).
async fn del(args: &CniArgs, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let host = names::host_veth(&args.container_id, &args.ifname);
    let peer = names::temp_peer(&args.container_id, &args.ifname);
    let alias = names::owner_alias(&args.container_id, &args.ifname);
    let mut first: Option<CniError> = None;
    let mut keep = |r: Result<(), CniError>| {
        if let Err(e) = r {
            eprintln!("knet: DEL: {e}");
            first.get_or_insert(e);
        }
    };

    // The agent's endpoints on this container's veth (found by name, so
    // DEL needs no prevResult).
    let agent = agent::Agent::new(&conf.agent_socket, args.command);
    match agent.endpoints().await {
        Ok(list) => {
            for ep in list.iter().filter(|ep| ep.host_veth == host) {
                keep(agent.unregister(ep.ip).await);
            }
        }
        Err(e) => keep(Err(e)),
    }

    match Ipam::prepare(&conf.ipam_type, &args.path, &conf.cni_version, stdin).await {
        Ok(ipam) => keep(ipam.exec("DEL").await.map(drop)),
        Err(e) => keep(Err(e)),
    }

    match wiring::connect() {
        Ok(node) => {
            for name in [&host, &peer] {
                match wiring::link(&node, name).await {
                    Ok(Some(link)) => {
                        // A clash of names with another container's veth is
                        // not this container's to delete.
                        if link.alias.as_deref().is_some_and(|a| a != alias) {
                            eprintln!("knet: DEL: {name} belongs to {:?}, left alone", link.alias);
                        } else {
                            keep(wiring::delete_link(&node, link.index).await);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => keep(Err(e)),
                }
            }
        }
        Err(e) => keep(Err(e)),
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn check(args: &CniArgs, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    if !spec::supports_check(&conf.cni_version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {} has no CHECK (0.4.0 and later)", conf.cni_version),
        ));
    }
    let prev = conf.prev_result()?;
    let prev = prev.as_ref().ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs the prevResult of ADD"))?;
    let ip = prev.pod_ipv4(&args.ifname).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("prevResult has no IPv4 address for sandbox interface {}", args.ifname),
        )
    })?;
    let netns_path = args.netns.as_ref().expect("CHECK requires CNI_NETNS");
    let ns = netns::open(netns_path)?;
    let ipam = Ipam::prepare(&conf.ipam_type, &args.path, &conf.cni_version, stdin).await?;
    ipam.exec("CHECK").await?;
    // The routes' MTUs as ADD would plan them now; never prevResult's.
    let agent = agent::Agent::new(&conf.agent_socket, args.command);
    let node_routes = NodeRoutes::of(&agent.node().await?);

    let host = names::host_veth(&args.container_id, &args.ifname);
    let node = wiring::connect()?;
    let ifname = args.ifname.clone();
    let pod = netns::run_in(&ns, move |h| wiring::pod_state(h, ifname)).await?;
    let observed = check::Observed {
        pod,
        host: wiring::link(&node, &host).await?,
        node_routes: wiring::main_table_routes(&node).await?,
        endpoints: agent.endpoints().await?,
    };
    let expected = check::Expected {
        ifname: args.ifname.clone(),
        ip: ip.addr(),
        mtu: conf.mtu,
        host_veth: host,
        owner_alias: names::owner_alias(&args.container_id, &args.ifname),
        routes: check::expected_routes(prev, conf.mtu, node_routes),
    };
    let problems = check::problems(&expected, &observed);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::CHECK_FAILED,
            format!("pod {} is not wired as ADD left it: {}", ip.addr(), problems.join("; ")),
        ))
    }
}
