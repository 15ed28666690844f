//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the pool that
//! multishot receives take their buffers from, so a connection holds no
//! receive buffer while it waits for its client.
//!
//! Owns the ring of buffer descriptors and the buffers themselves. A buffer
//! belongs to the kernel while it sits in the ring, and to the worker from
//! the completion that names it until [`BufRing::recycle`] gives it back.
//! Memory is released only after the ring is unregistered (see `Drop`);
//! the owner must have seen every receive complete before dropping it.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

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
}

impl BufRing {
    /// Allocates `entries` (a power of two) buffers of `buf_size` octets,
    /// registers them as buffer group `group` and hands them all to the
    /// kernel.
    pub fn register(ring: &IoUring, group: u16, entries: u16, buf_size: usize) -> io::Result<Self> {
        assert!(entries.is_power_of_two());
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
        };
        // SAFETY: the mapping is page-aligned, `entries` descriptors long and
        // stays mapped until after the ring is unregistered in `Drop`.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(base as u64, entries, group, 0)?;
        }
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The first `len` octets the kernel wrote into buffer `bid`.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.buf_size;
        &self.buffers[start..start + len.min(self.buf_size)]
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        let addr = self.buffers[usize::from(bid) * self.buf_size..].as_ptr() as u64;
        // SAFETY: `index < entries`, inside the mapping; the kernel reads
        // only descriptors between its head and the published tail, and this
        // one is past the published tail until `publish`.
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
