#!/usr/bin/env bash
# A one-node SLURM cluster on loopback for tests (Debian, run as root, no systemd needed).
#   bash tests/slurm/cluster.sh up     install if needed, configure, start, wait for the node
#   bash tests/slurm/cluster.sh down   stop the daemons
# slurmctld and slurmd talk over 127.0.0.1 only; munge authenticates over a Unix socket.
# No cgroups and no accounting database: limits are recorded, not enforced, and job status
# comes from squeue (keep finished jobs visible with MinJobAge). Written after
# ../shared/reference/slurm-local.md.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
RUN=/run/slurm
LOGS=/var/log/slurm

say() { echo "[cluster] $*" >&2; }
running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {  # stop NAME PIDFILE
  if running "$2"; then
    local pid; pid=$(cat "$2"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped $1"
  fi
  rm -f "$2"
}

install_packages() {
  for cmd in slurmctld slurmd sbatch munged; do
    command -v "$cmd" >/dev/null || { need=1; break; }
  done
  [[ -z ${need:-} ]] && return 0
  say "installing slurm and munge from Debian"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
  install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  install -d -o munge -g munge -m 0755 /run/munge
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  say "munged did not start"; return 1
}

configure() {  # the node line must match the hardware or slurmctld drains the node
  local hw mem
  hw=$(slurmd -C | head -1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')
  mem=$(slurmd -C | head -1 | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  install -d /etc/slurm
  cat >"$CONF" <<CONFEOF
ClusterName=diffuseflow-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
MinJobAge=600
ReturnToService=2
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
StateSaveLocation=/var/spool/diffuseflow-slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 $hw RealMemory=$((mem - 1024)) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONFEOF
}

up() {
  install_packages
  start_munge
  configure
  install -d -m 0755 "$RUN" /var/spool/slurmd
  install -d -o slurm -g slurm -m 0755 /var/spool/diffuseflow-slurmctld "$LOGS"
  running "$RUN/slurmctld.pid" || /usr/sbin/slurmctld
  running "$RUN/slurmd.pid" || /usr/sbin/slurmd -N localhost
  for _ in $(seq 100); do
    case $(sinfo -h -n localhost -o %t 2>/dev/null || true) in
      idle | mix | alloc) timeout 60 srun -t 1 --mem 64 true && say "up" && return 0 ;;
      drain* | down*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
  done
  say "node did not become idle; see $LOGS"; return 1
}

down() {
  stop slurmd "$RUN/slurmd.pid"
  stop slurmctld "$RUN/slurmctld.pid"
  stop munged /run/munge/munged.pid
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
