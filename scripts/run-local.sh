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
# Names the plugin this quickstart created, until its cleanup is done: a quickstart killed with
# SIGKILL leaves it (and its emulator, whose PID is in emulator.pid) for the next run to undo.
marker=$run/created-plugin

# The Docker side of the quickstart: containers using the plugin's volumes, the volumes, the plugin.
# Only ever for a plugin this quickstart created (checked before it is called).
# A subshell, so its `set +e` (carry on past a failed step) ends with it.
undo_docker() (
  set +e
  docker volume ls --format '{{.Driver}} {{.Name}}' | awk -v d="$1:latest" '$1 == d {print $2}' |
    while read -r volume; do
      users=$(docker ps -aq --filter "volume=$volume")
      [ -z "$users" ] || echo "+ docker rm -f $users (they use $volume)"
      [ -z "$users" ] || docker rm -f $users >/dev/null
      echo "+ docker volume rm $volume"
      docker volume rm -f "$volume" >/dev/null
    done
  echo "+ docker plugin disable -f $1 && docker plugin rm -f $1"
  docker plugin disable -f "$1" >/dev/null 2>&1
  docker plugin rm -f "$1" >/dev/null
  rm -f "$marker"
)

stop_emulator() {
  # The emulator unmounts its datasets and its shared mount root when it stops.
  kill "$1" 2>/dev/null
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
  rm -f "$run/emulator.pid"
}

cleanup() {
  trap - EXIT
  # A second Ctrl-C must not cut the cleanup short (the children inherit the ignore).
  trap '' INT TERM HUP
  set +e
  echo
  echo "cleaning up, please wait"
  # Docker's side first, while the plugin and the control service still answer. Volumes of a
  # plugin that is gone (and containers using them) can stop dockerd 20.10 from starting.
  [ -z "$created" ] || undo_docker "$name"
  [ -z "$plugin" ] || kill "$plugin" 2>/dev/null
  [ -z "$emulator" ] || stop_emulator "$emulator"
  wait 2>/dev/null
  echo "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# What an earlier quickstart killed with SIGKILL left behind: its plugin (undone first, while its
# emulator may still answer, so its volumes go cleanly), then its emulator.
if [ -n "$engine" ] && [ -f "$marker" ] && docker plugin inspect "$(cat "$marker")" >/dev/null 2>&1; then
  echo "+ removing the plugin an earlier quickstart left behind"
  undo_docker "$(cat "$marker")"
fi
rm -f "$marker"
if [ -f "$run/emulator.pid" ]; then
  old=$(cat "$run/emulator.pid")
  if [ "$(cat "/proc/$old/comm" 2>/dev/null)" = flocker-emulato ]; then
    echo "+ stopping the emulator an earlier quickstart left running (pid $old)"
    stop_emulator "$old"
  fi
  rm -f "$run/emulator.pid"
fi

# Never touch what the quickstart did not make: an installed plugin of that name (even disabled),
# volumes of such a driver, or a legacy plugin of that name.
if [ -n "$engine" ]; then
  why=
  if docker plugin inspect "$name" >/dev/null 2>&1; then
    why="a plugin named $name is installed on this engine"
  elif docker volume ls --format '{{.Driver}}' | grep -Eq "^$name(:|\$)"; then
    why="volumes of a driver named $name exist on this engine"
  else
    for dir in /run/docker/plugins /etc/docker/plugins /usr/lib/docker/plugins; do
      for file in "$dir/$name.sock" "$dir/$name.spec" "$dir/$name.json"; do
        [ -e "$file" ] && why="a legacy plugin $name is registered ($file)"
      done
    done
  fi
  if [ -n "$why" ]; then
    echo "run-local: $why, and the quickstart never touches what it did not make;" \
      "give the quickstart's plugin another name: PLUGIN_NAME=flocker-demo make run" >&2
    exit 1
  fi
fi

cargo build --quiet --bins
if [ -n "$engine" ]; then
  # Everything make plugin prints goes to stderr, so stdout stays the quickstart's own messages.
  echo "$name" > "$marker"
  created=yes
  ${MAKE:-make} --no-print-directory plugin PLUGIN_NAME="$name" >&2
fi

# In its own session: a Ctrl-C reaches this script, which stops the emulator last.
setsid "$bin/flocker-emulator" serve --listen "127.0.0.1:$port" --certs "$run/certs" --generate-certs \
  --data-dir "$run/data" --mount-root "$run/flocker" --share-mount-root --lag 1s >&2 &
emulator=$!
echo "$emulator" > "$run/emulator.pid"
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
