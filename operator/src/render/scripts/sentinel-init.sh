#!/bin/sh
# Init container of every sentinel pod: finds the master to monitor and writes
# /runtime/sentinel.conf (sentinel rewrites it at run time, so it lives in an emptyDir).
# Other sentinels are asked first (they track failovers), then the Redis pods; an empty group
# monitors ordinal 0, which is the only pod allowed to bootstrap as master.
# With REDIS_PASSWORD set, redis-cli authenticates through REDISCLI_AUTH: the data nodes need
# it; the other sentinels have no password and answer anyway (redis-cli only warns on stderr).
# Sentinels resolve and announce host names (resolve-hostnames, announce-hostnames), so the
# master address they hand to clients survives pod restarts with new IPs.
set -eu
ORDINAL="${POD_NAME##*-}"
DOMAIN="$NAMESPACE.svc.$CLUSTER_DOMAIN"
SELF="$POD_NAME.$SENTINEL_HEADLESS.$DOMAIN"
# Overridable so the script can be tested outside a pod.
CONF="${RUNTIME_DIR:-/runtime}/sentinel.conf"

ask_sentinels() {
  i=0
  while [ "$i" -lt "$SENTINELS" ]; do
    if [ "$i" != "$ORDINAL" ]; then
      host="$SENTINEL_STS-$i.$SENTINEL_HEADLESS.$DOMAIN"
      addr=$(timeout 3 redis-cli -h "$host" -p 26379 --raw SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)
      case "$addr" in
        "" | *" "* | ERR* | NOAUTH*) ;;
        *) echo "$addr"; return 0 ;;
      esac
    fi
    i=$((i + 1))
  done
}

ask_redis() {
  i=0
  while [ "$i" -lt "$REDIS_REPLICAS" ]; do
    host="$REDIS_STS-$i.$REDIS_HEADLESS.$DOMAIN"
    role=$(timeout 3 redis-cli -h "$host" -p 6379 --raw ROLE 2>/dev/null | head -n 1 || true)
    if [ "$role" = "master" ]; then echo "$host"; return 0; fi
    i=$((i + 1))
  done
}

while :; do
  master=$(ask_sentinels)
  [ -z "$master" ] && master=$(ask_redis)
  [ -z "$master" ] && master="$REDIS_STS-0.$REDIS_HEADLESS.$DOMAIN"
  # sentinel refuses to start when the monitored name does not resolve yet.
  if getent hosts "$master" > /dev/null 2>&1; then break; fi
  echo "waiting for $master to resolve"
  sleep 2
done

cat > "$CONF" <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
sentinel announce-port 26379
sentinel monitor $MASTER_NAME $master 6379 $QUORUM
sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS
sentinel failover-timeout $MASTER_NAME 60000
sentinel parallel-syncs $MASTER_NAME 1
CONF
# The data nodes' password (from a Secret, via env) so this sentinel can monitor and fail them
# over; the sentinel itself asks no password of its clients.
if [ -n "${REDIS_PASSWORD:-}" ]; then
  echo "sentinel auth-pass $MASTER_NAME $REDIS_PASSWORD" >> "$CONF"
fi
echo "monitoring $MASTER_NAME at $master with quorum $QUORUM"
