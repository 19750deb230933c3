//! Netlink views of this node's network: the links the agent attaches to.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::link::{LinkAttribute, LinkMessage},
    Handle,
};

use crate::mac::MacAddr;

/// A network interface as the data path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink socket in the current network namespace; its
    /// connection task runs on the current tokio runtime.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("cannot open a netlink socket")?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The link named `name`, or `None` if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(Some(msg)) => Ok(link_from(msg)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
            Err(e) => Err(e).with_context(|| format!("netlink lookup of link {name} failed")),
        }
    }

    /// The link with ifindex `index`, or `None` if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let found = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(Some(msg)) => Ok(link_from(msg)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
            Err(e) => Err(e).with_context(|| format!("netlink lookup of link {index} failed")),
        }
    }
}

const fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

fn link_from(msg: LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut mac = None;
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::Address(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr)
            }
            _ => {}
        }
    }
    Some(Link {
        name: name?,
        index: msg.header.index,
        mac: mac?,
    })
}
