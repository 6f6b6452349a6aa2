# Shared helpers for ci/ scripts. A venv is rebuilt only when the files that define its heavy
# dependencies change (their hash is kept in DIR/.stamp); our own package is always reinstalled
# (editable, cheap) so entry points follow pyproject.toml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
# Virtualenvs live outside the checkout so a fresh clone (CI) reuses them when they are up to date.
VENVS="${HUNYUAN_VENVS:-$HOME/.cache/hunyuan-plugins/venvs}"
mkdir -p "$VENVS"
export PIP_DISABLE_PIP_VERSION_CHECK=1

venv_fresh() {  # venv_fresh DIR FILES... -> 0 if DIR exists and was built from these FILES
  local dir="$1"; shift
  local want; want="$(cat "$@" | sha256sum | cut -d' ' -f1)"
  [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$want" ]
}

venv_stamp() {  # venv_stamp DIR FILES...
  local dir="$1"; shift
  cat "$@" | sha256sum | cut -d' ' -f1 > "$dir/.stamp"
}

pip_q() {  # pip_q VENV ARGS...: quiet pip, minus the machine's harmless local-index warnings
  local venv="$1"; shift
  "$venv/bin/pip" install -q "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  return "${PIPESTATUS[0]}"
}
