#!/bin/sh
# One-shot (service temporal-setup): once the Temporal frontend answers, create docindex's
# namespace and register its custom search attributes. Arguments are NAME=TYPE pairs, e.g.
#   setup-namespace.sh IndexingRunId=Keyword DocumentId=Keyword
# Idempotent: an existing namespace or attribute is left as it is.
set -eu

NAMESPACE=${TEMPORAL_NAMESPACE:-default}
RETENTION=${TEMPORAL_NAMESPACE_RETENTION:-168h}
ADDRESS=${TEMPORAL_ADDRESS:-temporal:7233}
ATTEMPTS=${SETUP_ATTEMPTS:-60}

# The CLI dials the first address a name resolves to; the server listens on IPv4 only.
host=${ADDRESS%:*}
port=${ADDRESS##*:}
ip=$(getent ahostsv4 "$host" 2>/dev/null | awk 'NR == 1 { print $1 }') || ip=""
if [ -n "$ip" ]; then
  ADDRESS="$ip:$port"
fi

retry() {  # retry WHAT COMMAND...: run COMMAND until it succeeds, at most $ATTEMPTS times
  what=$1
  shift
  n=1
  until "$@" >/dev/null 2>&1; do
    if [ "$n" -ge "$ATTEMPTS" ]; then
      echo "temporal-setup: gave up waiting for $what" >&2
      "$@"  # once more, with its error shown
      return 1
    fi
    n=$((n + 1))
    sleep 2
  done
}

echo "temporal-setup: waiting for the Temporal frontend at $ADDRESS"
retry "the cluster to be healthy" temporal operator cluster health --address "$ADDRESS"

if temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" \
    >/dev/null 2>&1; then
  echo "temporal-setup: namespace $NAMESPACE exists"
else
  echo "temporal-setup: creating namespace $NAMESPACE (retention $RETENTION)"
  temporal operator namespace create --address "$ADDRESS" --namespace "$NAMESPACE" \
    --retention "$RETENTION"
fi

# A new namespace reaches every frontend's cache after a few seconds.
retry "namespace $NAMESPACE" \
  temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE"

existing=$(temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE")
probe=""
for pair in "$@"; do
  name=${pair%%=*}
  type=${pair#*=}
  if printf '%s\n' "$existing" | grep -qw -- "$name"; then
    echo "temporal-setup: search attribute $name exists"
  else
    echo "temporal-setup: creating search attribute $name ($type)"
    temporal operator search-attribute create --address "$ADDRESS" --namespace "$NAMESPACE" \
      --name "$name" --type "$type"
  fi
  if [ "$type" = "Keyword" ]; then
    probe="$name = 'temporal-setup-probe'"
  fi
done

# Only finish once a visibility query that uses the attributes is accepted, so the workers and
# the API that start after this service never meet an "unknown search attribute" error.
if [ -n "$probe" ]; then
  retry "search attributes to be queryable" temporal workflow count --address "$ADDRESS" \
    --namespace "$NAMESPACE" --query "$probe" \
    || echo "temporal-setup: warning: attributes registered but not queryable yet" >&2
fi
echo "temporal-setup: done"
