//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the pool that
//! multishot receives take their buffers from, so a connection holds no
//! receive buffer while it waits for its client.
//!
//! Owns the ring of buffer descriptors and the buffers themselves. Where
//! the kernel has it (6.12), buffers are consumed incrementally
//! (`IOU_PBUF_RING_INC`): receive after receive lands right behind the
//! previous one in the same buffer, so the octets just received are in a
//! few hot cache lines instead of at the start of a different buffer each
//! time, cycling through the whole pool (twice the copy cost in the
//! profile). A buffer belongs to the kernel while it sits in the ring; the
//! octets a completion names are the worker's to take at once (the
//! kernel only writes further on); the buffer comes back to the worker
//! with its last completion (no `BUF_MORE` flag) and is given back to the
//! kernel by [`BufRing::recycle`] once its octets were taken.
//! Memory is released only after the ring is unregistered (see `Drop`);
//! the owner must have seen every receive complete before dropping it.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, IoUring};

/// `IOU_PBUF_RING_INC`: the kernel consumes each buffer a receive at a time.
const INCREMENTAL: u16 = 2;

pub struct BufRing {
    /// Page-aligned descriptor ring shared with the kernel (`entries` long).
    descriptors: *mut BufRingEntry,
    descriptors_len: usize,
    /// The buffers, `entries × buf_size` octets, one contiguous allocation.
    buffers: Box<[u8]>,
    buf_size: usize,
    entries: u16,
    /// Our copy of the tail: where the next recycled buffer goes.
    tail: u16,
    group: u16,
    /// Octets of each buffer already delivered (incremental consumption;
    /// always 0 otherwise, as each completion then uses up its buffer).
    filled: Box<[u32]>,
    incremental: bool,
}

impl BufRing {
    /// Allocates buffers of `buf_size` octets, registers them as buffer
    /// group `group` and hands them all to the kernel: `entries[0]` of them
    /// consumed incrementally where the kernel can, else `entries[1]`
    /// (powers of two).
    pub fn register(
        ring: &IoUring,
        group: u16,
        entries: [u16; 2],
        buf_size: usize,
    ) -> io::Result<Self> {
        match Self::register_with(ring, group, entries[0], buf_size, true) {
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                Self::register_with(ring, group, entries[1], buf_size, false)
            }
            other => other,
        }
    }

    /// Whether the kernel consumes the buffers incrementally.
    pub fn is_incremental(&self) -> bool {
        self.incremental
    }

    fn register_with(
        ring: &IoUring,
        group: u16,
        entries: u16,
        buf_size: usize,
        incremental: bool,
    ) -> io::Result<Self> {
        assert!(entries.is_power_of_two());
        assert!(u32::try_from(buf_size).is_ok());
        let descriptors_len = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping, owned by this struct until
        // `Drop` unmaps it; no other pointer to it exists yet.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                descriptors_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut this = BufRing {
            descriptors: base.cast(),
            descriptors_len,
            buffers: vec![0u8; usize::from(entries) * buf_size].into_boxed_slice(),
            buf_size,
            entries,
            tail: 0,
            group,
            filled: vec![0; usize::from(entries)].into_boxed_slice(),
            incremental,
        };
        let flags = if incremental { INCREMENTAL } else { 0 };
        // SAFETY: the mapping is page-aligned, `entries` descriptors long and
        // stays mapped until after the ring is unregistered in `Drop` (on
        // failure here, `this` unmaps it, never registered).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(base as u64, entries, group, flags)?;
        }
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The `len` octets a receive completion delivered into buffer `bid`
    /// (empty for an unknown buffer).
    pub fn octets(&self, bid: u16, len: usize) -> &[u8] {
        let Some(&filled) = self.filled.get(usize::from(bid)) else {
            return &[];
        };
        let from = filled as usize;
        let to = (from + len).min(self.buf_size);
        let start = usize::from(bid) * self.buf_size;
        &self.buffers[start + from..start + to]
    }

    /// The octets of a receive completion (`flags`) into buffer `bid` were
    /// taken: gives the buffer back to the kernel if this completion used
    /// it up.
    pub fn recycle(&mut self, bid: u16, len: usize, flags: u32) {
        let Some(filled) = self.filled.get_mut(usize::from(bid)) else {
            return;
        };
        if cqueue::buffer_more(flags) {
            *filled = (*filled as usize + len).min(self.buf_size) as u32;
        } else {
            *filled = 0;
            self.push(bid);
            self.publish();
        }
    }

    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        let addr = self.buffers[usize::from(bid) * self.buf_size..].as_ptr() as u64;
        // SAFETY: `index < entries`, inside the mapping; the kernel reads
        // only descriptors between its head and the published tail, and this
        // one is past the published tail until `publish`.
        // (Incremental consumption: the kernel also advances the descriptor
        // at its head, never one past the published tail.)
        let entry = unsafe { &mut *self.descriptors.add(index) };
        entry.set_addr(addr);
        entry.set_len(u32::try_from(self.buf_size).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays descriptor 0's reserved field, in
        // our mapping; the kernel only reads it, so an atomic store with
        // Release makes the descriptors written before it visible first.
        unsafe {
            let tail = BufRingEntry::tail(self.descriptors) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the group; after this the kernel never touches the
    /// buffers again and `Drop` may free them.
    pub fn unregister(&self, ring: &IoUring) -> io::Result<()> {
        ring.submitter().unregister_buf_ring(self.group)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: dropped only after `unregister`, once every receive has
        // completed, or before any receive was submitted (a worker failing
        // to start); a worker that cannot vouch for that leaks the pool.
        unsafe {
            libc::munmap(self.descriptors.cast(), self.descriptors_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;
    use io_uring::types::Fd;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// Receives what `chunks` write, one at a time, through a multishot
    /// receive on a pool of two 8-octet buffers; returns every delivery
    /// with the buffer it came from.
    fn receive_through_pool(incremental: bool, chunks: &[&[u8]]) -> Option<Vec<(u16, Vec<u8>)>> {
        if super::super::ring::probe().is_err() {
            eprintln!("skipped: io_uring unavailable here");
            return None;
        }
        let ring = IoUring::new(8).unwrap();
        let Ok(mut pool) = BufRing::register_with(&ring, 0, 2, 8, incremental) else {
            eprintln!("skipped: this kernel cannot register the pool (incremental: {incremental})");
            return None;
        };
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let recv = opcode::RecvMulti::new(Fd(rx.as_raw_fd()), 0).build();
        // SAFETY: the receive takes its buffers from `pool`, which is
        // unregistered (no receive can take one any more) and the ring
        // dropped before the pool.
        unsafe { ring.submission_shared().push(&recv).unwrap() };
        let mut got = Vec::new();
        for chunk in chunks {
            tx.write_all(chunk).unwrap();
            ring.submit_and_wait(1).unwrap();
            // SAFETY: single-threaded; nothing else reads this queue.
            for cqe in unsafe { ring.completion_shared() } {
                let bid = cqueue::buffer_select(cqe.flags()).unwrap();
                let len = usize::try_from(cqe.result()).unwrap();
                got.push((bid, pool.octets(bid, len).to_vec()));
                pool.recycle(bid, len, cqe.flags());
            }
        }
        pool.unregister(&ring).unwrap();
        drop(ring);
        Some(got)
    }

    #[test]
    fn incremental_receives_fill_one_buffer_then_the_next() {
        let Some(got) = receive_through_pool(true, &[b"hello", b"abc", b"12345678"]) else {
            return;
        };
        let Some(first) = got.first().map(|g| g.0) else {
            panic!("nothing received")
        };
        let octets: Vec<u8> = got.iter().flat_map(|g| g.1.clone()).collect();
        assert_eq!(octets, b"helloabc12345678");
        assert_eq!(got[0].1, b"hello");
        assert_eq!(
            got[1],
            (first, b"abc".to_vec()),
            "right behind, same buffer"
        );
        assert_eq!(got[2], (1 - first, b"12345678".to_vec()));
    }

    #[test]
    fn whole_buffer_receives_use_a_buffer_each() {
        let Some(got) = receive_through_pool(false, &[b"hello", b"abc", b"xyz"]) else {
            return;
        };
        let bids: Vec<u16> = got.iter().map(|g| g.0).collect();
        assert_eq!(bids, [0, 1, 0], "recycled after each completion");
        let octets: Vec<u8> = got.iter().flat_map(|g| g.1.clone()).collect();
        assert_eq!(octets, b"helloabcxyz");
    }
}
