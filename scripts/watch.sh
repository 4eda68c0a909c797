# watch.sh: watch a whole Slurm job with one line near the top of its batch script.
#
#   #!/bin/bash
#   #SBATCH --nodes=2 --ntasks=8 --time=02:00:00
#   . "$(turingwatch watch-script)"        # or: source /path/to/watch.sh
#   srun ./solver                          # the rest of the script, unchanged
#
# Sourced, not run. POSIX sh: bash, dash, ksh and busybox sh; it works under set -e, set -u and
# set -o pipefail, and changes none of them while the script runs.
#
# What it does, inside a Slurm batch script:
# - starts `turingwatch attach --job-card` on the batch host, and a plain `attach` on each other
#   node of the job, each in the background as one `srun --overlap` step of one task per node
#   and one CPU (the job's own --ntasks, --cpus-per-task and memory stay the job's: --overlap
#   and --mem=0 make the watcher's step share them, not take them);
# - sets an EXIT trap: at the script's end it hands the script's exit status to the batch
#   host's attach, waits for it to print the report card (after the other nodes' watchers have
#   finished), and lets the script exit with its own status, or die of its own signal.
# When the script `exec`s its program, or sets its own EXIT trap after this line, the trap never
# runs: the batch host's attach then notices the job's end itself (Slurm signals the job's steps
# within a second of the script's end), asks Slurm for the exit status, and prints the card in
# the KillWait seconds Slurm gives (30 by default); Slurm adds one line of its own then ("STEP
# N.0 ... CANCELLED"). The card goes to the script's stderr file (slurm-N.out, unless #SBATCH
# --error names another) directly, so that it is there even though the script has gone, and
# never into what the script writes to its stdout.
#
# It adds nothing else to the job's output, and traps no signal but EXIT. It does nothing, with
# one line on stderr, outside a Slurm job (use `turingwatch run -- CMD` there) and when
# turingwatch is not on the node's PATH; the script runs on either way. Sourced a second time,
# or in a job step of a job already watched, it does nothing.
#
# The watcher's settings come from the environment as usual: TURINGWATCH_SAMPLER_INTERVAL_S,
# TURINGWATCH_SAMPLER_OUTPUT_DIR, TURINGWATCH_CONFIG (see `turingwatch config show`).
#
# Names: everything this file defines starts with _turingwatch_ or _TURINGWATCH_.

_turingwatch_start() {
    if [ -z "${SLURM_JOB_ID:-}" ]; then
        echo "turingwatch: watch.sh: not in a Slurm job, nothing is watched (turingwatch run -- CMD watches a command)" >&2
        return 0
    fi
    if [ "${_TURINGWATCH_WATCHED:-}" = "$SLURM_JOB_ID" ]; then
        return 0  # sourced again, or in a step of a job already watched
    fi
    _TURINGWATCH_WATCHED=$SLURM_JOB_ID
    export _TURINGWATCH_WATCHED
    if ! command -v turingwatch >/dev/null 2>&1; then
        echo "turingwatch: watch.sh: turingwatch is not installed on $(hostname), job $SLURM_JOB_ID runs unwatched" >&2
        return 0
    fi
    if ! command -v srun >/dev/null 2>&1; then
        echo "turingwatch: watch.sh: no srun on $(hostname), job $SLURM_JOB_ID runs unwatched" >&2
        return 0
    fi
    # A private directory (mode 0700) on the batch host for the exit status the trap hands over.
    _turingwatch_state=$(mktemp -d "${TMPDIR:-/tmp}/turingwatch-watch.XXXXXX" 2>/dev/null) || {
        echo "turingwatch: watch.sh: cannot make a directory in ${TMPDIR:-/tmp}, job $SLURM_JOB_ID runs unwatched" >&2
        return 0
    }
    _turingwatch_node=${SLURMD_NODENAME:-$(hostname -s)}
    _turingwatch_nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}

    # One task on one CPU per node, sharing the job's CPUs and memory (the user's steps can
    # still take all of them), named so in sacct, reading nothing from the script's stdin.
    set -- srun --overlap --quiet --mem=0 --ntasks-per-node=1 --cpus-per-task=1 \
        --kill-on-bad-exit=0 --input=none --job-name=turingwatch
    # The card is written by the step itself into the script's stderr file (opened for
    # appending, as Slurm opens it) when that is a file: the srun in the background, a process
    # of the script, is gone when the script has exec'd and ended.
    _turingwatch_out=$(readlink "/proc/$$/fd/1" 2>/dev/null) || _turingwatch_out=
    _turingwatch_err=$(readlink "/proc/$$/fd/2" 2>/dev/null) || _turingwatch_err=
    if _turingwatch_file "$_turingwatch_out" && _turingwatch_file "$_turingwatch_err"; then
        set -- "$@" --open-mode=append --output="$_turingwatch_out" --error="$_turingwatch_err"
    fi
    "$@" --nodes=1 --ntasks=1 --nodelist="$_turingwatch_node" \
        turingwatch attach --job-card --status-file "$_turingwatch_state/status" </dev/null &
    _turingwatch_pid=$!
    if [ "$_turingwatch_nodes" -gt 1 ] 2>/dev/null; then
        # The other nodes: their watchers stop when the batch host's asks them to (STOP file).
        srun --overlap --quiet --mem=0 --ntasks-per-node=1 --cpus-per-task=1 \
            --kill-on-bad-exit=0 --input=none --job-name=turingwatch \
            --nodes=$((_turingwatch_nodes - 1)) --ntasks=$((_turingwatch_nodes - 1)) \
            --exclude="$_turingwatch_node" turingwatch attach </dev/null &
    fi
    trap _turingwatch_end EXIT
    return 0
}

# _turingwatch_file PATH: PATH names a regular file srun can be given as a file name (Slurm
# reads % and \ in --output as its own patterns).
_turingwatch_file() {
    case $1 in
        /*%* | /*\\*) return 1 ;;
        /*) [ -f "$1" ] ;;
        *) return 1 ;;
    esac
}

_turingwatch_end() {
    _turingwatch_status=$?
    set +e +u  # nothing here may fail the script or change its status
    trap - EXIT
    # Written whole, then renamed: the attach reads it as soon as it appears.
    if printf '%s\n' "$_turingwatch_status" >"$_turingwatch_state/status.new"; then
        mv -f "$_turingwatch_state/status.new" "$_turingwatch_state/status"
    fi
    wait "$_turingwatch_pid" 2>/dev/null
    rm -rf "$_turingwatch_state" 2>/dev/null
    return "$_turingwatch_status"
}

_turingwatch_start
