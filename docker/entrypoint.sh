#!/bin/sh
# Container entrypoint: `sttm ...` and other commands run as given (exec: signals reach the
# server, so SIGTERM drains in-flight requests); bare flags go to `sttm serve`.
set -eu
case "${1:-}" in
  -*) set -- sttm serve "$@" ;;
  "") set -- sttm serve ;;
esac
exec "$@"
