/**
 * servicetitan__schedule — crontab: {"mode":"incremental"} every 5 minutes, {"mode":"full"} nightly.
 * Enqueues one servicetitan__sync job per table of every enabled connection (app_private.st_schedule_syncs).
 */
import type { Task } from "graphile-worker";

const task: Task = async (payload, helpers) => {
  const mode = (payload as { mode?: unknown } | null)?.mode === "full" ? "full" : "incremental";
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ n: number }>("select app_private.st_schedule_syncs($1) as n", [mode]),
  );
  if ((rows[0]?.n ?? 0) > 0) helpers.logger.info(`servicetitan: ${rows[0]!.n} ${mode} table sync(s) queued`);
};

export default task;
