//! The only `unsafe` of the programs, each block with its reason: packet
//! bytes, skb fields, map value pointers and raw helper calls. Everything
//! above this layer is safe code working on copies of typed headers.

pub(crate) mod helpers;
pub(crate) mod maps;
pub(crate) mod packet;
