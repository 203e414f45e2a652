/**
 * PostGraphile preset for tools that look for graphile.config.ts. The server builds the same preset
 * in src/api/preset.ts (with its own pools); this file reuses it with the environment's configuration.
 */
import pg from "pg";
import { loadConfig } from "./src/config.ts";
import { makePreset } from "./src/api/preset.ts";

const config = loadConfig();
const authUrl = process.env.AUTH_DATABASE_URL;
const ownerUrl = process.env.DATABASE_URL;
// The owner's pool keeps the login rate-limit counters; with AUTH_DATABASE_URL, DATABASE_URL is the owner's URL.
const preset: GraphileConfig.Preset =
  authUrl && ownerUrl
    ? makePreset(config, new pg.Pool({ connectionString: authUrl }), new pg.Pool({ connectionString: ownerUrl }))
    : { extends: [] };

export default preset;
