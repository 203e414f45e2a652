/**
 * The local SMS provider, used when no Twilio credentials are configured: nothing leaves the machine.
 * Each "sent" text is a row in app_private.local_provider_messages, and shortly after, the provider
 * reports it delivered to the message's status callback URL with a correctly signed request, exactly
 * as Twilio would, so a newcomer sees the whole flow (queued → sending → sent → delivered).
 */
import { randomBytes } from "node:crypto";
import type pg from "pg";
import twilio from "twilio";
import type { OutboundSms, ProviderMessage, SmsProvider } from "./sms.ts";

interface Row {
  sid: string;
  to_phone: string;
  from_phone: string | null;
  body: string;
  status: string;
  created_at: Date;
}

const toMessage = (row: Row): ProviderMessage => ({
  sid: row.sid,
  status: row.status,
  to: row.to_phone,
  from: row.from_phone ?? "",
  body: row.body,
  dateCreated: row.created_at,
  errorCode: null,
  errorMessage: null,
});

export class LocalSmsProvider implements SmsProvider {
  readonly name = "local";
  readonly #pool: pg.Pool;
  readonly #authToken: string;
  readonly #deliveryDelayMs: number;

  /** deliveryDelayMs < 0: never report delivery (tests of the sent state). */
  constructor(pool: pg.Pool, authToken: string, deliveryDelayMs = 200) {
    this.#pool = pool;
    this.#authToken = authToken;
    this.#deliveryDelayMs = deliveryDelayMs;
  }

  async send(message: OutboundSms): Promise<ProviderMessage> {
    const sid = `SM${randomBytes(16).toString("hex")}`;
    const { rows } = await this.#pool.query<Row>(
      `insert into app_private.local_provider_messages (sid, to_phone, from_phone, messaging_service_sid, body, status_callback_url)
       values ($1, $2, $3, $4, $5, $6) returning *`,
      [sid, message.to, message.from, message.messagingServiceSid, message.body, message.statusCallbackUrl],
    );
    if (message.statusCallbackUrl && this.#deliveryDelayMs >= 0) {
      setTimeout(() => void this.#reportDelivered(rows[0]!, message.statusCallbackUrl!), this.#deliveryDelayMs).unref();
    }
    return toMessage(rows[0]!);
  }

  async fetch(sid: string): Promise<ProviderMessage | null> {
    const { rows } = await this.#pool.query<Row>("select * from app_private.local_provider_messages where sid = $1", [sid]);
    return rows[0] ? toMessage(rows[0]) : null;
  }

  async findSent(query: { to: string; from: string | null; since: Date }): Promise<ProviderMessage[]> {
    const { rows } = await this.#pool.query<Row>(
      `select * from app_private.local_provider_messages
        where to_phone = $1 and ($2::text is null or from_phone = $2) and created_at >= $3
        order by created_at desc limit 50`,
      [query.to, query.from, query.since],
    );
    return rows.map(toMessage);
  }

  async #reportDelivered(row: Row, url: string): Promise<void> {
    try {
      await this.#pool.query("update app_private.local_provider_messages set status = 'delivered' where sid = $1", [row.sid]);
      const params: Record<string, string> = {
        MessageSid: row.sid,
        MessageStatus: "delivered",
        To: row.to_phone,
        From: row.from_phone ?? "",
        AccountSid: "AC00000000000000000000000000000000",
      };
      const signature = twilio.getExpectedTwilioSignature(this.#authToken, url, params);
      await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature },
        body: new URLSearchParams(params).toString(),
      });
    } catch (error) {
      console.warn(`[sms:local] could not report ${row.sid} delivered to ${url}: ${(error as Error).message}`);
    }
  }
}
