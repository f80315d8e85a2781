#!/usr/bin/env bash
# bench/store_redis.sh -- durable QoS 1 with the store in RocksDB and in
# Redis (persistence.backend: redis), sync always and none: bench/compare.sh's
# durable scenario (10 -> 10 persistent sessions, QoS 1, 100 in flight per
# publisher, flat out) on antenna-always, antenna-none, antenna-redis-always
# (Redis appendonly yes, appendfsync always) and antenna-redis-none
# (appendfsync everysec), alternating, medians of --runs (default 3).
#
#   bench/store_redis.sh [--runs N] [--out DIR]
#
# Needs build/antenna, build/antenna-bench and redis-server (Debian's).
# Results: docs/benchmarks.md, "Durable QoS 1 with the store in Redis".
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURABLE_BROKERS="antenna-always antenna-none antenna-redis-always antenna-redis-none" \
    exec "$ROOT/bench/compare.sh" --brokers "" "$@" durable
