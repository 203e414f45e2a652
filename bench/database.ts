/**
 * The database a benchmark runs in: a fresh, migrated database on an embedded PostgreSQL in a
 * temporary folder, or on the server of BENCH_DATABASE_URL (a superuser URL). close() drops it
 * (kept with BENCH_KEEP=1, to inspect) and stops the embedded server.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { withDatabase } from "../src/config.ts";
import { dropDatabase, ensureRolesAndDatabase, type DatabaseUrls, type Roles } from "../src/db/bootstrap.ts";
import { startEmbedded, type EmbeddedServer } from "../src/db/embedded.ts";
import { migrateDatabase } from "../src/db/migrate.ts";
import { freePort } from "../test/globalSetup.ts";

export interface BenchDatabase {
  /** Superuser URL of the server (its postgres database). */
  serverRootUrl: string;
  /** Superuser URL of the benchmark database. */
  rootUrl: string;
  urls: DatabaseUrls;
  close(): Promise<void>;
}

export async function openBenchDatabase(databaseName: string, roles: Roles, log: (line: string) => void): Promise<BenchDatabase> {
  let embedded: EmbeddedServer | null = null;
  let dataDir: string | null = null;
  let serverRootUrl: string;
  if (process.env.BENCH_DATABASE_URL) {
    serverRootUrl = withDatabase(process.env.BENCH_DATABASE_URL, "postgres");
  } else {
    log("Starting an embedded PostgreSQL for the benchmark…");
    dataDir = mkdtempSync(join(tmpdir(), "switchboard-bench-"));
    embedded = await startEmbedded({ dataDir, port: await freePort(), password: "bench", ephemeral: true });
    serverRootUrl = embedded.superuserUrl;
  }
  const close = async () => {
    if (process.env.BENCH_KEEP !== "1") await dropDatabase(serverRootUrl, databaseName).catch(() => {});
    await embedded?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await dropDatabase(serverRootUrl, databaseName);
    const urls = await ensureRolesAndDatabase({
      rootUrl: serverRootUrl,
      databaseName,
      roles,
      ownerPassword: `${databaseName}-owner`,
      authenticatorPassword: `${databaseName}-authenticator`,
    });
    await migrateDatabase({ ...urls, roles, includeCurrent: true });
    return { serverRootUrl, rootUrl: withDatabase(serverRootUrl, databaseName), urls, close };
  } catch (error) {
    await close();
    throw error;
  }
}
