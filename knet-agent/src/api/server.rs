//! The API's HTTP side: routes, error mapping and the socket.

use std::{
    net::Ipv4Addr,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
    sync::Arc,
};

use anyhow::{bail, Context, Result};
use axum::{
    extract::{rejection::JsonRejection, Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
    Json, Router,
};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{watch, Mutex},
};

use super::{LinkPrograms, NodeView, ProgramId, StatEntry, CNI_COMMAND_HEADER};
use crate::{
    agent::{Agent, AgentError},
    dataplane::Dataplane,
    endpoints::{AddEndpoint, EndpointError},
    metrics::{cni_command_label, Metrics},
    reconciler::ClusterView,
    serving,
};

/// What the handlers share: the endpoint side behind a lock held only for
/// one endpoint operation, the reconciler's view, read without one, and
/// the metrics the API's requests move.
#[derive(Clone)]
pub struct Shared {
    pub agent: Arc<Mutex<Agent>>,
    pub cluster: watch::Receiver<ClusterView>,
    pub metrics: Metrics,
}

impl Shared {
    /// Ready: the first full reconcile done, the source in step (the
    /// reconciler's view says why not), and this node's endpoints served
    /// (its pod CIDR known). `/readyz` of both listeners answers this.
    pub async fn ready(&self) -> Result<(), String> {
        self.cluster.borrow().ready()?;
        if self.agent.lock().await.pod_cidr().is_none() {
            return Err("the endpoints are not served yet".into());
        }
        Ok(())
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        serving::error(self.0, self.1)
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        let status = match &e {
            AgentError::Endpoint(EndpointError::Invalid(_)) => StatusCode::BAD_REQUEST,
            AgentError::Endpoint(EndpointError::Conflict(_)) => StatusCode::CONFLICT,
            AgentError::Endpoint(EndpointError::NotFound(_)) => StatusCode::NOT_FOUND,
            AgentError::NoSuchLink(_) | AgentError::NotAPodLink(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AgentError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            AgentError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        ApiError(status, format!("{e:#}"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        AgentError::Internal(e).into()
    }
}

/// `/healthz` (liveness: the agent answers) and `/readyz`, served on the
/// API socket and on the metrics address alike.
pub(crate) fn probes() -> Router<Shared> {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz))
}

fn router(shared: Shared) -> Router {
    probes()
        .route("/v1/endpoints", get(list_endpoints).post(add_endpoint))
        .route("/v1/endpoints/{ip}", delete(delete_endpoint))
        .route("/v1/datapath", get(datapath))
        .route("/v1/datapath/links/{ifname}", get(link_programs))
        .route("/v1/stats", get(stats))
        .route("/v1/nodes", get(nodes))
        .route("/v1/status", get(status))
        .route("/v1/node", get(node))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such API path".into()) })
        .with_state(shared)
}

async fn add_endpoint(
    State(shared): State<Shared>,
    body: Result<Json<AddEndpoint>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // Keep the rejection's own status: 413 for an oversized body.
    let Json(req) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
        ApiError(status, format!("malformed request: {}", e.body_text()))
    })?;
    let endpoint = shared.agent.lock().await.add_endpoint(&req).await?;
    Ok((StatusCode::CREATED, Json(endpoint)))
}

async fn delete_endpoint(
    State(shared): State<Shared>,
    UrlPath(ip): UrlPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let ip: Ipv4Addr =
        ip.parse().map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{ip:?} is not an IPv4 address")))?;
    let endpoint = shared.agent.lock().await.delete_endpoint(ip)?;
    Ok(Json(endpoint))
}

async fn list_endpoints(State(shared): State<Shared>) -> impl IntoResponse {
    Json(shared.agent.lock().await.endpoints())
}

async fn datapath(State(shared): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(shared.agent.lock().await.datapath_view()?))
}

async fn link_programs(UrlPath(ifname): UrlPath<String>) -> Result<impl IntoResponse, ApiError> {
    let programs =
        Dataplane::tcx_ingress_programs(&ifname).map_err(|e| ApiError(StatusCode::NOT_FOUND, format!("{e:#}")))?;
    Ok(Json(LinkPrograms {
        tcx_ingress: programs.iter().map(|(name, _, _)| name.clone()).collect(),
        tcx_ingress_ids: programs.iter().map(|(_, id, tag)| ProgramId::new(*id, *tag)).collect(),
    }))
}

async fn node(State(shared): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let (node_name, pod_cidr, gso_max_size) = {
        let agent = shared.agent.lock().await;
        (agent.node_name().to_string(), agent.pod_cidr(), agent.pod_gso_max_size())
    };
    let pod_cidr = pod_cidr.ok_or_else(|| {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("node {node_name}'s pod CIDR is not known yet"))
    })?;
    let view = shared.cluster.borrow().clone();
    let programmed = view.underlay.is_some();
    let vtep_mac = match (&view.local, view.mode) {
        (Some(me), crate::config::Mode::Vxlan) if programmed => Some(crate::mac::MacAddr::vtep_for(me.underlay_ip)),
        _ => None,
    };
    Ok(Json(NodeView {
        node_name,
        pod_cidr,
        mode: programmed.then_some(view.mode),
        route_mtu: view.route_mtu,
        vtep_mac,
        gso_max_size,
    }))
}

async fn nodes(State(shared): State<Shared>) -> impl IntoResponse {
    Json(shared.cluster.borrow().clone())
}

async fn status(State(shared): State<Shared>) -> impl IntoResponse {
    Json(shared.cluster.borrow().status())
}

/// 200 once the first full reconcile is done, the source is in step and
/// the endpoints are served; 503 with the reason otherwise.
async fn readyz(State(shared): State<Shared>) -> Response {
    match shared.ready().await {
        Ok(()) => "ok".into_response(),
        Err(why) => serving::error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn stats(State(shared): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let stats = shared.agent.lock().await.stats()?;
    let body: Vec<StatEntry> = stats.into_iter().map(StatEntry::from).collect();
    Ok(Json(body))
}

/// Binds the socket (mode 0600) and serves until `shutdown` resolves.
pub async fn serve(
    shared: Shared,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = bind(socket).await?;
    tracing::info!(socket = %socket.display(), "API listening");
    let app = router(shared.clone()).layer(axum::middleware::from_fn_with_state(shared.metrics, count_cni_requests));
    // Once stopped, new clients find no socket rather than a silent one.
    serving::serve(listener, app, "api", shutdown, || drop(std::fs::remove_file(socket))).await;
    Ok(())
}

/// Counts the requests the CNI plugin makes (it names its CNI command in
/// `CNI_COMMAND_HEADER`) by command and the answer's status class.
async fn count_cni_requests(
    State(metrics): State<Metrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let command = req.headers().get(CNI_COMMAND_HEADER).map(|v| cni_command_label(v.as_bytes()));
    let response = next.run(req).await;
    if let Some(command) = command {
        metrics.cni_request(command, response.status());
    }
    response
}

/// Binds the socket where no one else can reach it before its mode is
/// 0600: inside a fresh 0700 directory, then moved into place. (Bound in
/// place, it would carry the umask's mode until the chmod.)
async fn bind(socket: &Path) -> Result<UnixListener> {
    let dir = socket.parent().context("api_socket names no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    if socket.exists() {
        // A socket someone still answers on belongs to a running agent;
        // one nobody answers on is left over from a crash.
        if UnixStream::connect(socket).await.is_ok() {
            bail!("another agent is already serving on {}", socket.display());
        }
        std::fs::remove_file(socket).with_context(|| format!("cannot remove stale {}", socket.display()))?;
    }
    let private = tempfile::Builder::new()
        .prefix(".knet-agent-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a private directory in {}", dir.display()))?;
    let staged = private.path().join("agent.sock");
    let listener = UnixListener::bind(&staged).with_context(|| format!("cannot bind {}", staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", staged.display()))?;
    std::fs::rename(&staged, socket).with_context(|| format!("cannot move the socket to {}", socket.display()))?;
    Ok(listener)
}
