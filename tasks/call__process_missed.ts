/**
 * call__process_missed — enqueued by app_private.record_call_status when a call is judged missed
 * (job key call_missed:<call_id>). The whole rule is app_private.process_missed_call: it claims the
 * call's processed flag first, so a repeated or retried job does nothing.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const callId = uuidFromPayload(payload, "call_id", "call__process_missed");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ done: boolean }>("select app_private.process_missed_call($1::uuid) as done", [callId]),
  );
  if (!rows[0]?.done) helpers.logger.info(`call ${callId} was processed already, or is not missed: nothing to do`);
};

export default task;
