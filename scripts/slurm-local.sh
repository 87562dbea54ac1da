#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm executor's tests: `start` installs Debian's slurm-wlm and
# munge when missing, writes a minimal configuration, starts munged, slurmctld and slurmd as background daemons (no
# systemd needed) and waits until the node accepts jobs; `stop` stops them; `status` says whether it is up.
# Idempotent: `start` on a running cluster only checks it. Needs root (apt-get, daemons running as root).
#
#   scripts/slurm-local.sh start|stop|status
#
# Environment: MGAT_SLURM_DIR (state, logs, config; default /tmp/mgat-slurm), MGAT_SLURM_CPUS (CPUs the node
# advertises, default 16: short jobs should not queue behind each other on a 2-core machine),
# MGAT_SLURM_TIMEOUT (seconds to wait for the node, default 60).
set -euo pipefail

DIR=${MGAT_SLURM_DIR:-/tmp/mgat-slurm}
CPUS=${MGAT_SLURM_CPUS:-16}
TIMEOUT=${MGAT_SLURM_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)

die() {
    echo "slurm-local: $*" >&2
    exit 1
}

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and this is not root: install them first"
    echo "slurm-local: installing slurm-wlm and munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null ||
        die "apt-get install slurm-wlm munge failed"
}

write_config() {
    mkdir -p "$DIR"/{state,spool,log} /etc/slurm
    cat >"$CONF" <<EOF
# Written by mgat's scripts/slurm-local.sh: a one-node test cluster.
ClusterName=mgat-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=300
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
NodeName=$NODE CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if pgrep -x munged >/dev/null; then
        return
    fi
    mkdir -p /run/munge /etc/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /run/munge /etc/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock # stale socket of a munged that is gone
    runuser -u munge -- /usr/sbin/munged || die "munged did not start"
}

node_ready() {
    sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

start() {
    install_packages
    if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null && node_ready; then
        echo "slurm-local: already running ($NODE)"
        return
    fi
    write_config
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
    pgrep -x slurmd >/dev/null || slurmd || die "slurmd did not start (see $DIR/log/slurmd.log)"
    local waited=0
    until node_ready; do
        if [ "$waited" -ge "$TIMEOUT" ]; then
            sinfo -N 2>&1 | sed 's/^/  /' >&2 || true
            tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" 2>/dev/null | sed 's/^/  /' >&2 || true
            die "node $NODE did not become ready within ${TIMEOUT}s"
        fi
        # A node that came back from a previous run may be DOWN until told otherwise.
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        sleep 1
        waited=$((waited + 1))
    done
    echo "slurm-local: running ($NODE, $CPUS CPUs, state in $DIR)"
}

stop() {
    for daemon in slurmd slurmctld munged; do
        pkill -x "$daemon" 2>/dev/null || true
    done
    for daemon in slurmd slurmctld munged; do
        for _ in $(seq 1 50); do
            pgrep -x "$daemon" >/dev/null || break
            sleep 0.1
        done
        pgrep -x "$daemon" >/dev/null && die "$daemon did not stop"
    done
    echo "slurm-local: stopped"
}

status() {
    if pgrep -x slurmctld >/dev/null && node_ready; then
        echo "slurm-local: running"
        sinfo
    else
        echo "slurm-local: not running"
        return 1
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 start|stop|status" ;;
esac
