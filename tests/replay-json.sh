#!/usr/bin/env bash
# Replays every recording in fixtures/ with `comfy-proxy replay --json` and compares the output
# with the expected lines in tests/snapshots/replay-json/. `--update` rewrites them (review the
# diff before committing). Usage: tests/replay-json.sh PATH/TO/comfy-proxy [--update]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: tests/replay-json.sh PATH/TO/comfy-proxy [--update]}
update=${2:-}
dir=tests/snapshots/replay-json
failed=0
count=0
for f in fixtures/*.jsonl; do
    name=$(basename "$f" .jsonl)
    expected="$dir/$name.jsonl"
    actual=$("$bin" replay "$f" --json)
    count=$((count + 1))
    if [ "$update" = "--update" ]; then
        printf '%s\n' "$actual" > "$expected"
    elif ! diff -u "$expected" <(printf '%s\n' "$actual") > /dev/null 2>&1; then
        echo "replay --json of $f differs from $expected:" >&2
        diff -u "$expected" <(printf '%s\n' "$actual") | head -n 40 >&2 || true
        failed=$((failed + 1))
    fi
done
if [ "$update" = "--update" ]; then
    echo "rewrote $count expected replays in $dir"
    exit 0
fi
echo "replay --json: $((count - failed)) of $count recordings match their snapshots"
[ "$failed" -eq 0 ]
