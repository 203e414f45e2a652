/**
 * routing__refresh_city_stats — scheduled nightly in crontab (no payload: every tenant), or enqueued
 * with {tenant_id} for one tenant. Recomputes city_event_stats (leads, bookings and average value per
 * city, region, event type and month) through app_private.refresh_city_event_stats(tenant_id), which
 * upserts, so a retried job is harmless.
 */
import { perTenantRefreshTask } from "../src/worker/perTenantTask.ts";

export default perTenantRefreshTask({
  task: "routing__refresh_city_stats",
  sqlFunction: "app_private.refresh_city_event_stats",
  what: "city event stats",
});
