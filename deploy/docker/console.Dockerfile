# The console gateway (services/console): the web app and the HTTP API,
# gRPC over mutual TLS to the services. Built with node and protoc (types
# generated from proto/ and google/rpc from Debian's googleapis package);
# the runtime image holds only the compiled gateway, the built web app and
# the production packages, and runs as a non-root user.
#   docker build -f deploy/docker/console.Dockerfile -t labshare-console .
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
      golang-github-gogo-googleapis-dev \
 && rm -rf /var/lib/apt/lists/*
ENV PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
WORKDIR /src/services/console
COPY services/console/package.json services/console/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY proto /src/proto
COPY services/console/scripts ./scripts
COPY services/console/server ./server
COPY services/console/web ./web
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/services/console/package.json ./
COPY --from=build /src/services/console/node_modules ./node_modules
COPY --from=build /src/services/console/dist ./dist
USER 10001
EXPOSE 8080
# Flags: see services/console/server (deploy/docker-compose.yml and
# deploy/k8s/base/console.yaml pass them); HTTPS with --https_cert/--https_key
# off loopback.
CMD ["node", "dist/server/main.js"]
