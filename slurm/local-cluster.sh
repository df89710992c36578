#!/usr/bin/env bash
# A real one-host Slurm cluster for the test suite (Debian's slurm-wlm, as root).
#   bash slurm/local-cluster.sh start|stop|status
# Two node names (node1, node2) run as two slurmd on 127.0.0.1, each on its own port,
# so multi-node jobs (srun -N2) work on one machine.  No accounting database.
set -euo pipefail

STATE=${CAUSEWAY_SLURM_HOME:-/tmp/causeway-slurm}
CONF=$STATE/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf        # Debian clients read this when SLURM_CONF is unset
NODES=(node1 node2)
CTLD_PORT=${CAUSEWAY_SLURM_PORT:-6817} # slurmd ports follow: 6818, 6819, ...
MUNGE_PID=/run/munge/munged.pid        # munged is strict about its dirs: keep Debian's
MARK="# written by causeway slurm/local-cluster.sh"

log() { echo "local-cluster: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# pid file -> running?  (checks the name too: a stale file may name someone else's pid)
alive() { [[ -f $1 ]] && grep -qE '^(slurm|munge)' "/proc/$(cat "$1")/comm" 2>/dev/null; }
node_pid() { echo "$STATE/run/slurmd-$1.pid"; }

install_packages() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
  log "installing slurm-wlm and munge (apt)"
  local apt_log=$STATE/log/apt.log
  export DEBIAN_FRONTEND=noninteractive
  # a fresh machine may have no package lists yet: update only if the first try fails
  { apt-get install -y -qq --no-install-recommends slurm-wlm munge ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; }
  } >"$apt_log" 2>&1 || die "apt-get failed: $(tail -5 "$apt_log")"
}

start_munge() {
  if [[ ! -s /etc/munge/munge.key ]]; then   # Debian's postinst usually made one
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  alive "$MUNGE_PID" && return 0
  # munged refuses group/world-writable dirs and a key not owned by its user,
  # so run it as 'munge' (no systemd here to do that for us)
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  runuser -u munge -- munged || die "munged failed: $(tail -5 /var/log/munge/munged.log)"
  touch "$STATE/run/munged.ours"           # so 'stop' only stops a munged we started
  munge -n | unmunge >/dev/null || die "munge round trip failed"
}

write_conf() {
  local host i port
  host=$(hostname -s)
  {
    echo "$MARK"
    cat <<EOF
ClusterName=causeway
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s); a short one keeps requeue tests fast
AuthInfo=cred_expire=${CAUSEWAY_SLURM_CRED_EXPIRE:-5}
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in this VM: linuxproc tracks a step's whole process tree by parent pid,
# so signals reach grandchildren even in a new session (torchrun workers)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# re-run the schedulers every second: requeued jobs start once eligible, not 30-60 s later
SchedulerParameters=bf_interval=1,sched_interval=1
# hand out single cores: two 1-core jobs may share one node (even node1 twice)
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
# finished jobs stay visible to 'scontrol show job' for 10 minutes
MinJobAge=600
InactiveLimit=0
MailProg=/bin/true
Waittime=0
EOF
    for i in "${!NODES[@]}"; do
      port=$((CTLD_PORT + 1 + i))
      echo "NodeName=${NODES[$i]} NodeHostname=$host NodeAddr=127.0.0.1 Port=$port CPUs=2 RealMemory=4000 State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
  } >"$CONF.new"
}

wait_idle() {
  local t=0 states
  while ((t < 60)); do
    states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)
    if [[ -n $states ]] && ! grep -qv ' idle$\| mix$\| alloc$' <<<"$states"; then
      echo "$states" >&2; return 0
    fi
    # a node left down/drained by an earlier run: put it back
    if ((t == 10)); then scontrol update NodeName=ALL State=RESUME 2>/dev/null || true; fi
    sleep 1; t=$((t + 1))
  done
  log "nodes not idle after 60 s:"; echo "$states" >&2
  for f in "$STATE"/log/*.log; do echo "--- $f" >&2; tail -15 "$f" >&2; done
  exit 1
}

start() {
  mkdir -p "$STATE"/{ctld,run,log} "${NODES[@]/#/$STATE/spool/}"
  install_packages
  start_munge
  write_conf
  if ! cmp -s "$CONF.new" "$CONF"; then   # config changed: daemons must reread it
    [[ -f $CONF ]] && stop_daemons
    mv "$CONF.new" "$CONF"
  else
    rm -f "$CONF.new"
  fi
  # clients without SLURM_CONF read Debian's default path; never clobber a foreign one
  if [[ ! -f $ETC_CONF ]] || grep -qF "$MARK" "$ETC_CONF"; then
    install -D -m 0644 "$CONF" "$ETC_CONF"
  else
    log "warning: $ETC_CONF is not ours; left alone (use SLURM_CONF)"
  fi
  export SLURM_CONF=$CONF
  alive "$STATE/run/slurmctld.pid" || slurmctld -f "$CONF" -i ||
    die "slurmctld failed: $(tail -15 "$STATE/log/slurmctld.log")"
  local n
  for n in "${NODES[@]}"; do
    alive "$(node_pid "$n")" || slurmd -f "$CONF" -N "$n" ||
      die "slurmd $n failed: $(tail -15 "$STATE/log/slurmd-$n.log")"
  done
  wait_idle
  echo "export SLURM_CONF=$CONF"
}

stop_pids() {   # TERM all at once (each takes ~2 s), KILL what is left after 10 s
  local f pids=() p i
  for f in "$@"; do alive "$f" && pids+=("$(cat "$f")"); rm -f "$f"; done
  ((${#pids[@]})) || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for i in $(seq 50); do
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; p=; done
    [[ -z ${p:-} ]] && return 0; sleep 0.2
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

stop_daemons() {
  local n i
  if alive "$STATE/run/slurmctld.pid"; then
    export SLURM_CONF=$CONF
    scancel --quiet --user=root 2>/dev/null || true
    # let steps die (KillWait=30) so no slurmstepd outlives the cluster
    for i in $(seq 45); do
      [[ -z $(squeue -h -t R,CG,S 2>/dev/null) ]] && break; sleep 1
    done
  fi
  local files=("$STATE/run/slurmctld.pid")
  for n in "${NODES[@]}"; do files+=("$(node_pid "$n")"); done
  stop_pids "${files[@]}"
}

stop() {
  stop_daemons
  if [[ -f $STATE/run/munged.ours ]]; then
    stop_pids "$MUNGE_PID"; rm -f "$STATE/run/munged.ours"
  fi
  log "stopped"
}

status() {
  local ok=0 n
  report() { if alive "$2"; then echo "$1: running (pid $(cat "$2"))"; else echo "$1: not running"; ok=1; fi; }
  report munged "$MUNGE_PID"
  report slurmctld "$STATE/run/slurmctld.pid"
  for n in "${NODES[@]}"; do report "slurmd $n" "$(node_pid "$n")"; done
  if ((ok == 0)); then SLURM_CONF=$CONF sinfo || ok=1; fi
  return $ok
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
