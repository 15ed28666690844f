//! Process limits the runtime meets while it runs: an accept that fails for
//! want of descriptors. (The open-file limit itself is read and raised by
//! [`crate::tuning`].)

/// Whether an accept failed for want of descriptors or kernel memory
/// (`errno` as the kernel returned it): the caller pauses accepting rather
/// than retrying in a busy loop.
pub fn is_out_of_descriptors(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}
