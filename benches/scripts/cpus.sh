# shellcheck shell=bash
# CPU lists for taskset, shared by the bench scripts. Defines functions
# only, so a script can source it before it settles its own settings.

# last_cpu: the number of the last online core.
last_cpu() { echo $(($(nproc) - 1)); }

# other_cpus: every core but the last, as a taskset list (empty on one core).
other_cpus() {
    local last
    last=$(last_cpu)
    case $last in
    0) echo "" ;;
    1) echo 0 ;;
    *) echo "0-$((last - 1))" ;;
    esac
}

# on_cpus LIST: the command prefix that confines a process to LIST (nothing
# when LIST is empty); unquoted use is deliberate, it is zero or three words.
on_cpus() { if [[ -n $1 ]]; then echo "taskset -c $1"; fi; }

# split_cpus: the servers on the last core and the client on the others,
# unless SERVER_CPUS or CLIENT_CPUS say otherwise (set and empty: no
# confinement). The client takes the other cores only when the servers got
# the default, so neither side runs on the other's core.
split_cpus() {
    local last other=
    last=$(last_cpu)
    [[ ${SERVER_CPUS-$last} != "$last" ]] || other=$(other_cpus)
    SERVER_CPUS=${SERVER_CPUS-$last}
    CLIENT_CPUS=${CLIENT_CPUS-$other}
}
