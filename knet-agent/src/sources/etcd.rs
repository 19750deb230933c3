//! The etcd node source, in flannel's own layout (`flannel`), so one etcd
//! serves flanneld and knet alike. The agent leases its subnet as flanneld
//! does: its old lease back when one carries its PublicIP, else a free
//! subnet taken with a compare-and-swap transaction (created only if the
//! key does not exist), attached to an etcd lease with the configured TTL
//! and kept alive. Then it lists the prefix and watches it from the listed
//! revision; a compaction, a lost lease or any error lists again after a
//! bounded backoff, and the last good set stays published meanwhile.

pub mod flannel;

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    Txn, TxnOp, WatchOptions,
};
use ipnet::Ipv4Net;

use self::flannel::{Me, NetworkConfig, RawLeases};
use super::Publisher;
use crate::config::EtcdSettings;

/// flannel's `raceRetries`: CAS losses in a row before giving up a round.
const RACE_RETRIES: usize = 10;
/// flannel picks at random among the first this many free subnets, so that
/// agents starting together rarely race for the same one.
const PICK_AMONG: usize = 100;
/// Backoff between rounds after an error: from the first, doubling to the
/// cap (flannel's watch uses 100 ms to 5 s), reset by a full list.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(5);
/// No single etcd call may hang a round longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for `settings`' endpoints. TLS material is read here and only
/// file names ever reach an error or the log.
pub async fn connect(settings: &EtcdSettings) -> Result<Client> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        // HTTP/2 pings find a silent, dead connection (a partition) in
        // seconds, not at the kernel's TCP timeout.
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &settings.tls {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).with_context(|| format!("cannot read the etcd {what} {}", path.display()))
        };
        let mut config = TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            config = config.ca_certificate(Certificate::from_pem(read(ca, "CA file")?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            config = config.identity(Identity::from_pem(read(cert, "certificate")?, read(key, "key file")?));
        }
        options = options.with_tls(config);
    }
    Client::connect(&settings.endpoints, Some(options))
        .await
        .with_context(|| format!("cannot set up an etcd client for {}", settings.endpoints.join(",")))
}

/// Bounds one etcd call.
async fn call<T>(what: &str, fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.with_context(|| format!("etcd {what}")),
        Err(_) => bail!("etcd {what}: no answer in {CALL_TIMEOUT:?}"),
    }
}

/// This agent's subnet and the etcd lease that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub subnet: Ipv4Net,
    pub lease: i64,
}

/// The network config at `<prefix>/config`, checked against this agent.
pub async fn network_config(client: &mut Client, prefix: &str, me: &Me) -> Result<NetworkConfig> {
    let key = format!("{prefix}/config");
    let resp = call("get of the network config", client.get(key.as_str(), None)).await?;
    let kv = resp
        .kvs()
        .first()
        .ok_or_else(|| anyhow!("no network config at {key} in etcd (flannel's {{\"Network\": ...}})"))?;
    let network = flannel::parse_config(kv.value()).map_err(|e| anyhow!("{key}: {e}"))?;
    network.check_agent(me.mode, me.vni).map_err(|e| anyhow!("{key}: {e}"))?;
    Ok(network)
}

/// Every lease under `<prefix>/subnets/`, with the revision of the read.
async fn subnet_leases(client: &mut Client, prefix: &str) -> Result<(RawLeases, Vec<(String, i64, i64)>, i64)> {
    let key = format!("{prefix}/subnets/");
    let resp = call("list of the subnet leases", client.get(key, Some(GetOptions::new().with_prefix()))).await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
    let mut leases = RawLeases::new();
    let mut meta = Vec::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        meta.push((key.clone(), kv.mod_revision(), kv.lease()));
        leases.insert(key, kv.value().to_vec());
    }
    Ok((leases, meta, revision))
}

/// Why taking a subnet failed.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("no free subnet left in {0} (SubnetMin {1} to SubnetMax {2})")]
    Exhausted(Ipv4Net, Ipv4Addr, Ipv4Addr),
    #[error("this node's subnet {0} was taken by another node after its lease expired; restart the agent to lease a new one")]
    Taken(Ipv4Net),
    #[error("lost the race for a subnet {RACE_RETRIES} times in a row")]
    Races,
    #[error(transparent)]
    Etcd(#[from] anyhow::Error),
}

/// Takes this node's subnet, as flannel's `tryAcquireLease` does: the lease
/// with this node's PublicIP if there is one that fits the network (a
/// restart), else `previous` (the subnet this agent held before its lease
/// ran out) if it is free, else a random free one. Every write is a
/// transaction conditioned on what was read, so two agents never hold
/// one subnet.
pub async fn acquire(
    client: &mut Client,
    prefix: &str,
    network: &NetworkConfig,
    me: &Me,
    ttl: Duration,
    previous: Option<Ipv4Net>,
) -> Result<Held, AcquireError> {
    let value = flannel::own_lease(me.public_ip, me.mode, me.vni).to_json();
    for _ in 0..RACE_RETRIES {
        let (leases, meta, _) = subnet_leases(client, prefix).await?;
        if let Some((key, subnet)) = flannel::find_by_public_ip(prefix, &leases, me.public_ip) {
            let (_, mod_revision, old_lease) = meta.iter().find(|m| m.0 == key).cloned().expect("listed");
            if network.fits(subnet) && previous.is_none_or(|p| p == subnet) {
                let cond = Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision);
                if let Some(held) = put_if(client, &key, &value, subnet, ttl, cond).await? {
                    if old_lease != 0 && old_lease != held.lease {
                        // The key is on the new lease now; the old one
                        // holds nothing and would only linger to its TTL.
                        let _ = call("revoke of the old lease", client.lease_revoke(old_lease)).await;
                    }
                    tracing::info!(subnet = %subnet, key, "took back this node's lease");
                    return Ok(held);
                }
                continue;
            }
            // flannel drops a lease of its own that no longer fits.
            tracing::info!(key, network = %network.network, "removing this node's lease that does not fit the network");
            let cond = Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision);
            let txn = Txn::new().when([cond]).and_then([TxnOp::delete(key.as_str(), None)]);
            call("delete of an unfitting lease", client.txn(txn)).await?;
            continue;
        }
        let taken = flannel::taken_subnets(prefix, &leases);
        let subnet = match previous {
            Some(p) if taken.iter().any(|t| t.contains(&p.network()) || p.contains(&t.network())) => {
                return Err(AcquireError::Taken(p))
            }
            Some(p) => p,
            None => {
                let free = network.free_subnets(&taken, PICK_AMONG);
                if free.is_empty() {
                    return Err(AcquireError::Exhausted(network.network, network.subnet_min, network.subnet_max));
                }
                free[pick(free.len(), me.public_ip)]
            }
        };
        let key = flannel::subnet_key(prefix, subnet);
        // Created only if the key does not exist: the whole of the CAS.
        let cond = Compare::version(key.as_str(), CompareOp::Equal, 0);
        if let Some(held) = put_if(client, &key, &value, subnet, ttl, cond).await? {
            tracing::info!(subnet = %subnet, key, ttl_seconds = ttl.as_secs(), "leased a subnet");
            return Ok(held);
        }
        tracing::debug!(key, "another node took the subnet first; trying again");
    }
    Err(AcquireError::Races)
}

/// Grants a lease and writes `value` to `key` on it if `cond` holds;
/// `None` (and the lease revoked) when it does not.
async fn put_if(
    client: &mut Client,
    key: &str,
    value: &str,
    subnet: Ipv4Net,
    ttl: Duration,
    cond: Compare,
) -> Result<Option<Held>> {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let lease = call("lease grant", client.lease_grant(ttl, None)).await?.id();
    let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
    let txn = Txn::new().when([cond]).and_then([put]);
    match call("lease transaction", client.txn(txn)).await {
        Ok(resp) if resp.succeeded() => Ok(Some(Held { subnet, lease })),
        other => {
            let _ = call("revoke of an unused lease", client.lease_revoke(lease)).await;
            other.map(|_| None)
        }
    }
}

/// An index below `n`, different from agent to agent and run to run.
fn pick(n: usize, salt: Ipv4Addr) -> usize {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    salt.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// Publishes the node set the leases in etcd describe, until no one
/// listens. Never returns an error: each failure is published and the
/// round starts again after a bounded backoff.
pub async fn watch(settings: EtcdSettings, me: Me, publisher: Publisher) {
    let mut state = State { subnet: None, lease: None, skipped: Default::default() };
    let mut pause = RETRY_FIRST;
    loop {
        let round = tokio::select! {
            r = round(&settings, &me, &publisher, &mut state, &mut pause) => r,
            () = publisher.closed() => return,
        };
        let e = round.expect_err("a round ends only in an error");
        let msg = format!("etcd: {e:#} (trying again in {pause:?})");
        tracing::warn!(error = %msg, "etcd node source");
        publisher.failed(msg);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = publisher.closed() => return,
        }
        pause = (pause * 2).min(RETRY_CAP);
    }
}

/// What outlives a round.
struct State {
    /// The subnet this agent holds or held: it never takes another.
    subnet: Option<Ipv4Net>,
    /// The etcd lease holding it, while it is thought alive.
    lease: Option<i64>,
    /// Skip reasons already logged, by key (each logged once per reason).
    skipped: std::collections::BTreeMap<String, String>,
}

/// Leases and lists in etcd
struct Store {
    config: Option<Vec<u8>>,
    leases: RawLeases,
}

/// One round: connect, hold the lease, list, watch. Returns only errors.
async fn round(
    settings: &EtcdSettings,
    me: &Me,
    publisher: &Publisher,
    state: &mut State,
    pause: &mut Duration,
) -> Result<std::convert::Infallible> {
    let prefix = settings.prefix.as_str();
    let mut client = connect(settings).await?;
    let network = network_config(&mut client, prefix, me).await?;
    if let Some(lease) = state.lease {
        let alive = call("lease TTL", client.lease_time_to_live(lease, None)).await?.ttl() > 0;
        if !alive {
            tracing::warn!(lease, "this node's etcd lease expired; leasing its subnet again");
            state.lease = None;
        }
    }
    let held = match (state.lease, state.subnet) {
        (Some(lease), Some(subnet)) => Held { subnet, lease },
        _ => {
            let held = acquire(&mut client, prefix, &network, me, settings.lease_ttl, state.subnet).await?;
            state.subnet = Some(held.subnet);
            state.lease = Some(held.lease);
            held
        }
    };
    let (mut keeper, mut kept) = call("lease keep-alive", client.lease_keep_alive(held.lease)).await?;

    let root = format!("{prefix}/");
    let resp = call("list", client.get(root.as_str(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = resp.header().map(|h| h.revision()).context("an etcd answer without a header")?;
    let mut store = Store { config: None, leases: RawLeases::new() };
    for kv in resp.kvs() {
        store.apply(prefix, kv.key(), Some(kv.value()));
    }
    publish(prefix, &store, me, held.subnet, publisher, state, format!("etcd list at revision {revision}"))?;
    *pause = RETRY_FIRST;

    // From the revision listed on: no event missed, none seen twice.
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut watch = call("watch", client.watch(root.as_str(), Some(options))).await?;
    let renew_every = (settings.lease_ttl / 3).max(Duration::from_millis(500));
    let mut renew = tokio::time::interval(renew_every);
    loop {
        tokio::select! {
            _ = renew.tick() => {
                call("lease keep-alive", keeper.keep_alive()).await?;
                let answer = call("lease keep-alive", kept.message()).await?;
                if answer.is_none_or(|a| a.ttl() <= 0) {
                    state.lease = None;
                    bail!("this node's lease on {} expired", held.subnet);
                }
            }
            message = watch.message() => {
                let resp = message.context("etcd watch")?.ok_or_else(|| anyhow!("the etcd watch ended"))?;
                if resp.compact_revision() > 0 {
                    bail!("the watch fell behind etcd's compaction (revision {}); listing again", resp.compact_revision());
                }
                if resp.canceled() {
                    bail!("etcd cancelled the watch: {}", resp.cancel_reason());
                }
                if resp.events().is_empty() {
                    continue;
                }
                let mut causes = Vec::new();
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    let deleted = event.event_type() == EventType::Delete;
                    store.apply(prefix, kv.key(), (!deleted).then(|| kv.value()));
                    let verb = if deleted { "deleted" } else { "written" };
                    causes.push(format!("etcd key {} {verb}", String::from_utf8_lossy(kv.key())));
                }
                publish(prefix, &store, me, held.subnet, publisher, state, summary(&causes))?;
            }
        }
    }
}

impl Store {
    /// One key's new value (`None`: deleted). Keys that are neither the
    /// config nor under `subnets/` (another network's, in flannel's
    /// multi-network layout) are not this source's business.
    fn apply(&mut self, prefix: &str, key: &[u8], value: Option<&[u8]>) {
        let key = String::from_utf8_lossy(key).into_owned();
        if key == format!("{prefix}/config") {
            self.config = value.map(<[u8]>::to_vec);
        } else if key.starts_with(&format!("{prefix}/subnets/")) {
            match value {
                Some(v) => self.leases.insert(key, v.to_vec()),
                None => self.leases.remove(&key),
            };
        }
    }
}

/// Publishes the set the store describes, or returns why there is none
/// (which ends the round: this node's lease gone means leasing again).
fn publish(
    prefix: &str,
    store: &Store,
    me: &Me,
    mine: Ipv4Net,
    publisher: &Publisher,
    state: &mut State,
    cause: String,
) -> Result<()> {
    let config = store.config.as_deref().ok_or_else(|| anyhow!("the network config {prefix}/config was deleted"))?;
    let network = flannel::parse_config(config).map_err(|e| anyhow!("{prefix}/config: {e}"))?;
    network.check_agent(me.mode, me.vni).map_err(|e| anyhow!("{prefix}/config: {e}"))?;
    if !network.fits(mine) {
        bail!("this node's subnet {mine} no longer fits the network config ({}); restart the agent", network.network);
    }
    let (set, skipped) = match flannel::node_set(prefix, &store.leases, &network, me, mine) {
        Ok(found) => found,
        Err(e) => {
            state.lease = None;
            bail!("{e}");
        }
    };
    let now: std::collections::BTreeMap<String, String> = skipped.into_iter().map(|s| (s.key, s.reason)).collect();
    for (key, reason) in &now {
        if state.skipped.get(key) != Some(reason) {
            tracing::warn!(key, reason, "etcd lease skipped");
        }
    }
    state.skipped = now;
    publisher.nodes(set, cause);
    Ok(())
}

fn summary(causes: &[String]) -> String {
    match causes.len() {
        0..=3 => causes.join(", "),
        n => format!("{}, and {} more etcd events", causes[..3].join(", "), n - 3),
    }
}
