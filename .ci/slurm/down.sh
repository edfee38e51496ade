#!/usr/bin/env bash
# Stop the daemons .ci/slurm/up.sh started (and only those: pids recorded in $MEDPIPE_SLURM_DIR/started/).
# Pass --purge to delete the state directory (configuration, accounting database, logs) as well.
set -uo pipefail
STATE="${MEDPIPE_SLURM_DIR:-/tmp/medpipe-slurm}"
log() { echo "[slurm-down] $*" >&2; }

stop() {  # stop NAME: TERM the recorded pid, wait up to 20 s, then KILL
  local f="$STATE/started/$1.pid" pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    timeout 20 bash -c "while kill -0 $pid 2>/dev/null; do sleep 0.2; done" || kill -KILL "$pid" 2>/dev/null
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$f"
}
# Cancel what is still queued or running, so that no saved controller state holds a job.
if [[ -f $STATE/started/slurmctld.pid ]] && kill -0 "$(cat "$STATE/started/slurmctld.pid")" 2>/dev/null; then
  SLURM_CONF="$STATE/etc/slurm.conf" timeout 20 scancel --user="$(id -un)" 2>/dev/null \
    && log "cancelled the jobs still queued or running"
fi
# Reverse start order: compute node, controller, accounting, database, authentication.
for d in slurmd slurmctld slurmdbd mariadbd munged; do stop "$d"; done
# The /etc/slurm/slurm.conf link up.sh made (only if it still points to our configuration).
link_file="$STATE/started/conf-link"
if [[ -f $link_file ]]; then
  link=$(cat "$link_file")
  if [[ -L $link && $(readlink "$link") == "$STATE/etc/slurm.conf" ]]; then
    rm -f "$link"
    log "removed $link"
  fi
  rm -f "$link_file"
fi
if [[ ${1:-} == --purge ]]; then
  rm -rf "$STATE"
  log "removed $STATE"
fi
exit 0
