#!/usr/bin/env bash
# bench/run.sh: Herald versus Postfix, side by side, on loopback (issue 5).
#
#   bench/run.sh                 full run (installs postfix if missing; root), writes bench/RESULTS.md
#   bench/run.sh --smoke         ~5 s harness check: tiny counts, Herald and the ceiling only
#   bench/run.sh --profile       also write a Herald CPU profile per run to bench/profiles/
#   bench/run.sh -runs 1 -messages 5000 -backlog 20000 ...   any bench/cmd/benchrun flag
#   bench/run.sh -only flat      the session and size sweeps (issue 13; not in the default run)
#   bench/run.sh -queue-depths 1000,100000,1000000 [-queue-depth-postgres URL]
#                                also the stores' queue-depth benchmark and plans (issue 13)
#
# See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

smoke=0
profile=0
args=()
for a in "$@"; do
	case "$a" in
	--smoke) smoke=1 ;;
	--profile) profile=1 ;;
	*) args+=("$a") ;;
	esac
done

bin=$(mktemp -d /tmp/herald-bench-bin.XXXXXX)
work=$(mktemp -d /tmp/herald-bench-work.XXXXXX)
cleanup() {
	# The harness stops both servers itself; this is the fallback if it died.
	if [ -f "$work/postfix/spool/pid/master.pid" ] && [ -x /usr/sbin/postfix ]; then
		/usr/sbin/postfix -c "$work/postfix/etc" abort >/dev/null 2>&1 || true
	fi
	rm -rf "$bin" "$work"
}
trap cleanup EXIT

# 10,000 idle connections need twice as many descriptors (both ends on this host).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ "$smoke" = 0 ] && { [ ! -x /usr/sbin/postfix ] || [ ! -x /usr/sbin/smtp-source ]; }; then
	if [ "$(id -u)" != 0 ]; then
		echo "run.sh: postfix is not installed; run as root so it can be installed" >&2
		exit 1
	fi
	echo "run.sh: installing postfix (No configuration: the system instance is not set up or started)" >&2
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y postfix >&2
fi

echo "run.sh: building" >&2
go build -o "$bin/herald" ./cmd/herald
go build -o "$bin/benchrun" ./bench/cmd/benchrun
go build -o "$bin/fsyncrate" ./bench/cmd/fsyncrate

flags=(-herald "$bin/herald" -fsyncrate "$bin/fsyncrate" -workdir "$work" -command "bench/run.sh $*")
if [ "$profile" = 1 ]; then
	go build -o "$bin/heraldprof" ./bench/cmd/heraldprof
	mkdir -p "$root/bench/profiles"
	cp "$bin/heraldprof" "$root/bench/profiles/heraldprof"
	flags+=(-heraldprof "$bin/heraldprof" -profile "$root/bench/profiles")
fi
if [ "$smoke" = 1 ]; then
	flags+=(-smoke)
else
	flags+=(-out "$root/bench/RESULTS.md")
fi
"$bin/benchrun" "${flags[@]}" "${args[@]}"
