#!/bin/bash
# debian-mirror.sh SUITE: prints the Debian mirrors the host's apt reads for
# SUITE (one-line sources.list or deb822 .sources), one per file. Used by
# build-image.sh and by e2e/testenv (the Dockerfile test's base images).
set -euo pipefail
suite=${1:?usage: debian-mirror.sh SUITE}
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
	[ -f "$f" ] || continue
	awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; if ($(i+1) == s) { print $i; exit } }' "$f"
done
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	awk -v s="$suite" '
		/^[[:space:]]*#/ { next }
		/^[[:space:]]*$/ { if (uri != "" && ok) { print uri; done = 1; exit } uri = ""; ok = 0; next }
		tolower($1) == "uris:" { uri = $2 }
		tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
		END { if (!done && uri != "" && ok) print uri }' "$f"
done
