# Two-stage build of the plugin rootfs, for users with a registry. `make plugin` does the same
# without one: static musl binary (rustls on ring), nothing else in the image.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --target x86_64-unknown-linux-musl --no-default-features --bin flocker-docker-plugin \
 && mkdir -p /rootfs/run/docker/plugins /rootfs/etc/flocker /rootfs/flocker /rootfs/mnt/flocker \
      /rootfs/var/lib/flocker-docker-plugin \
 && cp target/x86_64-unknown-linux-musl/release/flocker-docker-plugin /rootfs/

FROM scratch
COPY --from=build /rootfs/ /
ENTRYPOINT ["/flocker-docker-plugin"]
