/**
 * routing__duty_drain — scheduled in crontab every minute. Leads queued while nobody was on duty are
 * routed as soon as someone starts: app_private.drain_queues_coming_on_duty() refreshes the routing
 * pool states that change with the clock (app_private.routing_pool_refresh_timed: working hours, time
 * off, holidays, a new day or week for caps), finds the tenants where working hours began, time off
 * ended, a holiday ended in the last minute (a little more, so a late run misses nothing; a drain
 * twice is harmless) or an agent became ready again, and enqueues their routing__drain_queue jobs.
 */
import type { Task } from "graphile-worker";

const task: Task = async (_payload, helpers) => {
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ tenants: number }>("select app_private.drain_queues_coming_on_duty(now() - interval '70 seconds', now()) as tenants"),
  );
  const tenants = rows[0]?.tenants ?? 0;
  if (tenants > 0) helpers.logger.info(`agents came on duty in ${tenants} tenants: their queues are drained`);
};

export default task;
