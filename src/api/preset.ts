/** The PostGraphile preset: Amber, our schema, JWT signing, request context and error policy. */
import type pg from "pg";
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import type { Config } from "../config.ts";
import { JWT_AUDIENCE, JWT_ISSUER, pgSettingsFor } from "./auth.ts";
import { maskError } from "./errors.ts";
import { ImportPlugin, MAX_REQUEST_BYTES } from "./importPlugin.ts";
import { LoginPlugin, makeRequestLimitsPlugin } from "./plugins.ts";
import { makeServiceTitanPlugin } from "./serviceTitanPlugin.ts";

export function makePreset(config: Config, authPool: pg.Pool): GraphileConfig.Preset {
  return {
    extends: [PostGraphileAmberPreset],
    plugins: [
      LoginPlugin,
      ImportPlugin,
      makeServiceTitanPlugin(config.serviceTitan),
      makeRequestLimitsPlugin({
        depthLimit: config.graphql.depthLimit,
        maxPageSize: config.graphql.maxPageSize,
        production: config.production,
      }),
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
      // importLeads carries a CSV of up to 5 MB (grafserv's default limit is 100 kB).
      maxRequestLength: MAX_REQUEST_BYTES,
      maskError,
    },
    grafast: {
      explain: !config.production,
      context(requestContext) {
        const req = requestContext.expressv4?.req;
        return {
          pgSettings: pgSettingsFor(req?.switchboardAuth, config.roles.visitor, config.graphql.statementTimeoutMs),
        };
      },
    },
  };
}
