#!/bin/sh
# Fuzz the parsers with atheris: fuzz/run.sh [http|gateway] [libFuzzer options]. Default: the
# HTTP target (fuzz_parser.py) for 60 s; "gateway" fuzzes uwsgi and FastCGI (fuzz_gateway.py).
# Installs atheris into fuzz/.venv on first use (never into the project's environment).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
target=http
case "${1:-}" in
    http|gateway) target=$1; shift ;;
esac
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
    "$here/.venv/bin/pip" install --quiet atheris
fi
cd "$here"
if [ "$target" = gateway ]; then
    script=fuzz_gateway.py
    corpus="$here/corpus-gateway"
    if [ ! -d "$corpus" ]; then
        "$here/.venv/bin/python" "$here/$script" --write-seeds "$corpus"
    fi
else
    script=fuzz_parser.py
    corpus="$here/corpus"
    mkdir -p "$corpus"
    cp -n "$here/../tests/http/vectors"/*/*.http "$corpus/" 2>/dev/null || true
fi
if [ "$#" -eq 0 ]; then
    set -- -max_total_time=60
fi
exec "$here/.venv/bin/python" "$here/$script" "$@" "$corpus"
