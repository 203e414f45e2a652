/**
 * The SMTP email provider: one connection per email through nodemailer's SMTPConnection, to the
 * server named by an SMTP URL (`smtp://user:pass@host:587`, `smtps://user:pass@host:465`;
 * query options as nodemailer reads them, e.g. `?tls.rejectUnauthorized=false`, `?requireTLS=true`).
 *
 * Why SMTPConnection and not nodemailer's SMTP transport: the answer we must give the outbox is
 * whether the server may have taken the email, and that depends on how far the session got. The
 * transport reports a lost connection the same way at every stage (code ECONNECTION, ESOCKET or
 * ETIMEDOUT, command "CONN": a refused connection, a greeting that never came and a socket closed
 * after the message body are indistinguishable), so this provider drives the same steps the
 * transport does (connect, login when the server offers AUTH, send, close) and records the stage.
 *
 * Error mapping (see EmailError):
 *   - the server answered 5xx (err.responseCode, at any stage: greeting, AUTH 535, MAIL FROM,
 *     RCPT TO, DATA, or after the message body)         → permanent, notAccepted
 *   - the server answered 4xx (421, 450, 451, 452, 454)  → not permanent, notAccepted (try later)
 *   - no answer, and the email was refused before reaching the server (nodemailer codes with no
 *     response: EENVELOPE invalid sender/recipient or no recipients, EMESSAGE too large for the
 *     server's SIZE, EAUTH missing credentials or no usable method, ENOAUTH, EOAUTH2, ECONFIG,
 *     EREQUIRETLS): retrying the same email cannot help → permanent, notAccepted
 *   - no answer, and the session never reached the message body (the server had not answered
 *     DATA with 354): EDNS, ESOCKET (refused, reset), ETIMEDOUT (connection or greeting timeout),
 *     ECONNECTION, ETLS, EPROTOCOL (odd greeting or EHLO)  → not permanent, notAccepted
 *   - no answer once the body was being transmitted (socket closed or timed out waiting for the
 *     final reply), or anything unknown → not permanent, not notAccepted: the outcome is unknown
 *     and the email must not be sent again automatically.
 */
import { Readable } from "node:stream";
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js";
import { parseConnectionUrl } from "nodemailer/lib/shared/index.js";
import { EmailError, type EmailProvider, type OutboundEmail, type SentEmail } from "./email.ts";
import { renderEmail } from "./emailMessage.ts";

export interface SmtpEmailProviderOptions {
  /** smtp:// or smtps:// URL with optional user:pass@ and nodemailer connection options as query. */
  url: string;
  /** Connection, greeting, socket-inactivity and DNS timeout in milliseconds; default 30000. */
  timeoutMs?: number;
}

/** How far one SMTP session got; decides what a lost connection means. */
type Stage = "connect" | "envelope" | "body";

/** nodemailer codes for an email refused locally or by policy before anything was transmitted. */
const REFUSED_BEFORE_SENDING = new Set(["EENVELOPE", "EMESSAGE", "EAUTH", "ENOAUTH", "EOAUTH2", "ECONFIG", "EREQUIRETLS"]);

type SmtpError = SMTPConnection.SMTPError;

function parseSmtpUrl(url: string): SMTPConnection.Options {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error("SMTP URL is not a URL; expected smtp://user:pass@host:587 or smtps://user:pass@host:465");
  }
  if (parsed.protocol !== "smtp:" && parsed.protocol !== "smtps:") {
    throw new Error(`SMTP URL must start with smtp:// or smtps://, got ${parsed.protocol}//`);
  }
  if (!parsed.hostname) throw new Error("SMTP URL has no host");
  return parseConnectionUrl(url);
}

/** The message as a stream that notes when nodemailer starts reading it: after the server's 354. */
function bodyStream(raw: Buffer, onRead: () => void): Readable {
  return new Readable({
    read() {
      onRead();
      this.push(raw);
      this.push(null);
    },
  });
}

/** Maps what SMTPConnection reported at `stage` to an EmailError (see the file comment). */
export function toEmailError(err: unknown, stage: Stage, to: string): EmailError {
  if (err instanceof EmailError) return err;
  const e = (err ?? {}) as SmtpError;
  const detail = err instanceof Error ? err.message : String(err);
  const code = typeof e.code === "string" ? e.code : null;
  const responseCode = typeof e.responseCode === "number" ? e.responseCode : null;
  const suffix = code && !detail.includes(code) ? ` (${code})` : "";
  const message = `SMTP send to ${to} failed: ${detail}${suffix}`;

  if (responseCode !== null && responseCode >= 400 && responseCode < 600) {
    return new EmailError(message, { responseCode, permanent: responseCode >= 500, notAccepted: true, cause: err });
  }
  if (code && REFUSED_BEFORE_SENDING.has(code)) {
    return new EmailError(message, { responseCode, permanent: true, notAccepted: true, cause: err });
  }
  if (stage !== "body") {
    return new EmailError(message, { responseCode, permanent: false, notAccepted: true, cause: err });
  }
  return new EmailError(`${message}; the server may or may not have taken it`, {
    responseCode,
    permanent: false,
    notAccepted: false,
    cause: err,
  });
}

export class SmtpEmailProvider implements EmailProvider {
  readonly name = "smtp";
  readonly #options: SMTPConnection.Options;
  readonly #auth: SMTPConnection.Credentials | null;
  readonly #open = new Set<SMTPConnection>();

  constructor(opts: SmtpEmailProviderOptions) {
    const { auth, ...connection } = parseSmtpUrl(opts.url);
    const timeoutMs = opts.timeoutMs ?? 30_000;
    this.#options = {
      ...connection,
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
      dnsTimeout: timeoutMs,
    };
    // From a URL, nodemailer's auth is always { user, pass } (decoded from user:pass@).
    const credentials = auth as Partial<SMTPConnection.Credentials> | undefined;
    this.#auth = credentials?.user ? { user: credentials.user, pass: credentials.pass ?? "" } : null;
  }

  async send(email: OutboundEmail): Promise<SentEmail> {
    const rendered = await renderEmail(email);

    let stage: Stage = "connect";
    const connection = new SMTPConnection(this.#options);
    this.#open.add(connection);
    try {
      const response = await new Promise<string>((resolve, reject) => {
        // Errors after the outcome is settled (teardown) are ignored; an 'error' with no listener would crash.
        connection.on("error", reject);
        // 'end' without 'error': the server hung up before greeting us, or close() aborted this send.
        connection.once("end", () => reject(Object.assign(new Error("Connection closed unexpectedly"), { code: "ECONNECTION" })));
        connection.connect(() => {
          const deliver = () => {
            stage = "envelope";
            const body = bodyStream(rendered.raw, () => (stage = "body"));
            connection.send(rendered.envelope, body, (err, info) => (err ? reject(err) : resolve(info.response)));
          };
          // As nodemailer's SMTP transport: log in only when the server offers AUTH.
          const offersAuth = (connection as SMTPConnection & { allowsAuth?: boolean }).allowsAuth === true;
          if (this.#auth && offersAuth) {
            connection.login(this.#auth, (err) => (err ? reject(err) : deliver()));
          } else {
            deliver();
          }
        });
      });
      return { messageId: email.messageId, response };
    } catch (err) {
      throw toEmailError(err, stage, email.to);
    } finally {
      this.#open.delete(connection);
      connection.close();
    }
  }

  /** SMTP has no way to ask a server whether it took a message. */
  async lookup(_messageId: string): Promise<boolean | null> {
    return null;
  }

  /** Closes connections of sends still in flight (their send() rejects). */
  async close(): Promise<void> {
    for (const connection of this.#open) connection.close();
    this.#open.clear();
  }
}
