#!/bin/sh
# Fuzz the parsers with atheris: fuzz/run.sh [libFuzzer options]. Default: 60 s.
# Installs atheris into fuzz/.venv on first use (never into the project's environment).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
    "$here/.venv/bin/pip" install --quiet atheris
fi
mkdir -p "$here/corpus"
cp -n "$here/../tests/http/vectors"/*/*.http "$here/corpus/" 2>/dev/null || true
cd "$here"
if [ "$#" -eq 0 ]; then
    set -- -max_total_time=60
fi
exec "$here/.venv/bin/python" "$here/fuzz_parser.py" "$@" "$here/corpus"
