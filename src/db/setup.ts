/**
 * From configuration to a migrated database: start the embedded server (or use DATABASE_URL),
 * create roles and database when we hold a superuser URL, then run the migrations.
 */
import { embeddedSuperuserPassword, type Config } from "../config.ts";
import { ensureRolesAndDatabase, type DatabaseUrls } from "./bootstrap.ts";
import { startEmbedded, type EmbeddedServer } from "./embedded.ts";
import { migrateDatabase } from "./migrate.ts";

export interface PreparedDatabase extends DatabaseUrls {
  embedded: EmbeddedServer | null;
}

export async function prepareDatabase(
  config: Config,
  options: { migrate: boolean; log: (line: string) => void },
): Promise<PreparedDatabase> {
  const { database, roles } = config;
  let embedded: EmbeddedServer | null = null;
  let urls: DatabaseUrls;
  try {
    if (database.kind === "embedded") {
      embedded = await startEmbedded({
        dataDir: config.dataDir,
        port: config.embeddedPort,
        password: embeddedSuperuserPassword(config.dataDir),
        log: options.log,
      });
      options.log(`Embedded PostgreSQL is running on 127.0.0.1:${config.embeddedPort} (data in ${config.dataDir}/postgres)`);
    }
    const rootUrl = embedded ? embedded.superuserUrl : database.rootUrl;
    if (database.ownerUrl && database.authUrl) {
      urls = {
        rootUrl: database.rootUrl,
        ownerUrl: database.ownerUrl,
        authUrl: database.authUrl,
        shadowUrl: database.shadowUrl,
        databaseName: database.databaseName,
      };
    } else {
      urls = await ensureRolesAndDatabase({
        rootUrl: rootUrl!,
        databaseName: database.databaseName,
        roles,
        ownerPassword: config.ownerPassword,
        authenticatorPassword: config.authenticatorPassword,
        shadow: !config.production,
        log: options.log,
      });
    }
    if (options.migrate) {
      await migrateDatabase({ ...urls, roles, includeCurrent: !config.production, log: options.log });
    }
  } catch (error) {
    await embedded?.stop();
    throw error;
  }
  return { ...urls, embedded };
}
