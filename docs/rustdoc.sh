#!/usr/bin/env bash
# Builds the workspace's API documentation with rendered KaTeX formulas — the same command
# as the doc line of .ci/run. Extra arguments go to `cargo doc` (e.g. `--open`).
#
# The header is passed through RUSTDOCFLAGS with a path relative to the workspace root,
# where cargo runs rustdoc for workspace members. It is deliberately *not* set in
# .cargo/config.toml: `build.rustdocflags` would also apply to dependencies when
# documenting them (`cargo doc` without --no-deps), and rustdoc runs those from their own
# package directory, where the relative path does not exist (rustdoc then fails with
# "ExternalHtml::load failed").
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTDOCFLAGS="-D warnings --html-in-header docs/katex-header.html"
exec cargo doc --workspace --no-deps "$@"
