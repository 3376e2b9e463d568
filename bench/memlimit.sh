#!/bin/sh
# memlimit.sh BYTES COMMAND...: runs COMMAND inside a memory cgroup limited
# to BYTES (cgroup v2 memory.max, or v1 memory.limit_in_bytes), as a
# container with that budget would: the kernel then reclaims clean page
# cache, including the pages of Badger's memory-mapped tables, before the
# limit is reached, and kills the process only if what it cannot reclaim
# (its heap) exceeds it. Without a writable cgroup hierarchy (not root, no
# memory controller) the command runs without a limit, and says so. At the
# end it prints the cgroup's peak usage.
set -u
limit=$1
shift
name=ratchetd-memlimit-$$
if [ -w /sys/fs/cgroup/cgroup.procs ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
	dir=/sys/fs/cgroup/$name
	mkdir "$dir" && echo "$limit" >"$dir/memory.max" || dir=
	peak=memory.peak
elif [ -w /sys/fs/cgroup/memory/cgroup.procs ]; then
	dir=/sys/fs/cgroup/memory/$name
	mkdir "$dir" && echo "$limit" >"$dir/memory.limit_in_bytes" || dir=
	peak=memory.max_usage_in_bytes
else
	dir=
fi
if [ -z "$dir" ]; then
	echo "memlimit: no writable memory cgroup here; running without a limit" >&2
	exec "$@"
fi
echo "memlimit: running in $dir, limit $limit bytes" >&2
# A new shell, so that $$ is the process that moves into the cgroup (in a
# subshell $$ would still be this script's).
sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" "$@"
status=$?
echo "memlimit: cgroup peak usage $(cat "$dir/$peak" 2>/dev/null) bytes (page cache included), exit $status" >&2
rmdir "$dir" 2>/dev/null
exit $status
