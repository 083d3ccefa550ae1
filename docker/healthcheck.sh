#!/bin/bash
# Container health check: the broker is healthy when its metrics endpoint
# answers `GET /metrics` with HTTP 200. An open port alone is not enough (the
# kernel accepts connections into the backlog of a hung process); an HTTP
# answer needs the broker's runtime to be serving. bash's /dev/tcp, because
# the image has no curl.
set -euo pipefail
port="${BROKER_HEALTH_PORT:-9090}"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 4 status <&3
[[ "$status" == HTTP/1.?" 200"* ]]
