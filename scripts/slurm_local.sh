#!/usr/bin/env bash
# Install and start a single-node SLURM cluster on this machine (Debian): the controller and the
# one compute node are this host. Used by CI and by anyone who wants to try the SLURM path
# locally. Idempotent: a running cluster is left alone; one started here forgets the jobs of any
# earlier cluster on this disk. Needs root.
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
# A node busy with someone's jobs (mixed, allocated) is a running cluster too.
if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; then
  echo "slurm: already running"; sinfo; exit 0
fi
host=$(hostname)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

# munge: a key and the daemon, running as the munge user.
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged

mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
chown -R slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=${host}
AuthType=auth/munge
# A requeued job waits for its old credential to expire before it starts again, then for the next
# scheduling pass: keep both short (SLURM's defaults are 120 s, and 30 s or 60 s).
AuthInfo=cred_expire=10
SchedulerParameters=bf_interval=1,sched_interval=2
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Preemption and requeue are what the tests exercise.
JobRequeue=1
KillWait=10
MinJobAge=600
NodeName=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# A controller started here starts clean (-c): state saved by an earlier cluster on this disk (a
# machine image taken mid-test, say) would bring back jobs that hold the node's CPUs forever.
pgrep -x slurmctld >/dev/null || slurmctld -c -i
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then sinfo; exit 0; fi
  scontrol update nodename="${host}" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm: the node did not become idle" >&2
sinfo >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
