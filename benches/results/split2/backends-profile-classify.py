import subprocess, sys, re, collections
for b in ["epoll", "uring"]:
    out = subprocess.run(["perf","report","-i",f"/tmp/prof/{b}.data","--no-children","--sort","dso,sym","--stdio","--percent-limit","0"],capture_output=True,text=True).stdout
    cats = collections.Counter()
    top = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not m: continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
        if kind == '.':
            c = "user"
        elif re.match(r"(entry_SYSCALL|do_syscall_64|syscall_exit|__x64_sys|exit_to_user|syscall_return|srso|__fdget|fdget|fput|fget|__fget|entry_|__sys_|x64_sys_call|ksys_|__do_sys|syscall_enter|rseq|__rseq)", sym):
            c = "syscall entry/exit+fd"
        elif re.match(r"(ep_|do_epoll|__ep_|epoll)", sym):
            c = "epoll"
        elif re.match(r"(io_|__io_|tctx_|task_work|__task_work)", sym):
            c = "io_uring"
        elif re.match(r"(sock_recvmsg|sock_sendmsg|__sock_sendmsg|__sys_recvfrom|__sys_sendto|sock_read_iter|sock_write_iter|security_socket|sockfd_lookup|__sys_sendmsg|___sys_sendmsg|import_|move_addr|copy_msghdr|sock_poll|tcp_poll)", sym):
            c = "socket layer (per call)"
        else:
            c = "kernel other (TCP, sched, copies...)"
        cats[c] += pct; top[(c,sym)] += pct
    print(f"== {b}")
    for c, p in cats.most_common(): print(f"  {p:6.1f}%  {c}")
    for (c,s),p in top.most_common(60):
        if c not in ("kernel other (TCP, sched, copies...)","user") and p>0.3: print(f"      {p:5.1f}% {c[:10]} {s}")
