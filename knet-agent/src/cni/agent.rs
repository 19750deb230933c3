//! The plugin's side of the agent's local API: every call bounded, the
//! agent being down or busy a "try again later" (11), a full node its own
//! code, any other refusal knet's own code.

use std::{future::Future, net::Ipv4Addr, path::Path, time::Duration};

use hyper::StatusCode;

use crate::{
    api::{
        client::{CallError, Client},
        NodeView,
    },
    endpoints::{AddEndpoint, Endpoint},
    mac::MacAddr,
};

use super::{
    env::Command,
    spec::{code, CniError},
};

/// How long the reachability probe before any side effect may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn classify(socket: &Path, e: CallError) -> CniError {
    match e {
        CallError::Refused { status, message } if status == StatusCode::INSUFFICIENT_STORAGE => {
            CniError::new(code::NODE_FULL, format!("the knet agent has no room for another pod: {message}"))
        }
        CallError::Refused { status, message } if status != StatusCode::SERVICE_UNAVAILABLE => {
            CniError::new(code::AGENT_REFUSED, format!("the knet agent refused ({status}): {message}"))
        }
        e => CniError::new(
            code::TRY_AGAIN_LATER,
            format!("the knet agent at {} is not reachable or busy (is it running?)", socket.display()),
        )
        .with_details(e.to_string()),
    }
}

/// Runs `call` until it succeeds, fails for good, or `limit` is spent:
/// an agent at its connection cap or restarting answers again shortly.
async fn bounded<T, F: Future<Output = Result<T, CallError>>>(
    socket: &Path,
    limit: Duration,
    mut call: impl FnMut() -> F,
) -> Result<T, CniError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let outcome = match tokio::time::timeout(left, call()).await {
            Ok(r) => r,
            Err(_) => {
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("the knet agent at {} did not answer within {limit:?}", socket.display()),
                ))
            }
        };
        match outcome {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(800));
            }
            Err(e) => return Err(classify(socket, e)),
        }
    }
}

/// The agent as one CNI command talks to it: every call names the command
/// (`CNI_COMMAND_HEADER`), so the agent counts the plugin's requests by it.
pub struct Agent<'a> {
    socket: &'a Path,
    client: Client<'a>,
}

impl<'a> Agent<'a> {
    pub fn new(socket: &'a Path, command: Command) -> Self {
        Agent { socket, client: Client::new(socket).with_cni_command(command.name()) }
    }

    /// This node as the agent sees it (pod CIDR, mode, route MTU); ADD's
    /// probe that the agent answers at all, before any side effect.
    pub async fn node(&self) -> Result<NodeView, CniError> {
        bounded(self.socket, PROBE_TIMEOUT, || self.client.get("/v1/node")).await
    }

    /// The endpoints the agent holds.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, CniError> {
        bounded(self.socket, PROBE_TIMEOUT, || self.client.get("/v1/endpoints")).await
    }

    pub async fn register(&self, ip: Ipv4Addr, host_veth: &str, pod_mac: MacAddr) -> Result<Endpoint, CniError> {
        let req = AddEndpoint { ip: ip.to_string(), host_veth: host_veth.to_string(), pod_mac: pod_mac.to_string() };
        bounded(self.socket, Duration::from_secs(15), || self.client.post("/v1/endpoints", &req)).await
    }

    /// Deletes the endpoint `ip`; one the agent does not know is fine.
    pub async fn unregister(&self, ip: Ipv4Addr) -> Result<(), CniError> {
        let path = format!("/v1/endpoints/{ip}");
        bounded(self.socket, Duration::from_secs(15), || async {
            match self.client.delete::<Endpoint>(&path).await {
                Err(CallError::Refused { status: StatusCode::NOT_FOUND, .. }) => Ok(()),
                other => other.map(drop),
            }
        })
        .await
    }
}
