#!/usr/bin/env bash
# Bring up a REAL single-node SLURM cluster on 127.0.0.1 for CI (root, no systemd).
#
#   .ci/slurm/up.sh            install the Debian packages if missing, configure, start, wait for the node
#   source "$MEDPIPE_SLURM_DIR/env.sh"   then sbatch/squeue/sacct/snakemake --profile profiles/slurm work
#   .ci/slurm/down.sh          stop exactly the daemons this script started
#
# Daemons: munged, mariadbd (private datadir, unix socket only, no TCP), slurmdbd, slurmctld, slurmd.
# All configuration and state live in $MEDPIPE_SLURM_DIR (default /tmp/medpipe-slurm); clients find it
# through SLURM_CONF, and through a /etc/slurm/slurm.conf link that exists only while the cluster is up.
# Once down.sh has run, no SLURM configuration is left where clients look, so plain snakemake calls do
# not wait ~10 s on a dead controller (the slurm executor plugin runs `scontrol show config` whenever it
# is imported, i.e. on every snakemake call, as soon as `sinfo` is on PATH).
# Idempotent: a second call with the cluster up returns at once; otherwise it starts from a clean state. Every wait is bounded by `timeout`.
set -euo pipefail

STATE="${MEDPIPE_SLURM_DIR:-/tmp/medpipe-slurm}"
CLUSTER=medpipe
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
export SLURM_CONF="$STATE/etc/slurm.conf"

log() { echo "[slurm-up] $*" >&2; }
die() { log "ERROR: $*"; for f in "$STATE"/log/*.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done; exit 1; }

[[ $(id -u) -eq 0 ]] || { log "must run as root (the daemons are started by hand, no systemd)"; exit 1; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if alive "$STATE/started/slurmctld.pid" && alive "$STATE/started/slurmd.pid" \
   && timeout 10 scontrol ping >/dev/null 2>&1; then
  log "cluster already up (SLURM_CONF=$SLURM_CONF)"
  exit 0
fi

# Not (fully) up: start from a clean state. A cluster stopped while a job still ran (a killed test
# run) would otherwise recover that job from its saved state, keep the node allocated and never
# become idle; its accounting database would still hold the old job IDs the new jobs reuse.
"$(dirname "$0")/down.sh"
rm -rf "${STATE:?}"/{ctld,spool,mysql,started,log}

# ---------------------------------------------------------------- packages (idempotent)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq
  timeout 300 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "packages installed in $((SECONDS - t0)) s"
fi

mkdir -p "$STATE"/{etc,log,started,ctld,spool}
chmod 755 "$STATE"

# ---------------------------------------------------------------- munge
if timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
  log "munged already running: using it (not stopped by down.sh)"
else
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  timeout 10 bash -c 'until [[ -s /run/munge/munged.pid ]]; do sleep 0.1; done' || die "munged did not start"
  cp /run/munge/munged.pid "$STATE/started/munged.pid"
  timeout 10 bash -c 'until munge -n | unmunge >/dev/null 2>&1; do sleep 0.2; done' || die "munge does not work"
fi

# ---------------------------------------------------------------- MariaDB (socket only) + slurmdbd
# slurmdbd's mysql plugin connects to "localhost" through the compiled-in socket /run/mysqld/mysqld.sock.
SOCK=/run/mysqld/mysqld.sock
if ! alive "$STATE/started/mariadbd.pid"; then
  if timeout 5 mariadb --no-defaults --socket="$SOCK" -e 'select 1' >/dev/null 2>&1; then
    die "a MariaDB/MySQL server not started by this script already listens on $SOCK"
  fi
  if [[ ! -d $STATE/mysql/mysql ]]; then
    install -d -o mysql -g mysql -m 0750 "$STATE/mysql"
    timeout 120 mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
  fi
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  # Socket only (--skip-networking): no TCP port at all.
  mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$SOCK" --skip-networking \
    --pid-file="$STATE/mysql/mariadbd.pid" --log-error="$STATE/mysql/mariadbd.err" \
    --innodb-buffer-pool-size=32M --innodb-log-file-size=16M --performance-schema=OFF \
    2>>"$STATE/log/mariadbd.stderr" &
  echo $! >"$STATE/started/mariadbd.pid"
  timeout 60 bash -c "until mariadb --no-defaults --socket='$SOCK' -e 'select 1' >/dev/null 2>&1; do sleep 0.2; done" \
    || die "mariadbd did not answer on $SOCK"
fi

cat >"$STATE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
CONF
chmod 0600 "$STATE/etc/slurmdbd.conf"

# ---------------------------------------------------------------- slurm.conf
host=$(hostname -s)
# Node line from `slurmd -C` (real CPUs, sockets, memory), addressed on 127.0.0.1.
node=$(slurmd -C | head -n 1)
[[ $node == NodeName=* ]] || die "slurmd -C gave no node line: $node"
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
# Without DefMemPerCPU a job that does not ask for memory is given the whole node.
defmem=$((mem / cpus < 1024 ? mem / cpus : 1024))
cat >"$SLURM_CONF" <<CONF
# Single-node CI cluster written by .ci/slurm/up.sh. Everything listens on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
# squeue keeps finished jobs this long (the plugin's squeue status mode needs >= 3x its first status delay).
MinJobAge=300
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobCompType=jobcomp/none
# Keep the comment the plugin gives each job (rule_<rule>_wildcards_...) in the accounting database.
AccountingStoreFlags=job_comment
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

# The slurm-jobstep plugin strips SLURM_* (SLURM_CONF too) before its nested `srun`, which then
# finds no configuration: while the cluster is up, /etc/slurm/slurm.conf links to ours
# (never replacing a file that is already there); down.sh removes the link again.
if [[ -L /etc/slurm/slurm.conf || ! -e /etc/slurm/slurm.conf ]]; then
  mkdir -p /etc/slurm
  ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
  echo /etc/slurm/slurm.conf >"$STATE/started/conf-link"
elif [[ $(readlink -f /etc/slurm/slurm.conf) != "$SLURM_CONF" ]]; then
  log "WARNING: /etc/slurm/slurm.conf exists and is not ours: srun inside jobs will use it"
fi

cat >"$STATE/env.sh" <<ENV
export SLURM_CONF=$SLURM_CONF
ENV

# ---------------------------------------------------------------- start slurm daemons
start() {  # start NAME PIDFILE CMD...: run a self-daemonising SLURM daemon and record its pid
  local name=$1 pidfile=$2; shift 2
  if alive "$STATE/started/$name.pid"; then return; fi
  rm -f "$pidfile"
  "$@" || die "$name failed to start"
  timeout 20 bash -c "until [[ -s '$pidfile' ]]; do sleep 0.1; done" || die "$name wrote no pid file"
  cp "$pidfile" "$STATE/started/$name.pid"
}
start slurmdbd "$STATE/slurmdbd.pid" slurmdbd
timeout 30 bash -c 'until sacctmgr -n list cluster >/dev/null 2>&1; do sleep 0.3; done' || die "slurmdbd not answering"
sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
start slurmctld "$STATE/slurmctld.pid" slurmctld
start slurmd "$STATE/slurmd.pid" slurmd
timeout 60 bash -c 'until [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]; do sleep 0.5; done' \
  || die "node did not become idle: $(sinfo -N 2>&1)"
log "cluster '$CLUSTER' up: $(sinfo -h -N -o '%N %t cpus=%c mem=%m')  (source $STATE/env.sh)"
