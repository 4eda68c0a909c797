#!/usr/bin/env bash
# A real single-node Slurm 22.05 cluster with accounting, for turingwatch's tests and demos.
#
#   scripts/slurm-cluster.sh start          install what is missing, write configs, start daemons
#   scripts/slurm-cluster.sh stop [--purge] cancel jobs, stop daemons (by PID file); --purge: rm state
#   scripts/slurm-cluster.sh status         exit 0 when the node accepts jobs, print a summary
#   scripts/slurm-cluster.sh env            print the export line for SLURM_CONF
#
# Everything lives under one state dir (no systemd, no /etc changes besides Debian packages and
# the test user): munged, MariaDB, slurmdbd, slurmctld and slurmd all run as root from there.
# Every step is idempotent: `start` on a running cluster only checks it.
#
# Knobs (environment; not TURINGWATCH_SLURM_*, which are settings of the config's [slurm]):
#   TURINGWATCH_TEST_SLURM_DIR   state dir (default /tmp/turingwatch-slurm)
#   TURINGWATCH_TEST_SLURM_CPUS  CPUs the node advertises, whatever the machine has (default 4)
#   TURINGWATCH_TEST_SLURM_GPUS  fake GPUs (gres), 0 for none (default 1)
#   TURINGWATCH_TEST_SLURM_USER  non-root test user (default alice)
#   TURINGWATCH_TEST_SLURM_PORT  first of four consecutive ports: MariaDB, slurmctld, slurmd,
#                                slurmdbd (default 16817)
set -euo pipefail

STATE=${TURINGWATCH_TEST_SLURM_DIR:-/tmp/turingwatch-slurm}
CPUS=${TURINGWATCH_TEST_SLURM_CPUS:-4}
GPUS=${TURINGWATCH_TEST_SLURM_GPUS:-1}
TEST_USER=${TURINGWATCH_TEST_SLURM_USER:-alice}
BASE_PORT=${TURINGWATCH_TEST_SLURM_PORT:-16817}
MYSQL_PORT=$BASE_PORT CTLD_PORT=$((BASE_PORT + 1)) SLURMD_PORT=$((BASE_PORT + 2))
DBD_PORT=$((BASE_PORT + 3))
CLUSTER=turingwatch
ACCOUNT=testers
NODE=$(hostname -s)
PACKAGES=(slurm-wlm slurmdbd slurm-client munge mariadb-server)

CONF=$STATE/etc/slurm.conf
MUNGE_SOCKET=$STATE/munge/socket
DB_DIR=$STATE/db            # owned by the mysql user: datadir, socket, pid file and log
DB_SOCKET=$DB_DIR/mysqld.sock
export SLURM_CONF=$CONF     # how every Slurm daemon and client finds its configuration

say() { printf '[slurm-cluster %(%T)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

# running PIDFILE NAME: the PID file names a live process whose comm is NAME
running() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$2" ]]
}

# await SECONDS WHAT CMD...: retry CMD (a program, not a shell function) until it succeeds. A deadline rather than a try count,
# because one sacctmgr call against a dbd that is still starting takes seconds by itself.
await() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until timeout 10 "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "gave up waiting for $what; logs: $STATE/log, $DB_DIR/error.log"
        sleep 0.3
    done
}

ensure_packages() {
    local missing=() pkg created_policy=false
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    # Without systemd the postinst scripts would start munge and MariaDB through init.d:
    # a policy-rc.d that says "no" keeps the system copies of those daemons off.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    if $created_policy; then rm -f /usr/sbin/policy-rc.d; fi
}

ensure_user() {
    id "$TEST_USER" >/dev/null 2>&1 && return 0
    say "creating test user $TEST_USER"
    useradd --create-home --shell /bin/bash "$TEST_USER"
}

make_dirs() {
    mkdir -p "$STATE"/{etc,log,run,munge,spool/ctld,spool/node,dev,work} "$DB_DIR"
    # The test user's clients read slurm.conf and talk to munged through its socket.
    chmod 755 "$STATE" "$STATE/etc" "$STATE/munge" "$STATE/run"
    chmod 700 "$STATE/spool/ctld"
    chmod 1777 "$STATE/work"      # a place where jobs of any user can write their output
    chown mysql:mysql "$DB_DIR"
}

start_munge() {
    local key=$STATE/munge/munge.key
    [[ -s $key ]] || mungekey --create --keyfile="$key" --force
    chmod 400 "$key"
    running "$STATE/run/munged.pid" munged && return 0
    say "starting munged"
    # --force: munged refuses socket paths below a world-writable directory such as /tmp.
    munged --force --key-file="$key" --socket="$MUNGE_SOCKET" --pid-file="$STATE/run/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/seed"
    await 10 munged test -S "$MUNGE_SOCKET"
}

start_mariadb() {
    if [[ ! -d $DB_DIR/data/mysql ]]; then
        say "creating the MariaDB datadir"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR/data" --skip-test-db \
            --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1
    fi
    if ! running "$DB_DIR/mariadbd.pid" mariadbd; then
        say "starting mariadbd on 127.0.0.1:$MYSQL_PORT"
        # slurmdbd warns below a 256M buffer pool and asks for a long lock wait timeout.
        setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR/data" \
            --socket="$DB_SOCKET" --pid-file="$DB_DIR/mariadbd.pid" --log-error="$DB_DIR/error.log" \
            --bind-address=127.0.0.1 --port="$MYSQL_PORT" --skip-name-resolve \
            --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
            </dev/null >/dev/null 2>&1 &
        await 60 mariadbd mariadb --no-defaults --user=root --socket="$DB_SOCKET" -e 'SELECT 1'
    fi
    mariadb --no-defaults --user=root --socket="$DB_SOCKET" <<'SQL'
CREATE USER IF NOT EXISTS 'slurmdbd'@'127.0.0.1' IDENTIFIED BY 'turingwatch';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurmdbd'@'127.0.0.1';
SQL
}

# The node line: memory from what slurmd detects, CPUs as advertised. config_overrides makes
# slurmd trust slurm.conf over the hardware, so tests can get a 4-core allocation on 2 cores.
node_line() {
    local memory
    memory=$(slurmd -C | grep -o 'RealMemory=[0-9]*')
    printf 'NodeName=%s NodeAddr=127.0.0.1 CPUs=%s Boards=1 SocketsPerBoard=1 CoresPerSocket=%s ' \
        "$NODE" "$CPUS" "$CPUS"
    printf 'ThreadsPerCore=1 %s' "$memory"
    ((GPUS > 0)) && printf ' Gres=gpu:fake:%s' "$GPUS"
    printf ' State=UNKNOWN\n'
}

write_gres_conf() {
    local i
    : >"$STATE/etc/gres.conf"
    # One device file per fake GPU, each a copy of /dev/null (char 1,3): Slurm only needs distinct
    # paths to hand out; two gres lines on the same file make slurmd die at start.
    for ((i = 0; i < GPUS; i++)); do
        [[ -c $STATE/dev/gpu$i ]] || mknod -m 666 "$STATE/dev/gpu$i" c 1 3
        echo "NodeName=$NODE Name=gpu Type=fake File=$STATE/dev/gpu$i" >>"$STATE/etc/gres.conf"
    done
}

write_configs() {
    write_gres_conf
    cat >"$CONF" <<EOF
# Written by scripts/slurm-cluster.sh; edits are overwritten on the next start.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
# Connections to slurmdbd ignore AuthInfo and take the munge socket from here.
AccountingStoragePass=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/node
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
# No cgroup plugins: they would move job tasks out of this sandbox's own cgroups.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Poll every second, so MaxRSS catches short peaks; the poller also enforces --mem.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment,job_env,job_script
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmdParameters=config_overrides
$( ((GPUS > 0)) && echo GresTypes=gpu)
$(node_line)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
# Written by scripts/slurm-cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurmdbd
StoragePass=turingwatch
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"   # slurmdbd refuses to read it otherwise
    echo "export SLURM_CONF=$CONF" >"$STATE/env.sh"
}

start_slurmdbd() {
    if ! running "$STATE/run/slurmdbd.pid" slurmdbd; then
        say "starting slurmdbd"
        slurmdbd
        await 60 slurmdbd sacctmgr --noheader list cluster
    fi
    # slurmctld registers with the cluster only once it exists in the database.
    local user
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i -Q add account "$ACCOUNT" Cluster="$CLUSTER" Description="test jobs" \
        Organization=turingwatch >/dev/null 2>&1 || true
    for user in root "$TEST_USER"; do
        sacctmgr -i -Q add user "$user" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" \
            Cluster="$CLUSTER" >/dev/null 2>&1 || true
    done
}

node_state() { sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null; }

start_slurm() {
    if ! running "$STATE/run/slurmctld.pid" slurmctld; then
        say "starting slurmctld"
        slurmctld
        await 30 slurmctld scontrol ping
    fi
    if ! running "$STATE/run/slurmd.pid" slurmd; then
        say "starting slurmd"
        slurmd
    fi
    await 60 "slurmd to register" bash -c "sinfo -h -n $NODE -o %t | grep -Eqv '^unk|[*]\$'"
    # A node drained or down in the saved state of an earlier run is put back to work.
    if node_state | grep -Eq 'drain|down'; then
        scontrol update NodeName="$NODE" State=RESUME || true
    fi
    await 60 "node $NODE to accept jobs" bash -c "sinfo -h -n $NODE -o %t | grep -Eqx 'idle|mix|alloc'"
}

cmd_start() {
    local started=$SECONDS before after
    if [[ $(id -u) != 0 ]]; then
        cmd_status >/dev/null && return 0   # nothing to do, and nothing a non-root user could
        die "start needs root (daemons and packages)"
    fi
    ensure_packages
    ensure_user
    make_dirs
    start_munge
    start_mariadb
    before=$(cat "$STATE"/etc/{slurm,slurmdbd,gres}.conf 2>/dev/null | md5sum || true)
    write_configs
    after=$(cat "$STATE"/etc/{slurm,slurmdbd,gres}.conf | md5sum)
    if [[ $before != "$after" ]] && running "$STATE/run/slurmctld.pid" slurmctld; then
        say "configuration changed: restarting the Slurm daemons"
        stop_daemons slurmd slurmctld slurmdbd
    fi
    start_slurmdbd
    start_slurm
    say "up in $((SECONDS - started)) s: $(sinfo -h -o '%P %D nodes, %c CPUs, %m MB, %G')"
    say "use it with: source $STATE/env.sh"
}

# stop_daemon PIDFILE NAME: SIGTERM the process the PID file names (never anything by name),
# SIGKILL it after 30 s.
stop_daemon() {
    local pid i
    running "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(<"$1")
    say "stopping $2 (pid $pid)"
    kill "$pid"
    for ((i = 0; i < 300; i++)); do
        [[ -e /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -e /proc/$pid ]]; then
        say "$2 ignored SIGTERM, killing it"
        kill -9 "$pid"
    fi
    rm -f "$1"
}

# stop_daemons NAME...: in the order given.
stop_daemons() {
    local name
    for name in "$@"; do
        case $name in
        mariadbd) stop_daemon "$DB_DIR/mariadbd.pid" mariadbd ;;
        *) stop_daemon "$STATE/run/$name.pid" "$name" ;;
        esac
    done
}

cancel_jobs() {
    local jobs i
    running "$STATE/run/slurmctld.pid" slurmctld || return 0
    jobs=$(timeout 10 squeue --noheader --format=%i 2>/dev/null) || return 0
    [[ -n $jobs ]] || return 0
    say "cancelling jobs: ${jobs//$'\n'/ }"
    # shellcheck disable=SC2086
    scancel $jobs || true
    for ((i = 0; i < 60; i++)); do
        [[ -z $(timeout 5 squeue --noheader --format=%i 2>/dev/null) ]] && break
        sleep 0.5
    done
}

cmd_stop() {
    local started=$SECONDS
    [[ -d $STATE ]] || { say "nothing to stop: no $STATE"; return 0; }
    [[ $(id -u) == 0 ]] || die "stop needs root (the daemons run as root)"
    cancel_jobs
    stop_daemons slurmd slurmctld slurmdbd mariadbd munged
    # Only now: a munged still running would unlink a new socket at this path when it exits.
    if [[ ${1:-} == --purge ]]; then
        say "removing $STATE"
        rm -rf "$STATE"
    fi
    say "stopped in $((SECONDS - started)) s"
}

cmd_status() {
    local name pidfile ok=true
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        pidfile=$STATE/run/$name.pid
        [[ $name == mariadbd ]] && pidfile=$DB_DIR/mariadbd.pid
        if [[ -e $pidfile && ! -r $pidfile ]]; then
            echo "$name: cannot tell (its PID file is not readable by $(id -un))"
        elif running "$pidfile" "$name"; then
            echo "$name: running (pid $(<"$pidfile"))"
        else
            echo "$name: not running"
            ok=false
        fi
    done
    $ok || return 1
    local state
    state=$(timeout 10 sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null) || state=unreachable
    echo "node $NODE: ${state:-unknown}"
    [[ $state =~ ^(idle|mix|alloc)$ ]] || return 1
    echo "export SLURM_CONF=$CONF"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop "${2:-}" ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 start | stop [--purge] | status | env" >&2
    exit 2
    ;;
esac
