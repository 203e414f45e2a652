/**
 * data/schema.sql is the schema as the migrations leave it: a DBA reads it instead of 23 migrations.
 * It is checked wherever a pg_dump of the major version that wrote it can read the test server (CI's
 * PostgreSQL 15 pass; the embedded PostgreSQL ships no pg_dump, and pg_dump refuses newer servers).
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../src/config.ts";
import { dumpSchema, findPgDump, normalizeDump, serverMajorOf, SNAPSHOT_PG_MAJOR, snapshotHeader, snapshotPgDumpMajor } from "../../src/db/schemaDump.ts";
import { db } from "../helpers.ts";

const committed = readFileSync(resolve(projectRoot, "data/schema.sql"), "utf8");
const committedMajor = snapshotPgDumpMajor(committed);
const serverMajor = await serverMajorOf(db.ownerUrl);
const pgDump = await findPgDump(serverMajor);
const skipReason =
  serverMajor !== SNAPSHOT_PG_MAJOR
    ? `data/schema.sql is made from PostgreSQL ${SNAPSHOT_PG_MAJOR}; this pass runs PostgreSQL ${serverMajor}`
    : pgDump?.major !== SNAPSHOT_PG_MAJOR
      ? `no pg_dump ${SNAPSHOT_PG_MAJOR} here${pgDump ? ` (only pg_dump ${pgDump.major})` : ""}`
      : null;
if (skipReason) console.log(`schema snapshot check skipped: ${skipReason}`);

/** The first line where two texts differ, with a little context, instead of a 27,000-line diff. */
function firstDifference(expected: string, actual: string): string | null {
  const a = expected.split("\n");
  const b = actual.split("\n");
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) {
      const around = (lines: string[]) => lines.slice(Math.max(0, i - 3), i + 4).join("\n");
      return `line ${i + 1}:\n--- data/schema.sql\n${around(a)}\n+++ the migrated test database\n${around(b)}`;
    }
  }
  return null;
}

describe("data/schema.sql", () => {
  it("names the pg_dump that wrote it, uses role placeholders and holds our four schemas", () => {
    // Made with the versions CI checks it with, so a snapshot written elsewhere fails here instead of being skipped forever.
    expect(committedMajor).toBe(SNAPSHOT_PG_MAJOR);
    expect(/\\restrict|Dumped from database version|switchboard_test_/.test(committed)).toBe(false);
    for (const expected of [
      "TO :DATABASE_VISITOR;",
      "CREATE TABLE app_public.leads (",
      "CREATE TABLE app_private.user_secrets (",
      "CREATE TABLE raw.st_jobs (",
      "CREATE FUNCTION app_hidden.",
      "CREATE FUNCTION app_private.route_lead(",
      "ALTER TABLE ONLY app_public.leads FORCE ROW LEVEL SECURITY;",
    ]) {
      expect(committed.includes(expected), expected).toBe(true);
    }
  });

  it("normalising makes a dump independent of role names and pg_dump's random restrict key", () => {
    const roles = { owner: "x_owner", authenticator: "x_authenticator", visitor: "x_visitor" };
    const raw = "\\restrict AbC\n-- Dumped from database version 15.2\nGRANT SELECT ON TABLE t TO x_visitor;\nGRANT x_visitor TO x_authenticator;\n-- x_visitor_like stays\n\\unrestrict AbC\n";
    const normal = normalizeDump(raw, roles, snapshotHeader({ path: "pg_dump", major: 15 }, 15));
    expect(normal.split("\n").slice(1)).toEqual([
      "GRANT SELECT ON TABLE t TO :DATABASE_VISITOR;",
      "GRANT :DATABASE_VISITOR TO :DATABASE_AUTHENTICATOR;",
      "-- x_visitor_like stays",
      "",
    ]);
    expect(snapshotPgDumpMajor(normal)).toBe(15);
  });

  it.skipIf(skipReason !== null)("is what the migrations produce (run `npm run schema:dump` after changing the database)", async () => {
    const dump = await dumpSchema({ url: db.ownerUrl, roles: db.roles, pgDump: pgDump!, serverMajor });
    expect(firstDifference(committed, dump)).toBeNull();
  });
});
