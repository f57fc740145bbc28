#!/usr/bin/env bash
# Mutation testing of one pure-Python module with mutmut, on a scratch copy of the checkout (mutmut
# writes mutants/ beside the sources). Prints mutmut's final counts and the surviving mutants.
#   bash scripts/mutation.sh memr1_jax/service/filters.py tests/test_filters.py
# Needs: pip install mutmut==3.8.1 (not a project dependency).
set -euo pipefail
module=$1; tests=$2; select=${3:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
# MUTATION_KEEP=1 keeps the scratch copy (printed last) for `mutmut show NAME` there.
[ -n "${MUTATION_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
cp -r "$repo/memr1_jax" "$repo/tests" "$repo/configs" "$repo/setup.py" "$repo/pytest.ini" "$work/"
# One pytest argument per line (mutmut splits a value on newlines only). Mutants run in workers forked
# from a fork server that has only collected the tests: forking a process that has run JAX deadlocks.
extra=""
[ -n "$select" ] && extra=$'\n    -k\n    '"$select"
cat > "$work/setup.cfg" <<CFG
[mutmut]
source_paths = $module
also_copy = memr1_jax/
    configs/
pytest_add_cli_args_test_selection = $tests
pytest_add_cli_args =
    -p
    no:xdist
    -p
    no:cacheprovider
    -o
    addopts=
    --no-header$extra
process_isolation = forkserver
CFG
cd "$work"
mutmut run > run.log 2>&1 || { tail -20 run.log; exit 1; }
mutmut results --all true > results.txt 2>/dev/null
# mutmut's own summary is a progress line; count the final statuses instead
awk -F': ' 'NF == 2 {n[$2]++; t++} END {for (s in n) printf "%s %d, ", s, n[s]; printf "of %d mutants\n", t}' results.txt
grep -v ": killed" results.txt || true
[ -z "${MUTATION_KEEP:-}" ] || echo "kept: $work"
