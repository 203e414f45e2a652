/**
 * Once per test run: a fresh database with our roles, migrated (committed + current.sql).
 * Embedded PostgreSQL in a temporary folder by default; TEST_DATABASE_URL (a superuser URL)
 * points the suite at any other server, e.g. the machine's PostgreSQL 15.
 */
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { withDatabase } from "../src/config.ts";
import { dropDatabase, ensureRolesAndDatabase } from "../src/db/bootstrap.ts";
import { reapOrphanedClusters, startEmbedded, type EmbeddedServer } from "../src/db/embedded.ts";
import { migrateDatabase } from "../src/db/migrate.ts";
import { testRoles, type TestDatabase } from "./context.ts";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let embedded: EmbeddedServer | null = null;
  let serverRootUrl: string;
  const external = process.env.TEST_DATABASE_URL;
  if (external) {
    serverRootUrl = withDatabase(external, "postgres");
  } else {
    // Servers of earlier runs that were killed before their teardown.
    const reaped = await reapOrphanedClusters(tmpdir(), ["switchboard-test-", "switchboard-e2e-", "switchboard-bench-"]);
    if (reaped > 0) console.log(`Stopped ${reaped} embedded PostgreSQL server(s) left by killed test runs.`);
    const dataDir = mkdtempSync(join(tmpdir(), "switchboard-test-"));
    embedded = await startEmbedded({ dataDir, port: await freePort(), password: "test-superuser", ephemeral: true });
    serverRootUrl = embedded.superuserUrl;
  }
  const databaseName = "switchboard_test";
  await dropDatabase(serverRootUrl, databaseName);
  const urls = await ensureRolesAndDatabase({
    rootUrl: serverRootUrl,
    databaseName,
    roles: testRoles,
    ownerPassword: "test-owner-password",
    authenticatorPassword: "test-authenticator-password",
  });
  await migrateDatabase({ ...urls, roles: testRoles, includeCurrent: true });
  const context: TestDatabase = {
    serverRootUrl,
    rootUrl: withDatabase(serverRootUrl, databaseName),
    ownerUrl: urls.ownerUrl,
    authUrl: urls.authUrl,
    databaseName,
    roles: testRoles,
    embedded: embedded !== null,
  };
  project.provide("db", context);
  return async () => {
    await embedded?.stop();
  };
}
