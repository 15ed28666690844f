//! Creating rings and asking the kernel what it offers.
//!
//! Owns the set-up flags (single issuer with deferred task work where the
//! kernel has them, cooperative task work otherwise) and the start-up probe
//! that decides whether this backend can run at all: io_uring may be
//! missing (old kernel, ENOSYS), disabled (`kernel.io_uring_disabled`,
//! EPERM) or filtered by seccomp.

use std::io;

use io_uring::{opcode, IoUring, Probe};

/// Creates a ring of `entries` submission slots for the calling thread,
/// with the best task-work mode the kernel accepts; returns it and the
/// mode's name. Must be called on the thread that submits (single issuer).
pub fn build(entries: u32) -> io::Result<(IoUring, &'static str)> {
    let cq = entries * 4;
    if let Ok(ring) = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq)
        .build(entries)
    {
        return Ok((ring, "single-issuer+defer-taskrun"));
    }
    if let Ok(ring) = IoUring::builder()
        .setup_coop_taskrun()
        .setup_cqsize(cq)
        .build(entries)
    {
        return Ok((ring, "coop-taskrun"));
    }
    let ring = IoUring::builder().setup_cqsize(cq).build(entries)?;
    Ok((ring, "plain"))
}

/// The operations the worker submits. Send-zc is not used; it stands for
/// the 6.0 kernels that brought multishot receive with provided buffers.
const NEEDED: [(u8, &str); 8] = [
    (opcode::AcceptMulti::CODE, "accept"),
    (opcode::RecvMulti::CODE, "recv"),
    (opcode::Send::CODE, "send"),
    (opcode::AsyncCancel2::CODE, "async-cancel"),
    (opcode::Read::CODE, "read"),
    (opcode::Close::CODE, "close"),
    (opcode::PollAdd::CODE, "poll"),
    (opcode::SendZc::CODE, "send-zc (kernel 6.0)"),
];

/// Checks that io_uring works here with every operation the backend needs;
/// the error is one line fit for the log or the exit message.
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|err| unavailable_reason(&err))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|err| format!("io_uring probe failed: {err}"))?;
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "io_uring lacks operations: {} (kernel too old)",
            missing.join(", ")
        ))
    }
}

fn unavailable_reason(err: &io::Error) -> String {
    let why = match err.raw_os_error() {
        Some(libc::ENOSYS) => "not in this kernel (or blocked by seccomp)",
        Some(libc::EPERM) => "not permitted (kernel.io_uring_disabled, or seccomp)",
        _ => "set-up failed",
    };
    format!("io_uring unavailable: {why}: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_and_missing_are_named() {
        let eperm = unavailable_reason(&io::Error::from_raw_os_error(libc::EPERM));
        assert!(eperm.contains("io_uring_disabled"), "{eperm}");
        let enosys = unavailable_reason(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(enosys.contains("not in this kernel"), "{enosys}");
        assert!(!eperm.contains('\n') && !enosys.contains('\n'));
    }

    #[test]
    fn a_ring_builds_where_the_probe_passes() {
        if probe().is_ok() {
            let (ring, mode) = build(64).expect("ring");
            let single = mode == "single-issuer+defer-taskrun";
            assert_eq!(ring.params().is_setup_single_issuer(), single, "{mode}");
        }
    }
}
