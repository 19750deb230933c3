//! A client of the local API, for the operator CLI and the CNI plugin.
//! Every call is bounded in time: an agent that is down or stuck is an
//! error, never a hang.

use std::{path::Path, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};

use super::ErrorBody;

pub struct Client<'a> {
    socket: &'a Path,
    timeout: Duration,
}

impl<'a> Client<'a> {
    pub fn new(socket: &'a Path) -> Self {
        Client { socket, timeout: Duration::from_secs(10) }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&B>) -> Result<T> {
        let (status, bytes) =
            tokio::time::timeout(self.timeout, self.send(method, path, body)).await.map_err(|_| {
                anyhow!("the knet agent at {} did not answer within {:?}", self.socket.display(), self.timeout)
            })??;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("agent refused ({status}): {msg}");
        }
        serde_json::from_slice(&bytes).context("the agent's answer is not the expected JSON")
    }

    async fn send<B: Serialize>(&self, method: Method, path: &str, body: Option<&B>) -> Result<(StatusCode, Bytes)> {
        let stream = tokio::net::UnixStream::connect(self.socket)
            .await
            .with_context(|| format!("cannot reach the knet agent at {} (is it running?)", self.socket.display()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let payload = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "knet-agent")
            .header("content-type", "application/json")
            .body(Full::new(payload))?;
        let resp = sender.send_request(req).await.context("request to the knet agent failed")?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}
