/**
 * email__send — hands one outbox email to the mail server (job key email_send:<email_id>, enqueued by
 * the email_messages trigger at scheduled_for).
 *
 * No duplicate sends: the claim (queued → sending) commits before the server is called, so a second
 * job, a retry or a restarted worker finds nothing to claim. After the call:
 *   accepted                       → record_email_sent (the server's answer)
 *   refused for good (5xx)         → record_email_failed
 *   certainly not taken (4xx, no connection) → release_email_for_retry (queued again later)
 *   anything uncertain             → left in sending; email__reconcile asks the provider when it can,
 *                                    else marks it uncertain (never resent automatically).
 */
import type { Task } from "graphile-worker";
import { EmailError } from "../src/providers/email.ts";
import { services } from "../src/worker/services.ts";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

interface Claimed {
  id: string;
  message_id: string;
  from_name: string | null;
  from_email: string | null;
  reply_to: string | null;
  to_email: string;
  subject: string;
  body_text: string;
  body_html: string | null;
  unsubscribe_url: string | null;
}

const task: Task = async (payload, helpers) => {
  const emailId = uuidFromPayload(payload, "email_id", "email__send");
  const { email, emailFrom, publicUrl } = services();
  const domain = emailFrom.address.split("@")[1] ?? "switchboard.invalid";
  const { rows } = await helpers.withPgClient((client) =>
    client.query<Claimed>("select * from app_private.claim_outbound_email($1::uuid, $2, $3)", [emailId, publicUrl(), domain]),
  );
  const claimed = rows[0];
  if (!claimed) {
    helpers.logger.info(`email ${emailId} is not due, not queued any more, or was canceled: nothing to send`);
    return;
  }
  try {
    const sent = await email.send({
      id: claimed.id,
      messageId: claimed.message_id,
      from: { name: claimed.from_name ?? emailFrom.name, address: claimed.from_email ?? emailFrom.address },
      to: claimed.to_email,
      replyTo: claimed.reply_to,
      subject: claimed.subject,
      text: claimed.body_text,
      html: claimed.body_html,
      unsubscribeUrl: claimed.unsubscribe_url,
    });
    await helpers.withPgClient((client) =>
      client.query("select app_private.record_email_sent($1, $2, $3)", [emailId, sent.messageId, sent.response]),
    );
  } catch (error) {
    if (error instanceof EmailError && error.permanent) {
      await helpers.withPgClient((client) =>
        client.query("select app_private.record_email_failed($1, $2, $3)", [emailId, error.responseCode, error.message]),
      );
      helpers.logger.warn(`email ${emailId} refused by ${email.name}: ${error.message}`);
      return;
    }
    if (error instanceof EmailError && error.notAccepted) {
      await helpers.withPgClient((client) =>
        client.query("select app_private.release_email_for_retry($1, $2, 60)", [emailId, error.message]),
      );
      helpers.logger.warn(`email ${emailId} not taken by ${email.name} (${error.message}); it will be tried again`);
      return;
    }
    // Uncertain: the server may have taken it. Settle it instead of sending again.
    await helpers.withPgClient((client) =>
      client.query("select app_private.add_job('email__reconcile', json_build_object('email_id', $1::uuid), job_key => 'email_reconcile:' || $1)", [emailId]),
    );
    helpers.logger.warn(`email ${emailId}: outcome unknown (${(error as Error).message}); it will be settled, not resent`);
  }
};

export default task;
