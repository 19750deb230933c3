//! The plugin's side of the agent's local API: every call bounded, the
//! agent being down a "try again later" (11), a refusal knet's own code.

use std::{future::Future, net::Ipv4Addr, path::Path, time::Duration};

use crate::{
    api::{client::Client, NodeView},
    endpoints::{AddEndpoint, Endpoint},
    mac::MacAddr,
};

use super::spec::{code, CniError};

/// How long the reachability probe before any side effect may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The client's own errors are text; a refusal is the one it words as
/// "agent refused" (see `api::client`).
fn classify(socket: &Path, e: anyhow::Error) -> CniError {
    let text = format!("{e:#}");
    if text.contains("agent refused") {
        CniError::new(code::AGENT_REFUSED, format!("the knet agent refused: {text}"))
    } else {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("the knet agent at {} is not reachable (is it running?)", socket.display()),
        )
        .with_details(text)
    }
}

async fn bounded<T>(
    socket: &Path,
    limit: Duration,
    call: impl Future<Output = anyhow::Result<T>>,
) -> Result<T, CniError> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| classify(socket, e)),
        Err(_) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("the knet agent at {} did not answer within {limit:?}", socket.display()),
        )),
    }
}

/// This node as the agent sees it (pod CIDR, mode, route MTU); ADD's
/// probe that the agent answers at all, before any side effect.
pub async fn node(socket: &Path) -> Result<NodeView, CniError> {
    let client = Client::new(socket);
    bounded(socket, PROBE_TIMEOUT, client.get("/v1/node")).await
}

/// The endpoints the agent holds.
pub async fn endpoints(socket: &Path) -> Result<Vec<Endpoint>, CniError> {
    let client = Client::new(socket);
    bounded(socket, PROBE_TIMEOUT, client.get("/v1/endpoints")).await
}

pub async fn register(socket: &Path, ip: Ipv4Addr, host_veth: &str, pod_mac: MacAddr) -> Result<Endpoint, CniError> {
    let client = Client::new(socket);
    let req = AddEndpoint { ip: ip.to_string(), host_veth: host_veth.to_string(), pod_mac: pod_mac.to_string() };
    bounded(socket, Duration::from_secs(15), client.post("/v1/endpoints", &req)).await
}

/// Deletes the endpoint `ip`; one the agent does not know is fine.
pub async fn unregister(socket: &Path, ip: Ipv4Addr) -> Result<(), CniError> {
    let client = Client::new(socket);
    match bounded(socket, Duration::from_secs(15), client.delete::<Endpoint>(&format!("/v1/endpoints/{ip}"))).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == code::AGENT_REFUSED && e.msg.contains("404") => Ok(()),
        Err(e) => Err(e),
    }
}
