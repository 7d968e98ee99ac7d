#!/usr/bin/env bash
# Quickstart: the control-service emulator (with its dataset agent) and the plugin, side by side on
# this machine, with freshly generated certificates. Ctrl-C stops both and unmounts what they mounted.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "run-local: needs root: the emulated dataset agent bind-mounts datasets" >&2
  exit 1
fi

run=$PWD/.run
bin=$PWD/target/debug
socket=${SOCKET:-/run/docker/plugins/flocker.sock}
port=${PORT:-4523}
mkdir -p "$run/flocker" "$run/state"

cargo build --quiet --bins

"$bin/flocker-emulator" serve --listen "127.0.0.1:$port" --certs "$run/certs" --generate-certs \
  --data-dir "$run/data" --mount-root "$run/flocker" --share-mount-root --lag 1s &
emulator=$!
trap 'kill $emulator ${plugin:-} 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for _ in $(seq 50); do [ -f "$run/certs/plugin.key" ] && break; sleep 0.1; done

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
  Plugin socket:            $socket

  Drive the plugin by hand:
    curl -s --unix-socket $socket -d '{"Name":"demo","Opts":{"size":"1G"}}' http://x/VolumeDriver.Create
    curl -s --unix-socket $socket -d '{"Name":"demo","ID":"c1"}' http://x/VolumeDriver.Mount
    curl -s --unix-socket $socket -d '{}' http://x/VolumeDriver.List
    curl -s --unix-socket $socket -d '{"Name":"demo","ID":"c1"}' http://x/VolumeDriver.Unmount

  Look at the control service:
    curl -s --cacert $run/certs/cluster.crt --cert $run/certs/plugin.crt --key $run/certs/plugin.key \\
      https://127.0.0.1:$port/v1/configuration/datasets

  With a Docker engine running (driver name "flocker"):
    docker volume create -d flocker -o size=1G demo
    docker run --rm -v demo:/data --volume-driver=flocker IMAGE sh -c 'echo hi > /data/hello'

  Ctrl-C stops both.
MSG
wait
