/**
 * PostGraphile preset for tools that look for graphile.config.ts. The server builds the same preset
 * in src/api/preset.ts (with its own pools); this file reuses it with the environment's configuration.
 */
import pg from "pg";
import { loadConfig } from "./src/config.ts";
import { makePreset } from "./src/api/preset.ts";

const config = loadConfig();
const authUrl = process.env.AUTH_DATABASE_URL;
const preset: GraphileConfig.Preset = authUrl
  ? makePreset(config, new pg.Pool({ connectionString: authUrl }))
  : { extends: [] };

export default preset;
