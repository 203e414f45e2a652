/**
 * Twilio's webhooks: incoming call, call status (and the forwarded leg's result), incoming text,
 * message status. Every request must carry a valid X-Twilio-Signature for the public URL it was sent
 * to (PUBLIC_URL, so it works behind a proxy); a bad or missing signature gets 403 and writes nothing.
 * Each handler is one SQL function call (app_private.record_*), idempotent on Twilio's ids; slow work
 * (texts, the AI) runs in graphile-worker jobs that SQL enqueues.
 */
import express, { type NextFunction, type Request, type Response } from "express";
import type pg from "pg";
import twilio from "twilio";

export interface TwilioWebhookOptions {
  ownerPool: pg.Pool;
  authToken: string;
  /** The public base URL (e.g. https://switchboard.example.com); read per request. */
  publicUrl: () => string;
}

type Params = Record<string, string>;

interface PgError extends Error {
  code?: string;
}

const field = (params: Params, name: string): string | null => {
  const value = params[name];
  return typeof value === "string" && value !== "" ? value : null;
};

const integer = (params: Params, name: string): number | null => {
  const value = field(params, name);
  if (value === null) return null;
  if (!/^\d{1,9}$/.test(value)) throw Object.assign(new Error(`${name} must be a whole number of seconds, got '${value.slice(0, 20)}'`), { code: "22023" });
  return Number(value);
};

function sendTwiml(res: Response, twiml: string): void {
  res.status(200).type("text/xml").send(twiml);
}

/** Maps our SQLSTATEs to HTTP: bad input 400, unknown number or message 404, anything else 500. */
function fail(res: Response, error: unknown): void {
  const code = (error as PgError).code;
  const message = (error as Error).message;
  if (code === "22023" || code === "22P02" || code === "23514") {
    res.status(400).type("text/plain").send(message);
  } else if (code === "P0002") {
    res.status(404).type("text/plain").send(message);
  } else {
    console.error(`[webhooks] ${message}`);
    res.status(500).type("text/plain").send("Internal error; the request was not recorded");
  }
}

/**
 * Twilio's webhook bodies are a few kilobytes (a text's body is at most 1,600 characters, plus up to
 * ten media URLs); anything larger is refused (413) before it is parsed further or its signature is
 * checked, so a stranger cannot make us parse megabytes.
 */
export const WEBHOOK_MAX_BODY_BYTES = 64 * 1024;

export function twilioWebhooks(options: TwilioWebhookOptions): express.Router {
  const router = express.Router();
  router.use(express.urlencoded({ extended: false, limit: WEBHOOK_MAX_BODY_BYTES, parameterLimit: 500 }));

  router.use((req: Request, res: Response, next: NextFunction) => {
    const signature = req.header("x-twilio-signature");
    const url = `${options.publicUrl().replace(/\/$/, "")}${req.originalUrl}`;
    const params = (req.body ?? {}) as Params;
    if (req.method !== "POST" || !signature || !twilio.validateRequest(options.authToken, signature, url, params)) {
      res.status(403).type("text/plain").send("Invalid or missing X-Twilio-Signature");
      return;
    }
    next();
  });

  const statusUrl = () => `${options.publicUrl().replace(/\/$/, "")}/webhooks/twilio/voice/status`;

  router.post("/voice", async (req, res) => {
    const p = req.body as Params;
    try {
      const { rows } = await options.ownerPool.query<{ forward_to: string | null; ring_timeout_seconds: number; business_name: string }>(
        "select * from app_private.record_inbound_call($1, $2, $3, $4, $5, $6, $7)",
        [field(p, "CallSid"), field(p, "From"), field(p, "To"), field(p, "CallStatus"), field(p, "CallerCity") ?? field(p, "FromCity"),
          field(p, "CallerState") ?? field(p, "FromState"), field(p, "CallerCountry") ?? field(p, "FromCountry")],
      );
      const answer = rows[0]!;
      const response = new twilio.twiml.VoiceResponse();
      if (answer.forward_to) {
        const dial = response.dial({ timeout: answer.ring_timeout_seconds, action: statusUrl(), method: "POST" });
        dial.number(answer.forward_to);
      } else {
        response.say(`Thanks for calling ${answer.business_name}. We can't take your call right now; we'll text you in a moment.`);
        response.hangup();
      }
      sendTwiml(res, response.toString());
    } catch (error) {
      fail(res, error);
    }
  });

  router.post("/voice/status", async (req, res) => {
    const p = req.body as Params;
    try {
      const { rows } = await options.ownerPool.query<{ missed: boolean | null }>(
        "select * from app_private.record_call_status($1, $2, $3, $4, $5, $6, $7)",
        [field(p, "CallSid"), field(p, "From"), field(p, "To"), field(p, "CallStatus"), integer(p, "CallDuration"),
          field(p, "DialCallStatus"), integer(p, "DialCallDuration")],
      );
      const response = new twilio.twiml.VoiceResponse();
      // As the <Dial> action, this answer is what the caller hears next.
      if (field(p, "DialCallStatus") && rows[0]?.missed) {
        response.say("Sorry we missed your call. We'll text you in a moment.");
        response.hangup();
      }
      sendTwiml(res, response.toString());
    } catch (error) {
      fail(res, error);
    }
  });

  router.post("/sms", async (req, res) => {
    const p = req.body as Params;
    try {
      // OptOutType (STOP, START, HELP): Twilio's Advanced Opt-Out recognised the text and answered it.
      await options.ownerPool.query("select * from app_private.record_inbound_message($1, $2, $3, $4, $5, $6)", [
        field(p, "MessageSid") ?? field(p, "SmsSid"),
        field(p, "From"),
        field(p, "To"),
        typeof p.Body === "string" ? p.Body : null,
        integer(p, "NumMedia") ?? 0,
        field(p, "OptOutType"),
      ]);
      // Replies leave through the outbox, never as TwiML, so every text is checked and recorded the same way.
      sendTwiml(res, new twilio.twiml.MessagingResponse().toString());
    } catch (error) {
      fail(res, error);
    }
  });

  router.post("/sms/status", async (req, res) => {
    const p = req.body as Params;
    const messageId = typeof req.query.message_id === "string" && /^[0-9a-f-]{36}$/i.test(req.query.message_id) ? req.query.message_id : null;
    try {
      await options.ownerPool.query("select app_private.apply_message_status($1, $2, $3, $4, $5)", [
        messageId,
        field(p, "MessageSid") ?? field(p, "SmsSid"),
        field(p, "MessageStatus") ?? field(p, "SmsStatus"),
        integer(p, "ErrorCode"),
        field(p, "ErrorMessage"),
      ]);
      res.status(204).end();
    } catch (error) {
      fail(res, error);
    }
  });

  // A body over the cap or one that cannot be parsed: a short answer, no stack trace, nothing recorded.
  router.use((error: { status?: number; type?: string }, _req: Request, res: Response, next: NextFunction) => {
    if (error.type === "entity.too.large") {
      res.status(413).type("text/plain").send(`Request body over ${WEBHOOK_MAX_BODY_BYTES} bytes`);
    } else if (typeof error.status === "number" && error.status >= 400 && error.status < 500) {
      res.status(error.status).type("text/plain").send("Malformed request body");
    } else {
      next(error);
    }
  });

  return router;
}
