//! SKELETON: runtime (epoll via mio).
