#!/usr/bin/env bash
# Mutation testing of one pure-Python module with mutmut, on a scratch copy of the checkout (mutmut
# writes mutants/ beside the sources). Prints mutmut's final counts and the surviving mutants.
#   bash scripts/mutation.sh memr1_jax/service/filters.py tests/test_filters.py
# Needs: pip install mutmut==3.8.1 (not a project dependency).
set -euo pipefail
module=$1; tests=$2; select=${3:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/memr1_jax" "$repo/tests" "$repo/configs" "$repo/setup.py" "$repo/pytest.ini" "$work/"
cat > "$work/setup.cfg" <<CFG
[mutmut]
paths_to_mutate = $module
also_copy = memr1_jax/
    configs/
tests_dir = $tests
pytest_add_cli_args = -p no:xdist -q -x --no-header -o addopts="" -p no:cacheprovider ${select:+-k "$select"}
CFG
cd "$work"
mutmut run 2>&1 | tr '\r' '\n' | grep -E "^[^ ]* +[0-9]+/[0-9]+" | tail -1
mutmut results 2>/dev/null | grep -v ": killed" || true
