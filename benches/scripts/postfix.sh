# shellcheck shell=bash
# A private Postfix instance in a throwaway directory, for the benchmarks
# (Postfix's smtpd with TLS, or with milters, as the peer mxgate is measured
# against) and for the tests (tests/support/peers.rs: Postfix's SMTP client
# relaying to mxgate over STARTTLS, Postfix as the next hop mxgate relays to,
# and Postfix's smtpd as the client of the milters tests/milter_peers.rs runs).
# Source it; do not run it. It defines functions only and needs root, as
# Postfix's master does.
#
# An instance lives entirely under DIR: etc/ (its config_directory: main.cf,
# master.cf), queue/, data/, mail/ (postfix_mailboxes) and maillog (postlogd writes there; no syslog
# needed). It listens only where postfix_listen says, on loopback, and shares
# nothing with a system Postfix: start, stop and sendmail all take
# `-c DIR/etc`. Typical use:
#
#   postfix_init "$dir"
#   postfix_listen "$dir" 127.0.0.1:2525
#   postfix_tls_server "$dir" cert.pem key.pem
#   POSTFIX_CPUS=0 postfix_start "$dir"   # taskset list; empty = any core
#   ...
#   postfix_stop "$dir"

# postfix_init DIR: a fresh instance under DIR (created if missing; every
# directory above it must be searchable by the postfix user). With no
# listener it only sends: mail injected with postfix_sendmail goes to the
# relay host (postfix_relay_to) or nowhere.
postfix_init() {
    local dir=$1
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
    # The daemons run as the postfix user and reach data/ by its full path.
    chmod 755 "$dir"
    chown postfix "$dir/data"
    runuser -u postfix -- test -w "$dir/data" || {
        echo "postfix_init: the postfix user cannot reach $dir/data: a parent" \
            "directory is not searchable (mktemp -d makes 0700; chmod 755 it)" >&2
        return 1
    }
    # Our own etc/ and queue/ side by side: postfix-script checks that the
    # config directory holds only root's files, which a queue inside it breaks.
    cat >"$dir/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file_prefixes = $dir
maillog_file = $dir/maillog
myhostname = postfix.test
mydestination =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# A refused delivery is tried again within seconds, not minutes.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
EOF
    # Only the services a relay and a receiver need; chroot off everywhere,
    # as the queue lives outside any prepared jail.
    cat >"$dir/etc/master.cf" <<'EOF'
pickup    unix  n  -  n  60     1  pickup
cleanup   unix  n  -  n  -      0  cleanup
qmgr      unix  n  -  n  300    1  qmgr
tlsmgr    unix  -  -  n  1000?  1  tlsmgr
rewrite   unix  -  -  n  -      -  trivial-rewrite
bounce    unix  -  -  n  -      0  bounce
defer     unix  -  -  n  -      0  bounce
trace     unix  -  -  n  -      0  bounce
verify    unix  -  -  n  -      1  verify
flush     unix  n  -  n  1000?  0  flush
proxymap  unix  -  -  n  -      -  proxymap
smtp      unix  -  -  n  -      -  smtp
relay     unix  -  -  n  -      -  smtp
error     unix  -  -  n  -      -  error
retry     unix  -  -  n  -      -  error
discard   unix  -  -  n  -      -  discard
showq     unix  n  -  n  -      -  showq
anvil     unix  -  -  n  -      1  anvil
scache    unix  -  -  n  -      1  scache
postlog   unix-dgram n  -  n  -  1  postlogd
EOF
}

# postfix_set DIR NAME=VALUE...: main.cf settings.
postfix_set() {
    local dir=$1
    shift
    postconf -c "$dir/etc" -e "$@"
}

# postfix_smtpd DIR ADDR: smtpd on ADDR (a loopback address:port); what it
# accepts goes wherever the instance sends mail (postfix_relay_to,
# postfix_mailboxes).
postfix_smtpd() {
    local dir=$1 addr=$2
    echo "$addr inet n - n - - smtpd" >>"$dir/etc/master.cf"
}

# postfix_listen DIR ADDR: smtpd on ADDR. Mail it accepts is queued durably
# and put on hold, never delivered: the receiving side of a benchmark, like
# mxgate's spool.
postfix_listen() {
    local dir=$1 addr=$2
    postfix_smtpd "$dir" "$addr"
    postfix_set "$dir" \
        "smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject"
}

# postfix_mailboxes DIR < TABLE: a final destination. Each TABLE line is
# `ADDRESS MAILDIR/` (`@domain` for a catch-all, MAILDIR relative to
# DIR/mail); the domains named there are Postfix's own (virtual mailbox
# domains), an unlisted user in them gets 550 5.1.1 at RCPT, and the virtual
# agent delivers into DIR/mail/MAILDIR/new/ as nobody.
postfix_mailboxes() {
    local dir=$1 domains
    cat >"$dir/etc/mailboxes"
    domains=$(sed -n 's/^[^@[:space:]]*@\([^[:space:]]*\).*/\1/p' "$dir/etc/mailboxes" |
        sort -u | paste -sd, -)
    mkdir -p "$dir/mail"
    chown nobody:nogroup "$dir/mail"
    echo "virtual   unix  -  n  n  -      -  virtual" >>"$dir/etc/master.cf"
    postfix_set "$dir" \
        "virtual_mailbox_domains = $domains" \
        "virtual_mailbox_base = $dir/mail" \
        "virtual_mailbox_maps = texthash:$dir/etc/mailboxes" \
        "virtual_uid_maps = static:$(id -u nobody)" \
        "virtual_gid_maps = static:$(id -g nobody)"
}

# postfix_tls_server DIR CERT KEY: smtpd offers STARTTLS with that PEM
# certificate chain and key, and does not require it.
postfix_tls_server() {
    local dir=$1 cert=$2 key=$3
    postfix_set "$dir" \
        "smtpd_tls_cert_file = $cert" \
        "smtpd_tls_key_file = $key" \
        "smtpd_tls_security_level = may" \
        "smtpd_tls_loglevel = 1"
}

# postfix_milters DIR SPEC...: smtpd hands every session to these milters
# (inet:HOST:PORT or unix:PATH, in order), protocol version 6; a milter
# that is down or fails makes smtpd answer 451, as mxgate's default does.
postfix_milters() {
    local dir=$1
    shift
    postfix_set "$dir" \
        "smtpd_milters = $*" \
        "milter_protocol = 6" \
        "milter_default_action = tempfail"
}

# postfix_relay_to DIR ADDR LEVEL: every message goes to ADDR (host:port, no
# MX lookup) with smtp_tls_security_level LEVEL (none, may, encrypt).
postfix_relay_to() {
    local dir=$1 addr=$2 level=$3
    postfix_set "$dir" \
        "relayhost = [${addr%:*}]:${addr##*:}" \
        "smtp_tls_security_level = $level" \
        "smtp_tls_loglevel = 1"
}

# postfix_start DIR: starts the master and waits until it runs (postfix start
# reports its initialisation status). POSTFIX_CPUS, a taskset list, confines
# the master and every daemon it forks to those cores.
postfix_start() {
    local dir=$1
    if [[ -n ${POSTFIX_CPUS:-} ]]; then
        taskset -c "$POSTFIX_CPUS" postfix -c "$dir/etc" start
    else
        postfix -c "$dir/etc" start
    fi
}

# postfix_stop DIR: stops the instance and waits (up to 10 s, then kills)
# until its master is gone. A no-op if it is not running.
postfix_stop() {
    local dir=$1 pid i
    pid=$(tr -d ' ' 2>/dev/null <"$dir/queue/pid/master.pid") || return 0
    postfix -c "$dir/etc" stop 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    postfix -c "$dir/etc" abort 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

# postfix_sendmail DIR SENDER RECIPIENT < MESSAGE: injects a message through
# this instance's sendmail (postdrop, then pickup).
postfix_sendmail() {
    local dir=$1 sender=$2 recipient=$3
    sendmail -C "$dir/etc" -f "$sender" "$recipient"
}
