#!/usr/bin/env bash
# A bound on one step of .ci/run: runs the command given, and if it is still running after
# SECONDS, writes to the log which processes of the step are still alive (test binaries and
# their children), the stacks of their threads (gdb in batch mode, at most $WATCHDOG_STACKS
# processes, each under `timeout 30`), then kills the step's processes, so that the step
# fails saying why instead of CI reaching its hour with nothing in the log.
#
#   bash .ci/watchdog.sh SECONDS COMMAND [ARGS...]
#
# Exit status: the command's own when it ends within the bound; 124 when the watchdog
# stopped it. The command runs in a session of its own (setsid): the step's processes are
# that session's (forked test children included, unless a test starts a session itself),
# plus any descendant of the command found through /proc.
#
# Environment: WATCHDOG_STACKS (default 6) bounds the processes whose stacks are written;
# the gdb of each is bounded to 30 s, so the dump takes at most 3 minutes.
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 SECONDS COMMAND [ARGS...]" >&2
  exit 2
fi
bound=$1
shift
max_stacks="${WATCHDOG_STACKS:-6}"

# The step, in its own session: its session id is its pid.
setsid -w "$@" &
step_pid=$!

# The step's processes: those of its session, and descendants of the step that left it.
step_processes() {
  {
    ps -e -o pid=,sid= | awk -v sid="$step_pid" '$2 == sid { print $1 }'
    local frontier=("$step_pid") next p
    while [ ${#frontier[@]} -gt 0 ]; do
      next=()
      for p in "${frontier[@]}"; do
        for c in $(cat "/proc/$p/task/"*/children 2>/dev/null); do
          echo "$c"
          next+=("$c")
        done
      done
      frontier=("${next[@]+"${next[@]}"}")
    done
  } | sort -n -u
}

report_and_kill() {
  echo
  echo "=== watchdog: '$*' still running after ${bound} s: the step's processes"
  local pids
  pids=$(step_processes)
  # shellcheck disable=SC2086
  [ -n "$pids" ] && ps -o pid,ppid,etime,time,stat,nlwp,args -p $(echo $pids | tr ' ' ',')
  # The stacks of the test processes (not cargo, rustc or the scripts' tools): the newest
  # first (a fork test's children, started after their test binary, where it hangs).
  local dumped=0 p exe
  for p in $(echo "$pids" | tac); do
    [ "$dumped" -ge "$max_stacks" ] && break
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    case "$exe" in
      */cargo | */rustc | */rustup | */bash | */sh | */setsid | */timeout | */xargs | \
        */flock | */cat | */sleep | */gdb) continue ;;
    esac
    echo
    echo "=== watchdog: threads of $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-200))"
    if command -v gdb >/dev/null 2>&1; then
      timeout 30 gdb -batch -nx -p "$p" -ex 'set pagination off' -ex 'info threads' \
        -ex 'thread apply all bt 30' 2>&1 | grep -v '^\[New LWP\|^warning: ' | head -400
    else
      echo "(gdb is not installed: the kernel's stacks instead)"
      for t in /proc/"$p"/task/*; do
        echo "thread ${t##*/} $(cat "$t/comm" 2>/dev/null): $(cat "$t/wchan" 2>/dev/null)"
      done
    fi
    dumped=$((dumped + 1))
  done
  echo
  echo "=== watchdog: killing the step's processes"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null
  sleep 5
  # shellcheck disable=SC2086
  kill -KILL $(step_processes) 2>/dev/null
}

# The timer: sleeps in the background and marks the run as timed out before it reports.
flag=$(mktemp)
(
  sleep "$bound" &
  sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  wait "$sleeper"
  if kill -0 "$step_pid" 2>/dev/null; then
    echo timeout >"$flag"
    report_and_kill "$@"
  fi
) &
timer_pid=$!

wait "$step_pid"
status=$?
if [ -s "$flag" ]; then
  # The report may still be running (the step died of the TERM): let it finish.
  wait "$timer_pid" 2>/dev/null
  rm -f "$flag"
  echo "=== watchdog: FAILED: '$*' ran past its bound of ${bound} s and was killed (stacks above)"
  exit 124
fi
kill "$timer_pid" 2>/dev/null
wait "$timer_pid" 2>/dev/null
rm -f "$flag"
exit "$status"
