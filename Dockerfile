# The initguard image: the static binary and nothing else. It is what `initguard k8s inject
# --install IMAGE` expects (the binary at /usr/local/bin/initguard, which copies itself into the
# Pod's emptyDir with `initguard install`), and what `COPY --from=` takes the binary from.
#
# No Rust toolchain in the build: build the binary first, then the image:
#   cargo build --release --target x86_64-unknown-linux-musl
#   docker build -t initguard:0.1.0 .
FROM scratch
# .ci/static-chroot builds the image from the dev-profile static binary to save build time.
ARG BINARY=target/x86_64-unknown-linux-musl/release/initguard
COPY ${BINARY} /usr/local/bin/initguard
ENTRYPOINT ["/usr/local/bin/initguard"]
