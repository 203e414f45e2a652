/** The GraphQL schema as SDL, sorted so diffs are stable; committed as data/schema.graphql. */
import type pg from "pg";
import { postgraphile } from "postgraphile";
import { lexicographicSortSchema, printSchema } from "postgraphile/graphql";
import type { Config } from "../config.ts";
import { makePreset } from "./preset.ts";

export async function schemaSDL(config: Config, authPool: pg.Pool): Promise<string> {
  // No request runs here, so the rate-limit counters (the third argument) are never touched.
  const pgl = postgraphile(makePreset(config, authPool, authPool));
  try {
    const { schema } = await pgl.getSchemaResult();
    return `${printSchema(lexicographicSortSchema(schema))}\n`;
  } finally {
    await pgl.release();
  }
}
