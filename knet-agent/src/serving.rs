//! HTTP/1 serving with bounds, for each of the agent's listeners (the
//! local API's Unix socket, the metrics' TCP address): at most
//! `MAX_CONNECTIONS` at once (more are answered 503 without being read),
//! headers within `HEADER_TIMEOUT`, a request answered within
//! `REQUEST_TIMEOUT` (else 408), bodies above `MAX_BODY` refused (413).
//! Idle or trickling clients cannot starve the ones that matter.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    extract::DefaultBodyLimit,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json, Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::api::ErrorBody;

/// At most this many connections are served at once; more are answered
/// 503 at once (the plugin retries), so a flood never queues the plugin
/// behind it nor grows the agent's memory.
pub const MAX_CONNECTIONS: usize = 256;
/// A client has this long to send a request's headers, and a request this
/// long to be read and answered: an idle or trickling client cannot hold a
/// connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Request bodies are small JSON objects; larger is 413.
pub const MAX_BODY: usize = 64 * 1024;

/// A bound socket that hands out connections.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_stream(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept_stream(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept_stream(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then calls
/// `stopped` (no new connection is taken from then on) and lets the
/// requests in flight finish, bounded. `what` names the listener in logs.
pub async fn serve<L: Listener>(
    listener: L,
    app: Router,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send,
    stopped: impl FnOnce(),
) {
    let app = limited(app);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept_stream() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "cannot accept a connection");
                    continue;
                }
            },
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(serve_connection(stream, app.clone(), slot, what));
            }
            Err(_) => {
                tokio::spawn(refuse_busy(stream));
            }
        }
    }
    drop(listener);
    stopped();
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, slots.acquire_many(MAX_CONNECTIONS as u32)).await;
}

/// Body size and total request time limits around every route.
fn limited(router: Router) -> Router {
    router.layer(DefaultBodyLimit::max(MAX_BODY)).layer(axum::middleware::from_fn(
        |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
                Ok(response) => response,
                Err(_) => {
                    error(StatusCode::REQUEST_TIMEOUT, format!("the request took longer than {REQUEST_TIMEOUT:?}"))
                }
            }
        },
    ))
}

/// The agent's error answer: `{"error": "..."}` with `status`.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    app: Router,
    _slot: OwnedSemaphorePermit,
    what: &'static str,
) {
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    if let Err(e) = served.await {
        tracing::debug!(error = %e, listener = what, "connection ended with an error");
    }
}

/// Answers 503 without reading the request, then closes.
async fn refuse_busy<S: AsyncWrite + Unpin>(mut stream: S) {
    let body = serde_json::to_string(&ErrorBody {
        error: format!("the agent is serving {MAX_CONNECTIONS} connections; try again"),
    })
    .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(HEADER_TIMEOUT, stream.write_all(response.as_bytes())).await;
}
