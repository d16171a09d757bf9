# Static (musl) binaries on distroless/static, as an unprivileged user. Two images:
#   docker build --target operator -t ghcr.io/jetway-dev/jetway:0.1.0 .
#   docker build --target workers  -t ghcr.io/jetway-dev/jetway-workers:0.1.0 .
# The workers image holds every worker binary and the payment gateway simulator; a
# WorkerPool picks one with `command`, e.g. ["jetway-payment"].
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p jetway --bin jetway -p jetway-workers --bins \
 && mkdir -p /out/operator /out/workers \
 && cp target/release/jetway /out/operator/ \
 && cp target/release/jetway-intake target/release/jetway-payment target/release/jetway-inventory \
       target/release/jetway-audit target/release/jetway-gateway target/release/jetway-schemas /out/workers/

FROM gcr.io/distroless/static-debian12:nonroot AS workers
COPY --from=build /out/workers/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080
CMD ["jetway-intake"]

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /out/operator/jetway /usr/local/bin/jetway
USER 65532:65532
EXPOSE 8080 6443
ENTRYPOINT ["/usr/local/bin/jetway"]
CMD ["run"]
