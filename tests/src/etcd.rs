//! Debian's real `etcd` (package `etcd-server`), run inside a test's
//! network namespace on an address there, never on the host's network,
//! with its data in a directory of its own; plain HTTP, or TLS with client
//! certificates required (a CA of the test's own). It can be stopped and
//! started again on the same data (an outage); on drop it is stopped and
//! its data removed, also when a test panics.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::{fs::DirBuilderExt, process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{netns::unique_name, wait, Netns};

pub const CLIENT_PORT: u16 = 2379;

/// A running (or stopped) etcd member.
pub struct Etcd {
    child: Option<Child>,
    netns: String,
    address: Ipv4Addr,
    dir: PathBuf,
    tls: Option<TlsFiles>,
}

/// PEM files of a TLS etcd: the CA, etcd's server certificate for its
/// address, and a client certificate the CA signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    fn make(dir: &std::path::Path, address: Ipv4Addr) -> Result<Self> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "knet-test-etcd-ca");
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names.push(rcgen::SanType::IpAddress(address.into()));
        let server = params.signed_by(&server_key, &issuer)?;
        let client_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "knet-agent");
        let client = params.signed_by(&client_key, &issuer)?;
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        std::fs::write(&files.ca, ca.pem())?;
        std::fs::write(&files.server_cert, server.pem())?;
        std::fs::write(&files.server_key, server_key.serialize_pem())?;
        std::fs::write(&files.client_cert, client.pem())?;
        std::fs::write(&files.client_key, client_key.serialize_pem())?;
        Ok(files)
    }

    /// Client options with the CA and, if `with_identity`, the client
    /// certificate.
    pub fn client_options(&self, with_identity: bool) -> Result<etcd_client::ConnectOptions> {
        let mut tls =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&self.ca)?));
        if with_identity {
            let identity =
                etcd_client::Identity::from_pem(std::fs::read(&self.client_cert)?, std::fs::read(&self.client_key)?);
            tls = tls.identity(identity);
        }
        Ok(etcd_client::ConnectOptions::new().with_tls(tls))
    }
}

impl Etcd {
    /// Starts etcd in `ns`, serving clients on `address` (an address of
    /// `ns`), and waits (bounded) until it reports itself healthy.
    pub fn start(ns: &Netns, address: Ipv4Addr) -> Result<Self> {
        Self::start_with(ns, address, false)
    }

    /// Like `start`, serving clients over TLS only to holders of a client
    /// certificate its CA signed (`tls`).
    pub fn start_tls(ns: &Netns, address: Ipv4Addr) -> Result<Self> {
        Self::start_with(ns, address, true)
    }

    fn start_with(ns: &Netns, address: Ipv4Addr, tls: bool) -> Result<Self> {
        which::which("etcd").context("etcd is not installed (Debian's etcd-server; cargo xtask setup installs it)")?;
        let dir = std::env::temp_dir().join(unique_name("etcd"));
        std::fs::create_dir_all(&dir)?;
        // etcd wants its data private (0700), as its own start-up warns.
        std::fs::DirBuilder::new().mode(0o700).create(dir.join("data"))?;
        let tls = if tls { Some(TlsFiles::make(&dir, address)?) } else { None };
        let mut etcd = Etcd { child: None, netns: ns.name().to_string(), address, dir, tls };
        etcd.spawn()?;
        Ok(etcd)
    }

    /// The URL clients use.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{CLIENT_PORT}", self.address)
    }

    /// The TLS files, for a TLS etcd.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log"))?;
        let client_url = self.endpoint();
        // The peer port stays on the namespace's loopback: a single member.
        let peer_url = "http://127.0.0.1:2380";
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.netns)).arg("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", "knet-test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url])
            .args(["--initial-cluster", &format!("knet-test={peer_url}"), "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            // None of the host's ETCD_* settings.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start etcd")?;
        self.child = Some(child);
        let healthy = wait::until("etcd to report itself healthy", Duration::from_secs(30), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Some(Err(status));
            }
            self.healthy().then_some(Ok(()))
        });
        match healthy {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => {
                self.child = None;
                bail!("etcd exited ({status}) while starting:\n{}", self.log_text())
            }
            Err(e) => bail!("{e:#}\n{}", self.log_text()),
        }
    }

    /// `GET /health` answers `"health":"true"`; over TLS (where /health
    /// wants a client certificate too), a status call answers.
    fn healthy(&self) -> bool {
        if self.tls.is_some() {
            return self.with_client(|mut c| async move { Ok(c.status().await?) }).is_ok();
        }
        let address = SocketAddr::from((self.address, CLIENT_PORT));
        crate::netns::run_in(&self.netns, move || -> Option<String> {
            let mut s = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n").ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            Some(text)
        })
        .ok()
        .flatten()
        .is_some_and(|t| t.contains("\"health\":\"true\""))
    }

    /// Stops etcd (SIGTERM, SIGKILL after 10 s); its data stays.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { bail!("etcd is already stopped") };
        let _ = crate::cmd::run("kill", &["-TERM", &child.id().to_string()]);
        let exited =
            wait::until("etcd to exit after SIGTERM", Duration::from_secs(10), || child.try_wait().ok().flatten());
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts etcd again on the same data and address.
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("etcd is running");
        }
        self.spawn()
    }

    /// Runs `work` with a client of this etcd, on a runtime of its own in
    /// a thread inside etcd's namespace (where the address is reachable).
    pub fn with_client<T, F>(&self, work: impl FnOnce(etcd_client::Client) -> F + Send) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
        T: Send,
    {
        let options = self.tls.as_ref().map(|t| t.client_options(true)).transpose()?;
        self.with_options(options, work)
    }

    /// Like `with_client`, with a client built from `options` (a TLS
    /// client without a certificate, say).
    pub fn with_options<T, F>(
        &self,
        options: Option<etcd_client::ConnectOptions>,
        work: impl FnOnce(etcd_client::Client) -> F + Send,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
        T: Send,
    {
        let endpoint = self.endpoint();
        let options = options.map(|o| o.with_timeout(Duration::from_secs(5)));
        crate::netns::run_in(&self.netns, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let client = etcd_client::Client::connect([endpoint], options).await?;
                work(client).await
            })
        })?
    }

    /// Writes `value` at `key`, on an etcd lease of `ttl` if given (as
    /// flanneld attaches its leases).
    pub fn put(&self, key: &str, value: &str, ttl: Option<i64>) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.with_client(move |mut c| async move {
            let options = match ttl {
                Some(ttl) => Some(etcd_client::PutOptions::new().with_lease(c.lease_grant(ttl, None).await?.id())),
                None => None,
            };
            c.put(key, value, options).await?;
            Ok(())
        })
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.with_client(move |mut c| async move {
            c.delete(key, None).await?;
            Ok(())
        })
    }

    /// Every key under `prefix` with its value, in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let prefix = prefix.to_string();
        self.with_client(move |mut c| async move {
            let resp = c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await?;
            Ok(resp
                .kvs()
                .iter()
                .map(|kv| {
                    (String::from_utf8_lossy(kv.key()).into_owned(), String::from_utf8_lossy(kv.value()).into_owned())
                })
                .collect())
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                eprintln!("cleanup: {e:#}");
            }
        }
        if std::thread::panicking() {
            eprintln!("--- etcd log (last 40 lines) ---");
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
