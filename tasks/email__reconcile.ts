/**
 * email__reconcile — settles an email left in sending (its worker stopped, or the server's answer was
 * lost). Asks the provider whether it has the Message-ID: the local catcher can tell, SMTP cannot.
 * app_private.settle_email records the answer: found → sent, certainly absent → queued again,
 * unknown → uncertain (never resent automatically, so nobody gets it twice).
 */
import type { Task } from "graphile-worker";
import { services } from "../src/worker/services.ts";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const emailId = uuidFromPayload(payload, "email_id", "email__reconcile");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ status: string; message_id_header: string | null }>(
      "select status, message_id_header from app_public.email_messages where id = $1",
      [emailId],
    ),
  );
  const pending = rows[0];
  if (!pending || pending.status !== "sending") return;
  const { email } = services();
  const found = pending.message_id_header ? await email.lookup(pending.message_id_header) : false;
  const { rows: result } = await helpers.withPgClient((client) =>
    client.query<{ status: string }>("select app_private.settle_email($1, $2) as status", [emailId, found]),
  );
  helpers.logger.info(`email ${emailId} settled: ${result[0]?.status} (${found === null ? `${email.name} cannot be asked` : found ? "found" : "not found"})`);
};

export default task;
