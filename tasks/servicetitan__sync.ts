/**
 * servicetitan__sync {tenant_id, table_name, mode} — one sync run of one cache of one tenant.
 * SQL decides everything that matters: st_begin_sync claims the table (55P03 when another run holds
 * it: this job then ends quietly) and says where to start (a resumed run continues from its stored
 * token); each export page is applied by st_apply_page in one transaction together with the token to
 * continue from; a failure is recorded by st_fail_sync (the run is kept for the next attempt) and
 * rethrown so graphile-worker retries with backoff.
 */
import type { Task } from "graphile-worker";
import { ServiceTitanError, type ServiceTitanResource } from "../src/providers/serviceTitan.ts";
import { clientForTenant, type StoredConnection } from "../src/providers/serviceTitanConnections.ts";
import { services } from "../src/worker/services.ts";

interface Payload {
  tenant_id: string;
  table_name: string;
  mode: "full" | "incremental";
}

interface Run {
  run_id: string;
  resource: ServiceTitanResource;
  run_mode: "full" | "incremental";
  from_cursor: string | null;
  resumed: boolean;
  pages_done: number;
  records_done: string;
}

function parsePayload(payload: unknown): Payload {
  const p = (payload ?? {}) as Record<string, unknown>;
  if (typeof p.tenant_id !== "string" || typeof p.table_name !== "string" || (p.mode !== "full" && p.mode !== "incremental")) {
    throw new Error(`servicetitan__sync needs a payload {tenant_id, table_name, mode: "full" | "incremental"}, got ${JSON.stringify(payload)}`);
  }
  return { tenant_id: p.tenant_id, table_name: p.table_name, mode: p.mode };
}

const task: Task = async (payload, helpers) => {
  const { tenant_id, table_name, mode } = parsePayload(payload);
  const what = `servicetitan ${table_name} of tenant ${tenant_id}`;
  const { rows: connections } = await helpers.withPgClient((client) =>
    client.query<StoredConnection>("select * from app_private.service_titan_connection_for_sync($1)", [tenant_id]),
  );
  const connection = connections[0];
  if (!connection?.enabled) {
    helpers.logger.info(`${what}: no enabled connection, nothing to sync`);
    return;
  }

  let run: Run;
  try {
    const { rows } = await helpers.withPgClient((client) =>
      client.query<Run>("select * from app_private.st_begin_sync($1, $2, $3)", [tenant_id, table_name, mode]),
    );
    run = rows[0]!;
  } catch (error) {
    if ((error as { code?: string }).code === "55P03") {
      helpers.logger.info(`${what}: ${(error as Error).message}; this job ends`);
      return;
    }
    throw error;
  }

  let cursor = run.from_cursor;
  let pages = 0;
  let records = 0;
  try {
    const { serviceTitan: settings, serviceTitanLimiter } = services();
    if (!settings) throw new Error("The worker has no ServiceTitan settings (services().serviceTitan)");
    const client = clientForTenant(tenant_id, settings, connection, serviceTitanLimiter);
    for (;;) {
      const page = await client.exportPage(run.resource, cursor, { includeRecentChanges: true });
      if (page.hasMore && !page.continueFrom) {
        throw new ServiceTitanError(`ServiceTitan ${run.resource} export said hasMore without a continueFrom token`, { kind: "malformed", retryable: true });
      }
      await helpers.withPgClient((client) =>
        client.query("select app_private.st_apply_page($1, $2::jsonb, $3, $4)", [run.run_id, JSON.stringify(page.data), page.continueFrom, page.hasMore]),
      );
      pages += 1;
      records += page.data.length;
      cursor = page.continueFrom ?? cursor;
      if (!page.hasMore) break;
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    await helpers.withPgClient((client) => client.query("select app_private.st_fail_sync($1, $2)", [run.run_id, message]));
    throw error;
  }
  helpers.logger.info(
    `${what}: ${run.run_mode} sync ${run.resumed ? `resumed after ${run.pages_done} page(s), ` : ""}completed, ${records} record(s) in ${pages} page(s)`,
  );
};

export default task;
