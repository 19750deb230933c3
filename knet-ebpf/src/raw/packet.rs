//! Packet bytes and skb fields: bounds-checked copies in and out, and the
//! helpers that change the packet's size.

use core::mem::size_of;

use aya_ebpf::{helpers::generated::bpf_skb_load_bytes, programs::TcContext};

/// A copy of the `T` at `offset` into the packet. If the bytes exist but
/// are not in the linear area yet, they are pulled in first; `None` if the
/// packet is shorter.
#[inline(always)]
pub(crate) fn load<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    if let Some(v) = load_linear(ctx, offset) {
        return Some(v);
    }
    let want = offset + size_of::<T>();
    if (ctx.len() as usize) < want || ctx.pull_data(want as u32).is_err() {
        return None;
    }
    load_linear(ctx, offset)
}

#[inline(always)]
fn load_linear<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: all of the `T` lies between data and data_end, checked just
    // above; `read_unaligned` assumes no alignment of packet data.
    Some(unsafe { ((start + offset) as *const T).read_unaligned() })
}

/// Writes `value` at `offset`; `Err` if the packet's linear area is
/// shorter (callers loaded these bytes before, so it is not).
#[inline(always)]
pub(crate) fn store<T: Copy>(ctx: &TcContext, offset: usize, value: T) -> Result<(), ()> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    // SAFETY: as in `load_linear`; TC programs may write packet data, and
    // no pointer into the packet outlives this call.
    unsafe { ((start + offset) as *mut T).write_unaligned(value) };
    Ok(())
}

/// Copies `N` bytes from `offset` into `dst` (map memory, say) with
/// `bpf_skb_load_bytes`, also from beyond the linear area; `Err` if the
/// packet is shorter.
#[inline(always)]
pub(crate) fn load_into<const N: usize>(ctx: &TcContext, offset: usize, dst: &mut [u8; N]) -> Result<(), ()> {
    // SAFETY: `dst` is N writable bytes for the length of the call.
    let ret = unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), offset as u32, dst.as_mut_ptr().cast(), N as u32) };
    if ret == 0 {
        Ok(())
    } else {
        Err(())
    }
}

/// Writes the `T` that `value` points at (map memory, say) at `offset`
/// with `bpf_skb_store_bytes`, without a copy on the stack.
#[inline(always)]
pub(crate) fn store_from<T>(ctx: &TcContext, offset: usize, value: &T) -> Result<(), ()> {
    ctx.store(offset, value, 0).map_err(drop)
}

/// The packet's length in bytes (all of it, not only the linear area).
#[inline(always)]
pub(crate) fn len(ctx: &TcContext) -> u32 {
    ctx.len()
}

/// Segment size of a GSO super-packet; 0 for an ordinary packet.
#[inline(always)]
pub(crate) fn gso_size(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    unsafe { (*ctx.skb.skb).gso_size }
}

/// The ifindex of the device the packet is on.
#[inline(always)]
pub(crate) fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: as in `gso_size`.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Grows (`diff` > 0) or shrinks the room right after the Ethernet header.
#[inline(always)]
pub(crate) fn adjust_room(ctx: &TcContext, diff: i32, mode: u32, flags: u64) -> Result<(), ()> {
    ctx.adjust_room(diff, mode, flags).map(drop).map_err(drop)
}

/// Leaves where a redirect goes in the skb's control block (`cb[0]` the
/// target ifindex, `cb[1]` the next hop), the scratch area TC programs
/// own: the packet tests read it back from the context.
#[inline(always)]
pub(crate) fn note_redirect(ctx: &TcContext, ifindex: u32, next_hop: u32) {
    // SAFETY: `skb` is the context pointer the kernel passed to the
    // program; TC programs may write `cb`.
    unsafe {
        (*ctx.skb.skb).cb[0] = ifindex;
        (*ctx.skb.skb).cb[1] = next_hop;
    }
}
