#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/test_slurm.py (CI runs it before the tests).
#
#   sudo bash scripts/start_test_slurm.sh
#
# Installs Debian's slurm-wlm and munge when they are missing, writes /etc/slurm/slurm.conf with
# one node (this host: its CPUs and memory) in a partition `batch`, starts munged, slurmctld and
# slurmd, and waits until the node is idle. Rerunning it is harmless: running daemons are kept.
# Needs root (package install, daemons, /etc). Exits non-zero when Slurm cannot be started; the
# Slurm test then skips and says why.
set -euo pipefail

log() { echo "start_test_slurm: $*" >&2; }

if [[ "$(id -u)" != "0" ]]; then
    log "needs root (installs packages and starts daemons); found uid $(id -u)"
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

HOST="$(hostname -s)"
CONF=/etc/slurm/slurm.conf
# This host as slurmd sees it: CPU layout and memory, so the node registers without a mismatch.
read -r -a NODE_HW <<<"$(slurmd -C | head -n 1 | cut -d' ' -f2- | sed 's/UpTime=.*//')"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat >"${CONF}.new" <<EOF
# Written by scripts/start_test_slurm.sh: a one-node test cluster.
ClusterName=geofm-test
SlurmctldHost=${HOST}
AuthType=auth/munge
# A requeued job waits this long (the job credential's lifetime, default 120 s) to restart.
AuthInfo=cred_expire=10
# root runs the daemons: a throw-away cluster, no slurm-owned spool folders to prepare.
SlurmUser=root
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in containers and sandboxes: track processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# --gpus-per-node is a GRES request: the type must be known even where the node has none.
GresTypes=gpu
ReturnToService=2
# Short waits, so that a test's time limit ends its job quickly.
KillWait=5
MinJobAge=300
# The scheduler looks at pending (requeued) jobs every 2 s instead of every 60 s.
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
NodeName=${HOST} NodeAddr=127.0.0.1 ${NODE_HW[*]} State=UNKNOWN
PartitionName=batch Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s "${CONF}.new" "${CONF}"; then
    mv "${CONF}.new" "${CONF}"
    CHANGED=1
else
    rm "${CONF}.new"
    CHANGED=0
fi

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# -- munge: the key, then the daemon as user munge ----------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge
chmod 0400 /etc/munge/munge.key
if ! running /run/munge/munged.pid; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi

# -- slurmctld and slurmd; a changed slurm.conf restarts them ------------------------------
for daemon in slurmctld slurmd; do
    pidfile="/run/${daemon}.pid"
    if running "${pidfile}" && [[ "${CHANGED}" == "1" ]]; then
        log "slurm.conf changed: stopping ${daemon}"
        kill "$(cat "${pidfile}")"
        for _ in $(seq 50); do running "${pidfile}" || break; sleep 0.2; done
    fi
    if ! running "${pidfile}"; then
        log "starting ${daemon}"
        "/usr/sbin/${daemon}"
    fi
done

# -- wait for the node --------------------------------------------------------------------
for _ in $(seq 60); do
    state="$(sinfo -h -n "${HOST}" -o %t 2>/dev/null || true)"
    if [[ "${state}" == "idle" ]]; then
        log "node ${HOST} idle in partition batch"
        exit 0
    fi
    if [[ "${state}" == down* || "${state}" == drain* ]]; then
        scontrol update NodeName="${HOST}" State=RESUME 2>/dev/null || true
    fi
    sleep 1
done
log "node ${HOST} not idle after 60 s (state: ${state:-unknown}); see /var/log/slurm/*.log"
exit 1
