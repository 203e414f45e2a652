/**
 * routing__refresh_city_stats — scheduled nightly in crontab (no payload: every tenant), or enqueued
 * with {tenant_id} for one tenant. Recomputes city_event_stats (leads, bookings and average value per city,
 * region, event type and month) through app_private.refresh_city_event_stats(tenant_id), one tenant per
 * transaction; the function upserts, so a retried job is harmless. A tenant that fails is logged and
 * the others still run; the job then fails so graphile-worker retries it.
 */
import type { Task } from "graphile-worker";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function tenantFromPayload(payload: unknown): string | null {
  const p = payload as { tenant_id?: unknown } | null;
  if (p == null || p.tenant_id === undefined) return null;
  if (typeof p.tenant_id !== "string" || !UUID.test(p.tenant_id)) {
    throw new Error("routing__refresh_city_stats takes no payload (every tenant) or {tenant_id: <uuid>}");
  }
  return p.tenant_id;
}

const task: Task = async (payload, helpers) => {
  const only = tenantFromPayload(payload);
  const tenants = only
    ? [only]
    : (await helpers.withPgClient((client) => client.query<{ id: string }>("select id from app_public.tenants order by id"))).rows.map((r) => r.id);
  let rows = 0;
  const failed: string[] = [];
  for (const tenantId of tenants) {
    try {
      const { rows: result } = await helpers.withPgClient((client) =>
        client.query<{ n: number }>("select app_private.refresh_city_event_stats($1) as n", [tenantId]),
      );
      rows += result[0]?.n ?? 0;
    } catch (error) {
      failed.push(tenantId);
      helpers.logger.error(`City event stats of tenant ${tenantId} failed: ${(error as Error).message}`);
    }
  }
  helpers.logger.info(`Refreshed ${rows} city event stat rows for ${tenants.length - failed.length} tenant(s)`);
  if (failed.length > 0) throw new Error(`City event stats failed for ${failed.length} tenant(s): ${failed.join(", ")}`);
};

export default task;
