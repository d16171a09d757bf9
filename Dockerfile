# The operator: one static binary (musl) on distroless/static, as an unprivileged user.
#   docker build -t ghcr.io/jetway-dev/jetway:0.1.0 .
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p jetway --bin jetway \
 && cp target/release/jetway /jetway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /jetway /usr/local/bin/jetway
USER 65532:65532
EXPOSE 8080 6443
ENTRYPOINT ["/usr/local/bin/jetway"]
CMD ["run"]
