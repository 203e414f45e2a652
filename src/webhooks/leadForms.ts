/**
 * Public lead forms: /f/<public key>. The rules live in the database (app_private.lead_form_settings,
 * submit_lead_form, refuse_lead_form_submission); this file does the HTTP part, in this order, so that a
 * refusal costs as little as possible and writes nothing but its log line:
 *
 *   GET  /f/<key>/token  a signed issued-at token (HMAC of the key and the time, with a key derived from
 *                        JWT_SECRET) the page sends back as _token; the form's min_fill_seconds must pass.
 *   OPTIONS /f/<key>     the CORS preflight: allowed only for the form's allowed origins.
 *   POST /f/<key>        JSON or url-encoded (a plain HTML form). 413 over FORM_MAX_BODY_BYTES, 400 when
 *                        it can't be read; 404 unknown or disabled form; 429 over the rate limits (per
 *                        client address and per form, counted in PostgreSQL so every process shares
 *                        them; not logged); 403 from an origin not allowed; 422 honeypot, too fast, bad
 *                        token, captcha refused, or fields the database refuses (logged with the reason);
 *                        201 {"status":"received"} (JSON) or a small thank-you page (HTML form).
 * The answer never says whether a lead existed: "received" either way.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import express, { type Request, type Response } from "express";
import { parsePhoneNumberFromString, type CountryCode } from "libphonenumber-js/max";
import type pg from "pg";
import { RateLimiterPostgres, RateLimiterRes } from "rate-limiter-flexible";
import type { FormSettings } from "../config.ts";
import { clientAddress } from "../api/rateLimit.ts";
import { isKnownCountry } from "../import/phone.ts";

interface FormRow {
  form_id: string;
  tenant_id: string;
  allowed_origins: string[];
  phone_fields: string[];
  min_fill_seconds: number;
  captcha_required: boolean;
  consent_field: string;
  country: string;
}

interface PgError extends Error {
  code?: string;
}

/** The fields a page may send that are not the person's: the token, the honeypot, the page and the submission id. */
const HONEYPOT = "_hp";
/** A token is good for two hours: time to fill a form, not to feed a bot all day. */
const TOKEN_MAX_AGE_SECONDS = 7_200;
const CAPTCHA_FIELDS = ["cf-turnstile-response", "h-captcha-response", "captcha"];

export interface LeadFormOptions {
  ownerPool: pg.Pool;
  settings: FormSettings;
  jwtSecret: string;
  trustProxy: number;
}

/** The HMAC key of the form tokens: derived from JWT_SECRET, used for nothing else. */
const tokenKey = (jwtSecret: string) => createHmac("sha256", jwtSecret).update("switchboard lead form token").digest();

export function formToken(jwtSecret: string, publicKey: string, issuedAtSeconds: number): string {
  const mac = createHmac("sha256", tokenKey(jwtSecret)).update(`${publicKey}.${issuedAtSeconds}`).digest("base64url");
  return `${issuedAtSeconds}.${mac}`;
}

/** The token's age in seconds, or null when it is not one we signed for this form. */
function tokenAge(jwtSecret: string, publicKey: string, token: string, now: number): number | null {
  const match = /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!match) return null;
  const expected = Buffer.from(formToken(jwtSecret, publicKey, Number(match[1])));
  const given = Buffer.from(token);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return null;
  const age = now - Number(match[1]);
  return age >= -5 && age <= TOKEN_MAX_AGE_SECONDS ? age : null;
}

/** A flat map of the submitted fields: strings only (a repeated HTML field keeps its first value). */
function flatFields(body: unknown): Record<string, string> | null {
  if (body === null || typeof body !== "object" || Array.isArray(body)) return null;
  // No prototype: a field named constructor or __proto__ is a field like any other.
  const out: Record<string, string> = Object.create(null);
  for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
    const first = Array.isArray(value) ? value[0] : value;
    if (typeof first === "string") out[key] = first;
    else if (typeof first === "number" || typeof first === "boolean") out[key] = String(first);
  }
  return out;
}

async function verifyCaptcha(settings: FormSettings, answer: string | undefined, address: string | null): Promise<boolean> {
  if (!settings.captchaVerifyUrl || !settings.captchaSecret || !answer) return false;
  const body = new URLSearchParams({ secret: settings.captchaSecret, response: answer, ...(address ? { remoteip: address } : {}) });
  try {
    const response = await fetch(settings.captchaVerifyUrl, { method: "POST", body, signal: AbortSignal.timeout(5_000) });
    if (!response.ok) return false;
    const result = (await response.json()) as { success?: unknown };
    return result.success === true;
  } catch {
    return false;
  }
}

export function leadFormRoutes(options: LeadFormOptions): express.Router {
  const { ownerPool, settings, jwtSecret, trustProxy } = options;
  const router = express.Router();
  const limiter = (keyPrefix: string, points: number) =>
    new RateLimiterPostgres({
      storeClient: ownerPool,
      storeType: "pool",
      schemaName: "app_private",
      tableName: "rate_limits",
      tableCreated: true,
      clearExpiredByTimeout: false,
      keyPrefix,
      points,
      duration: settings.windowSeconds,
      inMemoryBlockOnConsumed: points + 1,
    });
  const perAddress = limiter("form:address", settings.perAddress);
  const perForm = limiter("form:form", settings.perForm);

  const formOf = async (key: string): Promise<FormRow | null> => {
    if (!/^sbf_[0-9a-f]{32}$/.test(key)) return null;
    const { rows } = await ownerPool.query<FormRow>("select * from app_private.lead_form_settings($1)", [key]);
    return rows[0] ?? null;
  };
  const cors = (req: Request, res: Response, form: FormRow): boolean => {
    const origin = req.get("origin");
    if (origin === undefined) return true;
    if (!form.allowed_origins.includes(origin.toLowerCase())) return false;
    res.set("access-control-allow-origin", origin).set("vary", "Origin");
    return true;
  };
  const answer = (req: Request, res: Response, status: number, code: string, message: string) => {
    if (req.is("application/json") || !req.accepts("html")) {
      res.status(status).json(status < 300 ? { status: "received" } : { error: code, message });
    } else {
      res.status(status).type("html").set("cache-control", "no-store").send(
        `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex"><title>${status < 300 ? "Thank you" : "Not sent"}</title></head>` +
          `<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem"><p>${
            status < 300 ? "Thank you: we received your request." : message.replace(/[&<>"']/g, "")
          }</p></body></html>`,
      );
    }
  };

  router.options("/:key", async (req, res) => {
    const form = await formOf(req.params.key).catch(() => null);
    if (!form || !req.get("origin") || !cors(req, res, form)) {
      res.status(403).end();
      return;
    }
    res.set("access-control-allow-methods", "POST").set("access-control-allow-headers", "content-type, idempotency-key").set("access-control-max-age", "600").status(204).end();
  });

  router.get("/:key/token", async (req, res) => {
    const form = await formOf(req.params.key).catch(() => null);
    if (!form) {
      res.status(404).json({ error: "not_found", message: "No such form" });
      return;
    }
    if (!cors(req, res, form)) {
      res.status(403).json({ error: "origin", message: "This site may not use this form" });
      return;
    }
    res.set("cache-control", "no-store").json({ token: formToken(jwtSecret, req.params.key, Math.floor(Date.now() / 1000)) });
  });

  const bodies = [
    express.json({ limit: settings.maxBodyBytes, strict: true }),
    express.urlencoded({ extended: false, limit: settings.maxBodyBytes, parameterLimit: 60 }),
  ];
  const submit = async (req: Request, res: Response): Promise<void> => {
    const key = req.params.key!;
    const address = clientAddress(req, trustProxy);
    let form: FormRow | null;
    try {
      form = await formOf(key);
    } catch (error) {
      console.error(`[forms] ${(error as Error).message}`);
      answer(req, res, 500, "error", "Something went wrong; nothing was saved. Please try again.");
      return;
    }
    if (!form) {
      answer(req, res, 404, "not_found", "No such form");
      return;
    }
    const limited = async (counter: RateLimiterPostgres, key: string): Promise<boolean> => {
      try {
        await counter.consume(key);
        return false;
      } catch (error) {
        if (!(error instanceof RateLimiterRes)) throw error;
        res.set("retry-after", String(Math.ceil(error.msBeforeNext / 1000)));
        answer(req, res, 429, "rate_limited", "Too many submissions; please try again later.");
        return true;
      }
    };
    if (await limited(perAddress, address ?? "unknown")) return;
    const fields = flatFields(req.body);
    const idempotencyKey = req.get("idempotency-key")?.trim() || fields?._submission_id?.trim() || null;
    const pageUrl = fields?._page ?? req.get("referer") ?? null;
    const origin = req.get("origin") ?? null;
    const userAgent = req.get("user-agent") ?? null;
    const refuse = async (status: number, reason: string, message: string) => {
      await ownerPool
        .query("select app_private.refuse_lead_form_submission($1, $2, $3, $4, $5, $6, $7)", [form!.form_id, reason, idempotencyKey, address, origin, pageUrl, userAgent])
        .catch((error: Error) => console.error(`[forms] could not log a refusal: ${error.message}`));
      answer(req, res, status, reason, message);
    };
    if (!cors(req, res, form)) return refuse(403, "origin", "This site may not send this form");
    if (!fields) return refuse(400, "invalid", "The form's fields must be an object of names and values");
    if ((fields[HONEYPOT] ?? "") !== "") return refuse(422, "honeypot", "The form could not be sent");
    if (form.min_fill_seconds > 0) {
      const age = fields._token === undefined ? null : tokenAge(jwtSecret, key, fields._token, Math.floor(Date.now() / 1000));
      if (age === null) return refuse(422, "bad_token", "The form has expired: reload the page and send it again");
      if (age < form.min_fill_seconds) return refuse(422, "too_fast", "The form was sent too fast: please check it and send it again");
    }
    // The form's own limit counts only what got past the cheap checks, so that junk can't use it up.
    if (await limited(perForm, form.form_id)) return;
    if (form.captcha_required) {
      const captcha = CAPTCHA_FIELDS.map((f) => fields[f]).find((v) => v !== undefined && v !== "");
      if (!(await verifyCaptcha(settings, captcha, address))) return refuse(422, "captcha", "The captcha was not solved: please try again");
    }
    // Phone numbers to E.164 (libphonenumber, in the business's country unless the number says otherwise);
    // one that is not a number is refused by the database with the others' checks.
    const country = (isKnownCountry(form.country) ? form.country : "US") as CountryCode;
    for (const field of form.phone_fields) {
      const value = Object.hasOwn(fields, field) ? fields[field]!.trim() : undefined;
      if (!value) continue;
      const parsed = parsePhoneNumberFromString(value, country);
      if (parsed?.isValid()) fields[field] = parsed.number;
    }
    const submitted = Object.fromEntries(Object.entries(fields).filter(([name]) => !name.startsWith("_") && !CAPTCHA_FIELDS.includes(name)));
    try {
      await ownerPool.query("select * from app_private.submit_lead_form($1, $2::jsonb, $3, $4, $5, $6, $7)", [
        key, JSON.stringify(submitted), idempotencyKey, address, origin, pageUrl, userAgent,
      ]);
    } catch (error) {
      const code = (error as PgError).code ?? "";
      if (code === "P0002") return answer(req, res, 404, "not_found", "No such form");
      if (code === "40001" || code === "40P01") return answer(req, res, 503, "retry", "Please send the form again.");
      if (code.startsWith("22") || code.startsWith("23")) {
        const message = code === "22023" ? (error as Error).message : "A field of the form is not valid: check the phone number, email and the other fields";
        return refuse(422, "invalid", message);
      }
      console.error(`[forms] ${(error as Error).message}`);
      return answer(req, res, 500, "error", "Something went wrong; nothing was saved. Please try again.");
    }
    answer(req, res, 201, "received", "received");
  };

  router.post("/:key", ...bodies, async (req, res) => {
    try {
      await submit(req, res);
    } catch (error) {
      // Express 4 does not catch a rejected handler: answer here, whatever failed (a full pool, a bug).
      console.error(`[forms] ${(error as Error).message}`);
      if (!res.headersSent) answer(req, res, 503, "retry", "Something went wrong; nothing was saved. Please try again.");
    }
  });

  // Unreadable or oversized bodies: a clear answer, nothing written.
  router.use((error: Error & { type?: string; status?: number }, req: Request, res: Response, next: (error?: unknown) => void) => {
    if (error.type === "entity.too.large") return answer(req, res, 413, "too_large", "The form is too large");
    if (error.type === "entity.parse.failed" || error.type === "parameters.too.many" || error.status === 400) {
      return answer(req, res, 400, "invalid", "The form could not be read");
    }
    next(error);
  });
  return router;
}
