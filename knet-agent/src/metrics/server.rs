//! The metrics listener: `/metrics`, and the same `/healthz` and `/readyz`
//! as the API socket, on a TCP address, with the API's bounds.

use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context, Result};
use axum::{
    extract::State,
    http::{header::CONTENT_TYPE, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::net::TcpListener;

use super::Scrape;
use crate::{api, dataplane::PinnedMaps, serving};

/// What a scrape reads: the agent's shared state and the pinned maps.
pub struct Sources {
    pub shared: api::Shared,
    pub maps: PinnedMaps,
}

/// Bound before the agent touches the kernel: an address in use stops the
/// start with nothing changed.
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("cannot listen on metrics_address {address}"))
}

pub async fn serve(listener: TcpListener, sources: Sources, shutdown: impl std::future::Future<Output = ()> + Send) {
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%address, "metrics listening");
    let probes = api::probes().with_state(sources.shared.clone());
    let app = Router::new().route("/metrics", get(metrics)).with_state(Arc::new(sources)).merge(probes);
    serving::serve(listener, app, "metrics", shutdown, || ()).await;
}

async fn metrics(State(sources): State<Arc<Sources>>) -> Response {
    let endpoints = sources.shared.agent.lock().await.endpoint_count();
    let view = sources.shared.cluster.borrow().clone();
    // Map reads are system calls, one per entry for the hash maps: off the
    // runtime's threads.
    let read = tokio::task::spawn_blocking(move || {
        let maps = &sources.maps;
        let scrape = Scrape {
            stats: maps.stats()?,
            peers: maps.peer_counters()?,
            map_entries: maps.entries()?,
            endpoints,
            view,
        };
        sources.shared.metrics.render(&scrape)
    })
    .await;
    match read {
        Ok(Ok(text)) => ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Ok(Err(e)) => serving::error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => serving::error(StatusCode::INTERNAL_SERVER_ERROR, format!("the scrape failed: {e}")),
    }
}
