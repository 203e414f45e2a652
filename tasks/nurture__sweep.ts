/**
 * nurture__sweep — every minute (crontab): active enrollments whose step is overdue by more than the
 * grace (a job that failed for good or was lost) get their job again. The rule is
 * app_private.sweep_nurture; payload {grace_seconds} overrides the default 10 minutes.
 */
import type { Task } from "graphile-worker";

const task: Task = async (payload, helpers) => {
  const raw = (payload as { grace_seconds?: unknown } | null)?.grace_seconds;
  const grace = typeof raw === "number" && Number.isInteger(raw) && raw >= 0 ? raw : 600;
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ n: number }>("select app_private.sweep_nurture(make_interval(secs => $1)) as n", [grace]),
  );
  if ((rows[0]?.n ?? 0) > 0) helpers.logger.info(`nurture sweep: ${rows[0]!.n} overdue step(s) re-enqueued`);
};

export default task;
