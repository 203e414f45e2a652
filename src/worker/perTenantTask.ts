/**
 * A graphile-worker task that runs one SQL refresh function per tenant: with no payload (the nightly
 * crontab run) for every tenant, one transaction each, or with {tenant_id} for one tenant. A tenant
 * that fails is logged and the others still run; the job then fails so graphile-worker retries it.
 * The SQL function is named by the task file (fixed text, never input) and must return a row count.
 */
import type { Task } from "graphile-worker";
import { isUuid } from "./taskPayload.ts";

export function perTenantRefreshTask(options: { task: string; sqlFunction: string; what: string }): Task {
  if (!/^app_private\.[a-z_]+$/.test(options.sqlFunction)) throw new Error(`Not an app_private function name: ${options.sqlFunction}`);
  const tenantFromPayload = (payload: unknown): string | null => {
    const p = payload as { tenant_id?: unknown } | null;
    if (p == null || p.tenant_id === undefined) return null;
    if (!isUuid(p.tenant_id)) {
      throw new Error(`${options.task} takes no payload (every tenant) or {tenant_id: <uuid>}`);
    }
    return p.tenant_id;
  };
  return async (payload, helpers) => {
    const only = tenantFromPayload(payload);
    const tenants = only
      ? [only]
      : (await helpers.withPgClient((client) => client.query<{ id: string }>("select id from app_public.tenants order by id"))).rows.map((r) => r.id);
    let rows = 0;
    const failed: string[] = [];
    for (const tenantId of tenants) {
      try {
        const { rows: result } = await helpers.withPgClient((client) =>
          client.query<{ n: number }>(`select ${options.sqlFunction}($1) as n`, [tenantId]),
        );
        rows += result[0]?.n ?? 0;
      } catch (error) {
        failed.push(tenantId);
        helpers.logger.error(`${options.what} of tenant ${tenantId} failed: ${(error as Error).message}`);
      }
    }
    helpers.logger.info(`Refreshed ${rows} ${options.what} rows for ${tenants.length - failed.length} tenant(s)`);
    if (failed.length > 0) throw new Error(`${options.what} failed for ${failed.length} tenant(s): ${failed.join(", ")}`);
  };
}
