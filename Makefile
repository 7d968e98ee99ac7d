# Thin targets; the logic lives in Cargo and scripts/. Every target echoes what it runs.
PLUGIN_NAME ?= flocker
# The version baked into the binary (--version) and the bundle's config.json description.
CRATE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
VERSION     ?= $(CRATE_VERSION)
# Where `make bundle` assembles config.json + rootfs/ (`make plugin` and `make push` use it).
BUNDLE      ?= plugin
# `make push`: $(REGISTRY)/clusterhq/flocker:$(TAG) (Docker Hub when REGISTRY is empty).
REGISTRY    ?=
TAG         ?= $(VERSION)
IMAGE       := $(if $(REGISTRY),$(REGISTRY)/)clusterhq/flocker:$(TAG)
# The end-to-end upgrade scenario's second bundle: this version with the patch level plus one.
NEXT_VERSION := $(shell echo $(CRATE_VERSION) | awk -F. '{print $$1 "." $$2 "." $$3 + 1}')
NEXT_BUNDLE  := target/e2e-next
TARGET      := x86_64-unknown-linux-musl
BINARY      := target/$(TARGET)/release/flocker-docker-plugin
ROOTFS      := $(BUNDLE)/rootfs
# Mounts made by the tests stay in a private mount namespace, never on the host.
ISOLATE     := $(shell [ "$$(id -u)" = 0 ] && echo unshare --mount --propagation private)

.PHONY: all musl build bundle plugin push enable run test e2e lint bench bench-fleet bench-engine clean

all: lint test build

## musl: the Rust musl target and musl-tools, installed if missing (or the command to run)
musl:
	@scripts/ensure-musl.sh

## build: static musl release binary, without the emulator (ring only: fails if aws-lc-sys enters the tree)
build: musl
	@if cargo tree --target $(TARGET) --no-default-features -i aws-lc-sys >/dev/null 2>&1; then \
	  echo "aws-lc-sys is in the dependency tree; keep rustls on ring" >&2; exit 1; fi
	FLOCKER_PLUGIN_VERSION=$(VERSION) cargo build --release --target $(TARGET) --no-default-features --bin flocker-docker-plugin
	@ls -l $(BINARY) | awk '{print "binary size:", $$5, "bytes"}'

## bundle: assemble $(BUNDLE)/{config.json,rootfs}, version $(VERSION) in the binary and the description
bundle: build
	rm -rf $(ROOTFS)
	mkdir -p $(ROOTFS)/run/docker/plugins $(ROOTFS)/etc/flocker $(ROOTFS)/flocker \
	  $(ROOTFS)/mnt/flocker $(ROOTFS)/var/lib/flocker-docker-plugin
	cp $(BINARY) $(ROOTFS)/flocker-docker-plugin
	sed 's/for Docker $(CRATE_VERSION):/for Docker $(VERSION):/' config.json > $(BUNDLE)/config.json
	@grep -q 'for Docker $(VERSION):' $(BUNDLE)/config.json \
	  || { echo "config.json's description does not name version $(CRATE_VERSION)" >&2; exit 1; }
	@du -sb $(ROOTFS) | awk '{print "rootfs size:", $$1, "bytes"}'

## plugin: the bundle, then docker plugin create $(PLUGIN_NAME) (disabled; make enable)
plugin: bundle
	-docker plugin rm -f $(PLUGIN_NAME) 2>/dev/null
	docker plugin create $(PLUGIN_NAME) $(BUNDLE)

## push: the bundle, then docker plugin create + push $(IMAGE) (make push REGISTRY=host:5000 TAG=…; RELEASE=1 for Docker Hub)
push: bundle
	@[ -n "$(REGISTRY)" ] || [ "$(RELEASE)" = 1 ] || { echo "make push: set REGISTRY=host:port" \
	  "(or RELEASE=1 to push $(IMAGE) to Docker Hub)" >&2; exit 1; }
	-docker plugin rm $(IMAGE) 2>/dev/null
	docker plugin create $(IMAGE) $(BUNDLE)
	docker plugin push $(IMAGE)
	docker plugin rm $(IMAGE)

## enable: enable the plugin (set values first: make enable SETTINGS="CONTROL_URL=https://control:4523")
enable:
	@[ -z "$(SETTINGS)" ] || docker plugin set $(PLUGIN_NAME) $(SETTINGS)
	docker plugin enable --timeout 120 $(PLUGIN_NAME)

## run: quickstart: emulator + the managed plugin `flocker` (legacy socket mode without an engine); Ctrl-C undoes it
run:
	scripts/run-local.sh

## test: the whole suite (unit + integration); as root inside a private mount namespace
test:
	$(ISOLATE) cargo test --lib --bins --test integration

## e2e: the managed plugin with the real Docker engine (host mount namespace, root, dockerd running);
## first the bundle of the next version (the upgrade scenario), then this version's plugin, so the
## binary left in target/ is this version's
e2e:
	$(MAKE) --no-print-directory bundle VERSION=$(NEXT_VERSION) BUNDLE=$(NEXT_BUNDLE)
	$(MAKE) --no-print-directory plugin
	cargo test --test e2e

## bench: benchmark reports (mount wait and requests per call; socket responsiveness under load); needs root
bench:
	$(ISOLATE) cargo bench --bench mount_wait --bench responsiveness --bench decode_cost

## bench-fleet: 100 plugin processes, one emulator process with 10,000 datasets, churn and a restart (~3 min); needs root
bench-fleet:
	$(ISOLATE) cargo bench --bench fleet

## bench-engine: docker commands with a flocker volume vs the local driver, through the real engine (root, dockerd)
bench-engine:
	$(MAKE) --no-print-directory plugin PLUGIN_NAME=flocker-bench
	cargo bench --bench engine

## lint: formatting, clippy (warnings are errors; also the plugin-only build), unused dependencies
lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --no-default-features --lib --bins -- -D warnings
	cargo machete

clean:
	cargo clean
	rm -rf plugin/rootfs plugin/config.json .run
