#!/bin/sh
# Init container of every Redis pod: decides whether it starts as master or as a replica and
# writes /runtime/redis.conf. The order of questions is what prevents the classic failures:
#  1. Ask the sentinels first: they know the current master after any failover, so a restarted
#     pod (old master included) rejoins as a replica instead of coming back as a second master.
#  2. If the sentinels still name this very pod as master, it was restarted before they failed
#     over: wait for the failover so a replica with the data is promoted, rather than serving
#     (and replicating) whatever this pod has on disk.
#  3. If no sentinel knows a master (fresh group, or every sentinel restarted), ask the other
#     Redis pods which one is master.
#  4. Only ordinal 0 may bootstrap an empty group as master; the others wait for it.
# Addresses are stable DNS names of the headless Service, never pod IPs, so nothing goes stale
# when a pod is rescheduled with a new IP.
set -eu
ORDINAL="${POD_NAME##*-}"
DOMAIN="$NAMESPACE.svc.$CLUSTER_DOMAIN"
SELF="$POD_NAME.$REDIS_HEADLESS.$DOMAIN"
# Overridable so the script can be tested outside a pod.
CONFIG_DIR="${CONFIG_DIR:-/config}"
CONF="${RUNTIME_DIR:-/runtime}/redis.conf"

# Prints the first answer that looks like a host name, or nothing.
ask_sentinels() {
  i=0
  while [ "$i" -lt "$SENTINELS" ]; do
    host="$SENTINEL_STS-$i.$SENTINEL_HEADLESS.$DOMAIN"
    addr=$(timeout 3 redis-cli -h "$host" -p 26379 --raw SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)
    case "$addr" in
      "" | *" "* | ERR* | NOAUTH*) ;;
      *) echo "$addr"; return 0 ;;
    esac
    i=$((i + 1))
  done
}

ask_peers() {
  i=0
  while [ "$i" -lt "$REDIS_REPLICAS" ]; do
    if [ "$i" != "$ORDINAL" ]; then
      host="$REDIS_STS-$i.$REDIS_HEADLESS.$DOMAIN"
      role=$(timeout 3 redis-cli -h "$host" -p 6379 --raw ROLE 2>/dev/null | head -n 1 || true)
      if [ "$role" = "master" ]; then echo "$host"; return 0; fi
    fi
    i=$((i + 1))
  done
}

cp "$CONFIG_DIR/redis.conf" "$CONF"
{
  echo "replica-announce-ip $SELF"
  echo "replica-announce-port 6379"
} >> "$CONF"
# The password comes from a Secret (env), so it goes into the runtime config in the emptyDir,
# never into the ConfigMap. masterauth too: any pod may become a replica after a failover.
# redis-cli below authenticates through REDISCLI_AUTH (ignored, with a warning on stderr, by
# the sentinels, which have no password).
if [ -n "${REDIS_PASSWORD:-}" ]; then
  {
    echo "requirepass $REDIS_PASSWORD"
    echo "masterauth $REDIS_PASSWORD"
  } >> "$CONF"
fi

deadline=$(( $(date +%s) + FAILOVER_WAIT_SECONDS ))
while :; do
  master=$(ask_sentinels)
  if [ "$master" = "$SELF" ]; then
    if [ "$(date +%s)" -lt "$deadline" ]; then
      echo "sentinels still name this pod as master; waiting for them to fail over"
      sleep 2
      continue
    fi
    echo "no failover happened; starting as master from the persisted data"
    exit 0
  fi
  if [ -z "$master" ]; then
    master=$(ask_peers)
  fi
  if [ -n "$master" ]; then
    echo "replicaof $master 6379" >> "$CONF"
    echo "starting as a replica of $master"
    exit 0
  fi
  if [ "$ORDINAL" = "0" ]; then
    echo "no master known anywhere: ordinal 0 bootstraps the group as master"
    exit 0
  fi
  echo "no master known yet; waiting for ordinal 0 to bootstrap"
  sleep 2
done
