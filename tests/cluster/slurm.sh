#!/usr/bin/env bash
# A real single-node Slurm on this machine for `make test-cluster`: installs Debian's slurm-wlm
# and munge if missing, writes a configuration for localhost (this machine's CPUs), starts
# munged, slurmctld and slurmd, runs tests/cluster/check_slurm.py against it, and stops them.
# Needs root (or sudo) for the packages and the daemons. Nothing here runs in `make test`.
set -euo pipefail
PY=${PY:-.venv/bin/python}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "installing Debian's slurm-wlm and munge ..."
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi

HERE=$(mktemp -d /tmp/testbed-slurm.XXXXXX)
mkdir -p "$HERE"/{spool/ctld,spool/d,run,log,munge}
NODE=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 8 / 10 ))
cat > "$HERE/slurm.conf" <<CONF
ClusterName=testbed
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$HERE/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# seconds between scancel's SIGTERM and SIGKILL (submitit's jobs ignore SIGTERM, as on pre-emption)
KillWait=3
SlurmctldPidFile=$HERE/run/slurmctld.pid
SlurmdPidFile=$HERE/run/slurmd.pid
SlurmdSpoolDir=$HERE/spool/d
StateSaveLocation=$HERE/spool/ctld
SlurmctldLogFile=$HERE/log/slurmctld.log
SlurmdLogFile=$HERE/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPort=16817
SlurmdPort=16818
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$HERE/slurm.conf"

stop() {
  set +e
  scancel --user="$(id -un)" 2>/dev/null  # jobs still running (a failed check) end with the daemons
  sleep 1
  $SUDO pkill -f 'slurmstepd' 2>/dev/null
  for p in slurmd slurmctld; do [ -f "$HERE/run/$p.pid" ] && $SUDO kill "$(cat "$HERE/run/$p.pid")" 2>/dev/null; done
  [ -f "$HERE/munge/munged.pid" ] && $SUDO kill "$(cat "$HERE/munge/munged.pid")" 2>/dev/null
  sleep 1
  echo "daemons stopped; logs in $HERE/log"
}
trap stop EXIT

KEY="$HERE/munge/munge.key"
$SUDO dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
$SUDO chmod 400 "$KEY"
$SUDO munged --key-file="$KEY" --socket="$HERE/munge/munge.socket" --pid-file="$HERE/munge/munged.pid" \
  --log-file="$HERE/log/munged.log" --seed-file="$HERE/munge/munged.seed" --force
$SUDO slurmctld -f "$SLURM_CONF"
$SUDO slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then break; fi
  sleep 1
done
sinfo
SUBMITIT_LOG_LEVEL=ERROR "$PY" tests/cluster/check_slurm.py
