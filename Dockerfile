# syntax=docker/dockerfile:1
# One image per service, with only that service's production dependencies:
#   docker build --build-arg SERVICE=documents -t tributary-documents .
# SERVICE names a workspace package @tributary/<SERVICE>: gateway, or a subgraph (its folder under
# subgraphs/). `docker compose build` builds every service from this file.

# Node 24 LTS (Node 20 reached end of life in April 2026); the engines field still allows >=20.19.
ARG NODE_VERSION=24

FROM node:${NODE_VERSION}-slim AS build
ARG SERVICE
ARG PNPM_VERSION=12.4.2
# corepack cannot fetch pnpm 12; npm can.
RUN npm install --global --no-audit --no-fund "pnpm@${PNPM_VERSION}"
WORKDIR /repo
COPY . .
# The whole workspace with its development dependencies (esbuild, tsx, the UI's React and
# GraphiQL), then the service's JavaScript: scripts/build.ts bundles src/main.ts with the
# workspace packages into dist/main.js (+ its source map), and for the gateway GraphiQL into
# dist/ui (the demo page is pnpm dev's, in apps/dev, in no image). `pnpm build` runs
# the same after `pnpm typecheck`, which CI runs.
# `pnpm deploy --prod` then copies the service's files ("files": ["dist"]) and only its own
# production dependencies, exactly as locked: every third-party package the bundle imports, and
# no tsx, typescript or esbuild. The built gateway reads ../../schema/supergraph.graphql from its
# dist/, hence /out/schema next to it.
RUN --mount=type=cache,id=tributary-pnpm-store,target=/pnpm/store \
    pnpm install --frozen-lockfile --store-dir /pnpm/store \
 && pnpm exec tsx scripts/build.ts "${SERVICE:?build with --build-arg SERVICE=<gateway or a folder of subgraphs/>}" \
 && pnpm --fail-if-no-match --filter "@tributary/${SERVICE}" \
      deploy --prod --frozen-lockfile --store-dir /pnpm/store /out/service \
 && mkdir -p /out/schema \
 && cp schema/supergraph.graphql /out/schema/supergraph.graphql

FROM node:${NODE_VERSION}-slim AS runtime
ARG SERVICE
# Plain JavaScript (dist/main.js): no loader, no TypeScript, no bundler at run time.
RUN mkdir -p /var/lib/tributary \
 && chown node:node /var/lib/tributary
ENV NODE_ENV=production \
    TRIBUTARY_SERVICE=${SERVICE} \
    TRIBUTARY_DATA_DIR=/var/lib/tributary
WORKDIR /app/service
# Owned by root, so the service cannot rewrite its own code. Its one writable place is
# TRIBUTARY_DATA_DIR (embedded PGlite, used only when no database URL is set).
COPY --from=build /out /app
USER node
# /ready answers 200 once the database and the broker do. PORT when set, else the service's
# default port, from the map below (`pnpm new:subgraph` adds a new subgraph's).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
  CMD ["node", "-e", "const ports = { gateway: 4000, documents: 4001, jobs: 4002, analysis: 4003, insights: 4004, webhooks: 4005 }; fetch('http://127.0.0.1:' + (process.env.PORT || ports[process.env.TRIBUTARY_SERVICE]) + '/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The same as each package's start script: one node process, PID 1, which handles SIGTERM itself
# (`docker stop` stops the service gracefully). --enable-source-maps: stack traces name the
# TypeScript (dist/main.js.map carries the sources). A larger young generation (semi-space up
# to 64 MiB, grown only as needed): a GraphQL server allocates short-lived objects by the
# million, and fewer scavenges gave the gateway 25-30% more throughput on `pnpm bench:gateway`
# at the same peak memory.
CMD ["node", "--enable-source-maps", "--max-semi-space-size=64", "dist/main.js"]
