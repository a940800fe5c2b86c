#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the tests and for trying the launcher locally.
#
#   slurm/local_cluster.sh start    # install-free start: needs the Debian packages below, run as root
#   slurm/local_cluster.sh status
#   slurm/local_cluster.sh stop
#
# Packages: apt-get install slurmctld slurmd slurm-client munge libpmix2 libpmix-dev
# There is no systemd here, so the daemons are started directly with PID files. The cluster's files (slurm.conf,
# logs, spool, state) live in $SLURM_LOCAL_DIR (default /tmp/jaxrl_slurm). Slurm commands find the config through
# SLURM_CONF; `start` prints the export line, and links /etc/slurm/slurm.conf to it when that file does not exist,
# so plain `sbatch` works too. `start` on a running cluster does nothing (it is idempotent).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/jaxrl_slurm}
CONF=$DIR/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$CONF

die() { echo "local_cluster: $*" >&2; exit 1; }

running() {  # the PID in file $1 belongs to a live process
  [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_conf() {
  local host cpus mem mpi=none
  host=$(hostname -s)
  cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 ))
  # Without the pmix plugin (and libpmix-dev behind it), MpiDefault=pmix makes every step hang: fall back to none.
  if ls /usr/lib/*/slurm-wlm/mpi_pmix.so /usr/lib/slurm/mpi_pmix.so 2>/dev/null | grep -q .; then mpi=pmix; fi
  mkdir -p "$DIR/spool" "$DIR/state" "$DIR/log"
  cat >"$CONF" <<CONF
# Written by slurm/local_cluster.sh: a single-node test cluster, no accounting, no cgroups.
ClusterName=jaxrl
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# A requeued job may start again after this many seconds (the default, 120, slows the requeue test down).
AuthInfo=cred_expire=10
MpiDefault=$mpi
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmdSpoolDir=$DIR/spool
StateSaveLocation=$DIR/state
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=${SLURM_LOCAL_PORT:-6817}
SlurmdPort=$(( ${SLURM_LOCAL_PORT:-6817} + 1 ))
SchedulerType=sched/backfill
# Fast arrays: schedule as soon as a job arrives instead of batching.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# An oversized job fails at submission instead of pending forever.
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue/scontrol for 10 minutes (there is no sacct without accounting).
MinJobAge=600
KillWait=30
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
  if pgrep -u munge -x munged >/dev/null; then return; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  fi
  runuser -u munge -- /usr/sbin/munged
}

wait_idle() {  # until the node takes jobs, or fail after $1 seconds
  local deadline=$(( SECONDS + $1 )) state=""
  while (( SECONDS < deadline )); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
    case $state in idle|mixed|allocated) return 0 ;; esac
    sleep 0.5
  done
  die "the node did not become idle within $1 s (state '${state:-none}'); see $DIR/log/"
}

start() {
  [[ $(id -u) == 0 ]] || die "run as root (the daemons and munge need it)"
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null ||
    die "Slurm is not installed: apt-get install slurmctld slurmd slurm-client munge libpmix2 libpmix-dev"
  if running "$DIR/slurmctld.pid" && running "$DIR/slurmd.pid"; then
    wait_idle 60
    echo "local cluster already running; export SLURM_CONF=$CONF"
    return
  fi
  write_conf
  start_munge
  running "$DIR/slurmctld.pid" || slurmctld -c
  running "$DIR/slurmd.pid" || slurmd
  if [[ ! -e $ETC_CONF ]]; then mkdir -p /etc/slurm && ln -s "$CONF" "$ETC_CONF"; fi
  wait_idle 60
  echo "local cluster started; export SLURM_CONF=$CONF"
}

stop() {
  local f pid
  for f in slurmd slurmctld; do
    if running "$DIR/$f.pid"; then
      pid=$(cat "$DIR/$f.pid")
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$DIR/$f.pid"
  done
  if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF" ]]; then rm -f "$ETC_CONF"; fi
  echo "local cluster stopped (munged is left running)"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) running "$DIR/slurmctld.pid" && running "$DIR/slurmd.pid" && sinfo && exit 0; echo "not running"; exit 1 ;;
  *) die "usage: $0 start|stop|status" ;;
esac
