#!/usr/bin/env bash
# Builds the pinned helm (this directory's go.mod) into the shared cache, once per version, and
# prints the binary's path. Safe to run concurrently: one build at a time under a file lock, into a
# staging file renamed into place, so a killed build never leaves a broken binary behind.
#
#   ${AZUREML_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/azureml-operator}/helm/<version>/helm
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The version is read from go.mod so the cache key can never disagree with what is built.
version="$(awk '$1 == "helm.sh/helm/v4" { print $2 }' "$here/go.mod")"
if [[ -z "$version" ]]; then
  echo "error: no helm.sh/helm/v4 requirement in $here/go.mod" >&2
  exit 1
fi

cache="${AZUREML_OPERATOR_CACHE:-${XDG_CACHE_HOME:-${HOME:?HOME is unset}/.cache}/azureml-operator}"
dir="$cache/helm/$version"
bin="$dir/helm"

if [[ ! -x "$bin" ]]; then
  mkdir -p "$dir"
  exec 9>"$dir/.build.lock"
  flock 9
  # Another process may have finished the build while this one waited for the lock.
  if [[ ! -x "$bin" ]]; then
    echo "building helm $version into $dir (once per version; takes a few minutes)" >&2
    staging="$dir/.helm.staging-$$"
    (
      cd "$here"
      # GOTOOLCHAIN=local: never download another Go toolchain; CGO_ENABLED=0: static, no C compiler.
      GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
        -o "$staging" helm.sh/helm/v4/cmd/helm
    ) >&2
    mv -f "$staging" "$bin"
  fi
fi
echo "$bin"
