/**
 * nurture__run_step — runs one step of one nurture enrollment (job key nurture:<enrollment>:<step>,
 * scheduled from SQL at the step's time on the tenant clock). Everything is decided in
 * app_private.run_nurture_step, in one transaction: the step runs once, its text or email goes into
 * the outbox (where the do-not-contact, suppression, legal-hours and cap rules apply), and the next
 * step is scheduled. The sending itself is done by sms__send and email__send.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const enrollmentId = uuidFromPayload(payload, "enrollment_id", "nurture__run_step");
  const step = (payload as { step?: unknown }).step;
  if (typeof step !== "number" || !Number.isInteger(step) || step < 1) throw new Error("nurture__run_step needs a payload {enrollment_id: uuid, step: integer >= 1}");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ outcome: string }>("select app_private.run_nurture_step($1, $2) as outcome", [enrollmentId, step]),
  );
  helpers.logger.debug(`enrollment ${enrollmentId} step ${step}: ${rows[0]?.outcome}`);
};

export default task;
