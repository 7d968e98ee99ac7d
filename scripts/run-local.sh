#!/usr/bin/env bash
# Quickstart: the control-service emulator (with its dataset agent) on this machine, with freshly
# generated certificates, and the plugin configured against it:
# - with a Docker engine answering: the managed plugin (`make plugin`), installed and enabled as
#   `flocker`, so `docker volume create -d flocker` and `docker run -v` work;
# - without one: the plugin binary in legacy mode on a socket, driven with curl.
# Ctrl-C (or SIGTERM) undoes it all: the Docker side (the containers using the plugin's volumes, the
# volumes, the plugin), then the emulator, which unmounts what it mounted.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "run-local: needs root: the emulated dataset agent bind-mounts datasets" >&2
  exit 1
fi

run=$PWD/.run
bin=$PWD/target/debug
port=${PORT:-4523}
name=${PLUGIN_NAME:-flocker}
socket=${SOCKET:-/run/docker/plugins/flocker.sock}
engine=
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=yes; fi
mkdir -p "$run/flocker" "$run/state"

emulator= plugin= created=
cleanup() {
  trap - EXIT INT TERM
  set +e
  echo
  if [ -n "$created" ]; then
    # Docker's side first, while the plugin and the control service still answer. Volumes of a
    # plugin that is gone (and containers using them) can stop dockerd 20.10 from starting.
    docker volume ls --format '{{.Driver}} {{.Name}}' | awk -v d="$name" '$1 == d || $1 == d ":latest" {print $2}' |
      while read -r volume; do
        users=$(docker ps -aq --filter "volume=$volume")
        [ -z "$users" ] || echo "+ docker rm -f $users (they use $volume)"
        [ -z "$users" ] || docker rm -f $users >/dev/null
        echo "+ docker volume rm $volume"
        docker volume rm -f "$volume" >/dev/null
      done
    echo "+ docker plugin disable -f $name && docker plugin rm -f $name"
    docker plugin disable -f "$name" >/dev/null
    docker plugin rm -f "$name" >/dev/null
  fi
  [ -z "$plugin" ] || kill "$plugin" 2>/dev/null
  if [ -n "$emulator" ]; then
    # The emulator unmounts its datasets and its shared mount root when it stops.
    kill "$emulator" 2>/dev/null
    while kill -0 "$emulator" 2>/dev/null; do sleep 0.1; done
  fi
  wait 2>/dev/null
  echo "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "$engine" ] && [ "$(docker plugin inspect -f '{{.Enabled}}' "$name" 2>/dev/null)" = true ]; then
  echo "run-local: the plugin $name is enabled on this engine, and the quickstart would replace it;" \
    "disable it first (docker plugin disable $name) or use another name (PLUGIN_NAME=…)" >&2
  exit 1
fi

cargo build --quiet --bins
if [ -n "$engine" ]; then
  # Everything make plugin prints goes to stderr, so stdout stays the quickstart's own messages.
  ${MAKE:-make} --no-print-directory plugin PLUGIN_NAME="$name" >&2
  created=yes
fi

# In its own session: a Ctrl-C reaches this script, which stops the emulator last.
setsid "$bin/flocker-emulator" serve --listen "127.0.0.1:$port" --certs "$run/certs" --generate-certs \
  --data-dir "$run/data" --mount-root "$run/flocker" --share-mount-root --lag 1s >&2 &
emulator=$!
for _ in $(seq 100); do
  [ -f "$run/certs/plugin.key" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$emulator" 2>/dev/null || { echo "run-local: the emulator did not start" >&2; exit 1; }
  sleep 0.1
done

if [ -n "$engine" ]; then
  # The managed plugin, as on a Flocker node: the agent's mount root (a shared mount, made so by the
  # emulator) and the certificates are the plugin's mounts; its node is found by this boot's era.
  docker plugin set "$name" CONTROL_URL="https://127.0.0.1:$port" certs.source="$run/certs" \
    flocker.source="$run/flocker" AGENT_MOUNT_ROOT="$run/flocker" DEFAULT_SIZE=1G MOUNT_TIMEOUT=30s
  docker plugin enable --timeout 120 "$name" >/dev/null
  cat <<MSG

  Control-service emulator: https://127.0.0.1:$port (certificates in $run/certs)
  Managed plugin:           $name (docker plugin inspect $name), datasets mounted under $run/flocker

  Use it:
    docker volume create -d $name demo
    docker run --rm -v demo:/data busybox sh -c 'echo hello > /data/greeting'
    docker run --rm -v demo:/data busybox cat /data/greeting

  Look at the control service:
    curl -s --cacert $run/certs/cluster.crt --cert $run/certs/plugin.crt --key $run/certs/plugin.key \\
      https://127.0.0.1:$port/v1/configuration/datasets

  Ctrl-C stops it all: removes the containers using $name volumes, the volumes and the plugin.
MSG
else
  # Legacy (v1) mode: the plugin runs in the host's mount namespace, so it hands Docker the agent's
  # own mount path. The node identity is discovered by era, as on a real Flocker node.
  CONTROL_URL="https://127.0.0.1:$port" CERTS_DIR="$run/certs" SOCKET="$socket" \
  AGENT_MOUNT_ROOT="$run/flocker" FLOCKER_ROOT="$run/flocker" PROPAGATED_MOUNT= \
  STATE_DIR="$run/state" DEFAULT_SIZE=1G MOUNT_TIMEOUT=30s \
    "$bin/flocker-docker-plugin" &
  plugin=$!
  for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
  cat <<MSG

  Control-service emulator: https://127.0.0.1:$port (certificates in $run/certs)
  Plugin socket:            $socket (legacy mode: no Docker engine answered)

  Drive the plugin by hand:
    curl -s --unix-socket $socket -d '{"Name":"demo","Opts":{"size":"1G"}}' http://x/VolumeDriver.Create
    curl -s --unix-socket $socket -d '{"Name":"demo","ID":"c1"}' http://x/VolumeDriver.Mount
    curl -s --unix-socket $socket -d '{}' http://x/VolumeDriver.List
    curl -s --unix-socket $socket -d '{"Name":"demo","ID":"c1"}' http://x/VolumeDriver.Unmount

  Look at the control service:
    curl -s --cacert $run/certs/cluster.crt --cert $run/certs/plugin.crt --key $run/certs/plugin.key \\
      https://127.0.0.1:$port/v1/configuration/datasets

  Ctrl-C stops both.
MSG
fi
echo "quickstart ready"
wait "$emulator"
