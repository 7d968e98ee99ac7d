# Thin targets; the logic lives in Cargo and scripts/. Every target echoes what it runs.
PLUGIN_NAME ?= flocker
TARGET      := x86_64-unknown-linux-musl
BINARY      := target/$(TARGET)/release/flocker-docker-plugin
ROOTFS      := plugin/rootfs
# Mounts made by the tests stay in a private mount namespace, never on the host.
ISOLATE     := $(shell [ "$$(id -u)" = 0 ] && echo unshare --mount --propagation private)

.PHONY: all musl build plugin enable run test e2e lint bench bench-fleet clean

all: lint test build

## musl: the Rust musl target and musl-tools, installed if missing (or the command to run)
musl:
	@scripts/ensure-musl.sh

## build: static musl release binary, without the emulator (ring only: fails if aws-lc-sys enters the tree)
build: musl
	@if cargo tree --target $(TARGET) --no-default-features -i aws-lc-sys >/dev/null 2>&1; then \
	  echo "aws-lc-sys is in the dependency tree; keep rustls on ring" >&2; exit 1; fi
	cargo build --release --target $(TARGET) --no-default-features --bin flocker-docker-plugin
	@ls -l $(BINARY) | awk '{print "binary size:", $$5, "bytes"}'

## plugin: assemble plugin/{config.json,rootfs} and docker plugin create $(PLUGIN_NAME)
plugin: build
	rm -rf $(ROOTFS)
	mkdir -p $(ROOTFS)/run/docker/plugins $(ROOTFS)/etc/flocker $(ROOTFS)/flocker \
	  $(ROOTFS)/mnt/flocker $(ROOTFS)/var/lib/flocker-docker-plugin
	cp $(BINARY) $(ROOTFS)/flocker-docker-plugin
	cp config.json plugin/config.json
	@du -sb $(ROOTFS) | awk '{print "rootfs size:", $$1, "bytes"}'
	-docker plugin rm -f $(PLUGIN_NAME) 2>/dev/null
	docker plugin create $(PLUGIN_NAME) plugin

## enable: enable the plugin (set values first: make enable SETTINGS="CONTROL_URL=https://control:4523")
enable:
	@[ -z "$(SETTINGS)" ] || docker plugin set $(PLUGIN_NAME) $(SETTINGS)
	docker plugin enable --timeout 120 $(PLUGIN_NAME)

## run: quickstart: emulator + plugin on /run/docker/plugins/flocker.sock
run:
	scripts/run-local.sh

## test: the whole suite (unit + integration); as root inside a private mount namespace
test:
	$(ISOLATE) cargo test --lib --bins --test integration

## e2e: the managed plugin with the real Docker engine (host mount namespace, root, dockerd running)
e2e: plugin
	cargo test --test e2e

## bench: benchmark reports (mount wait and requests per call; socket responsiveness under load); needs root
bench:
	$(ISOLATE) cargo bench --bench mount_wait --bench responsiveness --bench decode_cost

## bench-fleet: 100 plugin processes, one emulator process with 10,000 datasets, churn and a restart (~3 min); needs root
bench-fleet:
	$(ISOLATE) cargo bench --bench fleet

## lint: formatting, clippy (warnings are errors; also the plugin-only build), unused dependencies
lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --no-default-features --lib --bins -- -D warnings
	cargo machete

clean:
	cargo clean
	rm -rf $(ROOTFS) plugin/config.json .run
