//! The one client of the local API, for the operator CLI and the CNI
//! plugin. Every call is bounded in time: an agent that is down or stuck
//! is an error, never a hang. Errors are typed, so callers act on what
//! happened rather than on its wording.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};

use super::{ErrorBody, CNI_COMMAND_HEADER};

pub struct Client<'a> {
    socket: &'a Path,
    timeout: Duration,
    /// Sent as `CNI_COMMAND_HEADER` when the CNI plugin calls.
    cni_command: Option<&'static str>,
}

/// Why a call did not return the expected answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the knet agent at {} (is it running?): {source}", socket.display())]
    Unreachable { socket: PathBuf, source: std::io::Error },
    #[error("the knet agent at {} did not answer within {timeout:?}", socket.display())]
    Timeout { socket: PathBuf, timeout: Duration },
    /// The agent answered with an error status.
    #[error("agent refused ({status}): {message}")]
    Refused { status: StatusCode, message: String },
    /// The connection broke, or the answer was not what the API sends.
    #[error("talking to the knet agent failed: {0:#}")]
    Protocol(anyhow::Error),
}

impl CallError {
    /// Worth retrying: the agent is busy (connection cap, not ready) or the
    /// connection broke before an answer.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Refused { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
            CallError::Protocol(_) | CallError::Unreachable { .. } => true,
            CallError::Timeout { .. } => false,
        }
    }
}

impl<'a> Client<'a> {
    pub fn new(socket: &'a Path) -> Self {
        Client { socket, timeout: Duration::from_secs(10), cni_command: None }
    }

    /// A client of the CNI plugin running `command` (`ADD`, `DEL`, ...).
    pub fn with_cni_command(self, command: &'static str) -> Self {
        Client { cni_command: Some(command), ..self }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CallError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// `GET path` for its status only (the probes answer text, not JSON).
    pub async fn probe(&self, path: &str) -> Result<(), CallError> {
        self.answer(Method::GET, path, None::<&()>).await.map(drop)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CallError> {
        let bytes = self.answer(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Protocol(anyhow::Error::new(e).context("the agent's answer is not the expected JSON"))
        })
    }

    /// The body of a successful answer.
    async fn answer<B: Serialize>(&self, method: Method, path: &str, body: Option<&B>) -> Result<Bytes, CallError> {
        let (status, bytes) = tokio::time::timeout(self.timeout, self.send(method, path, body))
            .await
            .map_err(|_| CallError::Timeout { socket: self.socket.to_path_buf(), timeout: self.timeout })??;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CallError::Refused { status, message });
        }
        Ok(bytes)
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let stream = tokio::net::UnixStream::connect(self.socket)
            .await
            .map_err(|source| CallError::Unreachable { socket: self.socket.to_path_buf(), source })?;
        let protocol = |e: anyhow::Error| CallError::Protocol(e);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| protocol(e.into()))?;
        tokio::spawn(conn);
        let payload = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| protocol(e.into()))?),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "knet-agent")
            .header("content-type", "application/json");
        if let Some(command) = self.cni_command {
            req = req.header(CNI_COMMAND_HEADER, command);
        }
        let req = req.body(Full::new(payload)).map_err(|e| protocol(e.into()))?;
        let resp = sender.send_request(req).await.map_err(|e| protocol(e.into()))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| protocol(e.into()))?.to_bytes();
        Ok((status, bytes))
    }
}
