# Shared helper for ci/ scripts: make_venv DIR STAMP_INPUTS... ; returns 0 when DIR is up to date.
# A venv is rebuilt only when the files that define it change (their hash is kept in DIR/.stamp).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

venv_fresh() {  # venv_fresh DIR FILES... -> 0 if DIR exists and was built from these FILES
  local dir="$1"; shift
  local want; want="$(cat "$@" | sha256sum | cut -d' ' -f1)"
  [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$want" ]
}

venv_stamp() {  # venv_stamp DIR FILES...
  local dir="$1"; shift
  cat "$@" | sha256sum | cut -d' ' -f1 > "$dir/.stamp"
}
