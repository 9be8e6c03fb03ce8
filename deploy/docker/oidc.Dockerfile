# The development OpenID provider (deploy/oidc, npm oidc-provider) with the
# demo consortium's people, for docker-compose and the Kubernetes demo
# overlay. A consortium plugs in its own provider instead (README).
#   docker build -f deploy/docker/oidc.Dockerfile -t labshare-oidc .
FROM node:20-bookworm-slim
WORKDIR /app
COPY deploy/oidc/package.json deploy/oidc/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY deploy/oidc/*.mjs deploy/oidc/*.json ./
USER 10001
EXPOSE 8443
