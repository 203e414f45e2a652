/**
 * The local email provider, used when no SMTP server is configured: nothing leaves the machine.
 * Each "sent" email is rendered exactly as the SMTP provider would send it (same headers, see
 * emailMessage.ts) and stored, whole, as a row in app_private.local_provider_emails keyed by its
 * Message-ID, so a newcomer can read what would have gone out, and `lookup` can answer for real.
 * Sending the same Message-ID twice stores it once, as a real mail system deduplicating would.
 */
import type pg from "pg";
import { EmailError, type EmailProvider, type OutboundEmail, type SentEmail } from "./email.ts";
import { renderEmail } from "./emailMessage.ts";

export class LocalEmailProvider implements EmailProvider {
  readonly name = "local";
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async send(email: OutboundEmail): Promise<SentEmail> {
    const rendered = await renderEmail(email);
    try {
      await this.#pool.query(
        `insert into app_private.local_provider_emails (message_id, to_email, from_email, subject, raw)
         values ($1, $2, $3, $4, $5)
         on conflict (message_id) do nothing`,
        [email.messageId, email.to, email.from.address, email.subject, rendered.raw.toString("utf8")],
      );
    } catch (err) {
      // The row may or may not have been committed (e.g. the connection broke): unknown, which
      // lookup() settles later.
      throw new EmailError(`Could not store email ${email.id} in the local catcher: ${(err as Error).message}`, {
        permanent: false,
        notAccepted: false,
        cause: err,
      });
    }
    return { messageId: email.messageId, response: "250 stored by the local catcher" };
  }

  async lookup(messageId: string): Promise<boolean> {
    const { rows } = await this.#pool.query<{ found: boolean }>(
      "select exists (select from app_private.local_provider_emails where message_id = $1) as found",
      [messageId],
    );
    return rows[0]?.found === true;
  }

  async close(): Promise<void> {}
}
