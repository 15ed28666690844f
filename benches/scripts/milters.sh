# shellcheck shell=bash
# Private configurations for the real milters, in a throwaway directory:
# clamd + clamav-milter with one signature, and rspamd's milter proxy. For
# benches/scripts/milter.sh (clamav-milter as the milter of the Postfix and
# mxgate runs) and tests/support/milters.rs (the tests' launchers), so one
# place knows how the milters are set up; docs/milters.md shows the same
# settings for production. Source it; do not run it. Defines functions only.
#
# Each function writes files under DIR and starts nothing; the caller starts
# the daemons, in the foreground, and stops them:
#
#   clamav_init "$dir" CLAMD_PORT MILTER_PORT
#   clamd --config-file "$dir/clamd.conf" &
#   clamav-milter --config-file "$dir/clamav-milter.conf" &   # once clamd listens
#
#   rspamd_init "$dir" PROXY_PORT NORMAL_PORT CONTROLLER_PORT
#   rspamd -f -i -u root -g root -c /etc/rspamd/rspamd.conf $(rspamd_vars "$dir") &
#
# Everything listens on 127.0.0.1 only and nothing reaches the network:
# clamd reads only DIR/db (no freshclam), rspamd's DNS points at a closed
# loopback port.

# The EICAR anti-virus test string. In two halves, so that no scanner
# flags this file.
eicar_string() {
    printf '%s%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR' '-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
}

# clamav_init DIR CLAMD_PORT MILTER_PORT: DIR/db holding one body signature
# (Mxgate.Test.EICAR, an .ndb hex signature of the EICAR string), clamd.conf
# (TCP on 127.0.0.1:CLAMD_PORT) and clamav-milter.conf (inet 127.0.0.1:
# MILTER_PORT; rejects infected mail, defers when clamd fails). Logs:
# DIR/clamd.log, DIR/clamav-milter.log.
clamav_init() {
    local dir=$1 clamd_port=$2 milter_port=$3 hex
    mkdir -p "$dir/db"
    hex=$(eicar_string | od -An -v -tx1 | tr -d ' \n')
    echo "Mxgate.Test.EICAR:0:*:$hex" >"$dir/db/mxgate-test.ndb"
    cat >"$dir/clamd.conf" <<EOF
Foreground yes
DatabaseDirectory $dir/db
TCPSocket $clamd_port
TCPAddr 127.0.0.1
LogFile $dir/clamd.log
LogTime yes
PidFile $dir/clamd.pid
TemporaryDirectory $dir
EOF
    cat >"$dir/clamav-milter.conf" <<EOF
Foreground yes
MilterSocket inet:$milter_port@127.0.0.1
ClamdSocket tcp:127.0.0.1:$clamd_port
LogFile $dir/clamav-milter.log
LogInfected Basic
PidFile $dir/clamav-milter.pid
TemporaryDirectory $dir
OnInfected Reject
OnFail Defer
AddHeader Replace
EOF
}

# rspamd_init DIR PROXY_PORT NORMAL_PORT CONTROLLER_PORT: a private local
# configuration (DIR/local, rspamd's LOCAL_CONFDIR) over Debian's stock
# /etc/rspamd: the proxy worker in milter mode, scanning itself, on
# 127.0.0.1:PROXY_PORT; the normal and controller workers moved off their
# stock ports; DNS at a closed loopback port; milter_headers adding
# X-Spamd-Result, X-Rspamd-Server and X-Rspamd-Queue-Id to every message.
# No Redis: the modules that need it turn themselves off. Log: DIR/rspamd.log.
rspamd_init() {
    local dir=$1 proxy=$2 normal=$3 controller=$4
    mkdir -p "$dir/local/local.d" "$dir/local/override.d" "$dir/db" "$dir/run"
    cat >"$dir/local/local.d/worker-proxy.inc" <<EOF
bind_socket = "127.0.0.1:$proxy";
milter = yes;
timeout = 120s;
upstream "local" {
  default = yes;
  self_scan = yes;
}
EOF
    # override.d: these replace the stock localhost:11333 and :11334.
    echo "bind_socket = \"127.0.0.1:$normal\";" >"$dir/local/override.d/worker-normal.inc"
    echo "bind_socket = \"127.0.0.1:$controller\";" >"$dir/local/override.d/worker-controller.inc"
    cat >"$dir/local/local.d/options.inc" <<'EOF'
dns {
  nameserver = ["127.0.0.1:1"];
  timeout = 1s;
  retransmits = 1;
}
EOF
    cat >"$dir/local/local.d/milter_headers.conf" <<'EOF'
use = ["x-spamd-result", "x-rspamd-server", "x-rspamd-queue-id"];
skip_local = false;
skip_authenticated = false;
EOF
}

# rspamd_vars DIR: the --var arguments that point rspamd at DIR.
rspamd_vars() {
    local dir=$1
    echo "--var LOCAL_CONFDIR=$dir/local --var DBDIR=$dir/db --var RUNDIR=$dir/run --var LOGDIR=$dir"
}
