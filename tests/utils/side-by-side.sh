#!/usr/bin/env bash
# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# side-by-side.sh LOGDIR COMMAND...: run each COMMAND (a shell command line) at the same time, each with its output in
# LOGDIR/<n>.log; print a line as each one ends, then each log whole, in the order given, and the times. Exits 0 when
# every command did, else 1 after printing which failed. `make test` runs the suites before the lab this way: each
# suite keeps one core busy, and the machine has two.
set -uo pipefail

logdir=$1
shift
mkdir -p "$logdir"
rm -f "$logdir"/*.log
declare -a pids names
start=$(date +%s)
n=0
for command in "$@"; do
    n=$((n + 1))
    names[n]=$command
    ( exec bash -c "$command" ) >"$logdir/$n.log" 2>&1 &
    pids[n]=$!
    echo "side by side: [$n] $command (log: $logdir/$n.log)"
done

declare -A status seconds
remaining=$n
while [ "$remaining" -gt 0 ]; do
    for i in $(seq 1 "$n"); do
        [ -n "${status[$i]:-}" ] && continue
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            wait "${pids[$i]}"
            status[$i]=$?
            seconds[$i]=$(( $(date +%s) - start ))
            remaining=$((remaining - 1))
            echo "side by side: [$i] ended after ${seconds[$i]} s with exit status ${status[$i]}: ${names[$i]}"
        fi
    done
    [ "$remaining" -gt 0 ] && sleep 1
done

failed=0
for i in $(seq 1 "$n"); do
    echo
    echo "===== [$i] ${names[$i]} (${seconds[$i]} s, exit status ${status[$i]}) ====="
    cat "$logdir/$i.log"
    [ "${status[$i]}" -eq 0 ] || failed=1
done
echo
for i in $(seq 1 "$n"); do
    if [ "${status[$i]}" -ne 0 ]; then
        echo "side by side: FAILED [$i] ${names[$i]} (exit status ${status[$i]}; log above and in $logdir/$i.log)"
    fi
done
echo "side by side: all ended after $(( $(date +%s) - start )) s"
exit "$failed"
