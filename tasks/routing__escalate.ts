/**
 * routing__escalate — scheduled in crontab every minute. Queue entries whose SLA has expired move to
 * the reassignment queue and are routed again: app_private.escalate_expired_queue_entries() escalates
 * each entry once (the next run only sees entries whose SLA expired since), so overlapping or repeated
 * runs are harmless.
 */
import type { Task } from "graphile-worker";

const task: Task = async (_payload, helpers) => {
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ escalated: number }>("select app_private.escalate_expired_queue_entries() as escalated"),
  );
  const escalated = rows[0]?.escalated ?? 0;
  if (escalated > 0) helpers.logger.info(`escalated ${escalated} queued leads past their SLA`);
};

export default task;
