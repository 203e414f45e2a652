/** The PostGraphile preset: Amber, our schema, JWT signing, request context and error policy. */
import type pg from "pg";
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import type { Config } from "../config.ts";
import { JWT_AUDIENCE, JWT_ISSUER, pgSettingsFor } from "./auth.ts";
import { maskError } from "./errors.ts";
import { ImportPlugin } from "./importPlugin.ts";
import { makeLoginPlugin, makeRequestLimitsPlugin } from "./plugins.ts";
import { AuthRateLimiter, clientAddress, flowLimitsFrom } from "./rateLimit.ts";
import { makeServiceTitanPlugin } from "./serviceTitanPlugin.ts";

/**
 * `counterPool` keeps the login and register rate-limit counters (app_private.rate_limits): the owner's
 * pool in the server, so no role a request can become has any right on app_private.
 */
export function makePreset(config: Config, authPool: pg.Pool, counterPool: pg.Pool): GraphileConfig.Preset {
  return {
    extends: [PostGraphileAmberPreset],
    plugins: [
      makeLoginPlugin(new AuthRateLimiter(counterPool, flowLimitsFrom(config.rateLimits)), config.trustProxy),
      ImportPlugin,
      makeServiceTitanPlugin(config.serviceTitan),
      makeRequestLimitsPlugin({ ...config.graphql, production: config.production }),
    ],
    pgServices: [makePgService({ pool: authPool, schemas: ["app_public", "raw"] })],
    gather: { pgJwtTypes: "app_public.jwt_token" },
    schema: {
      pgJwtSecret: config.jwtSecret,
      pgJwtSignOptions: { algorithm: "HS256", issuer: JWT_ISSUER, audience: JWT_AUDIENCE },
      exportSchemaSDLPath: undefined,
    },
    grafserv: {
      graphqlPath: "/graphql",
      graphiql: !config.production,
      graphiqlPath: "/graphiql",
      graphiqlOnGraphQLGET: false,
      watch: false,
      // server.ts reads JSON bodies itself (GRAPHQL_MAX_BODY_BYTES; an authenticated importLeads up to
      // MAX_REQUEST_BYTES); grafserv reads the other content types (application/graphql) with this cap.
      maxRequestLength: config.graphql.maxBodyBytes,
      // Parsed documents are cached by grafserv (an LRU keyed by the query text's hash). Each entry holds
      // a text of at most GRAPHQL_MAX_BODY_BYTES with at most GRAPHQL_MAX_TOKENS tokens, so the cache is
      // bounded in bytes: 100 entries (docs/operations.md, "Request limits").
      parseAndValidateCacheSize: 100,
      maskError,
    },
    grafast: {
      explain: !config.production,
      context(requestContext) {
        const req = requestContext.expressv4?.req;
        return {
          pgSettings: pgSettingsFor(req?.switchboardAuth, config.roles.visitor, config.graphql.statementTimeoutMs),
          clientAddress: req ? clientAddress(req, config.trustProxy) : null,
        };
      },
    },
  };
}
