/**
 * Imported first by main.ts: Grafast reads GRAPHILE_ENV when it is loaded, so it is set here,
 * before any PostGraphile module, from NODE_ENV (production, or development otherwise).
 */
process.env.GRAPHILE_ENV ??= process.env.NODE_ENV === "production" ? "production" : "development";
