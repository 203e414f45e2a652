/**
 * Turns an OutboundEmail into nodemailer message options and into the full RFC 5322 message,
 * shared by the SMTP provider (which sends those bytes) and the local catcher (which stores
 * them), so both produce exactly the same headers:
 *   Message-ID (ours, unchanged), From (name + address), To, Reply-To when given, Subject,
 *   a text part and an optional html part (multipart/alternative), and for marketing email
 *   List-Unsubscribe: <url> with List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058).
 * Non-ASCII headers become RFC 2047 encoded words and bodies quoted-printable or base64 with
 * lines under 78 characters, so the message is 7-bit clean and survives any relay.
 */
import nodemailer from "nodemailer";
import type Mail from "nodemailer/lib/mailer/index.js";
import type StreamTransport from "nodemailer/lib/stream-transport/index.js";
import { EmailError, type OutboundEmail } from "./email.ts";

/** The nodemailer message options for one email (see the file comment for the headers). */
export function mailOptions(email: OutboundEmail): Mail.Options {
  const options: Mail.Options = {
    messageId: email.messageId,
    from: email.from.name ? { name: email.from.name, address: email.from.address } : email.from.address,
    to: email.to,
    subject: email.subject,
    text: email.text,
    // Text and html are content, never a file path or URL for nodemailer to read.
    disableFileAccess: true,
    disableUrlAccess: true,
  };
  if (email.replyTo) options.replyTo = email.replyTo;
  if (email.html !== null) options.html = email.html;
  if (email.unsubscribeUrl) {
    // `list.unsubscribe` renders `List-Unsubscribe: <url>`; nodemailer has no list key for the
    // RFC 8058 companion header (it would format the value as a URL), so that one is set as is.
    options.list = { unsubscribe: email.unsubscribeUrl };
    options.headers = { "List-Unsubscribe-Post": "List-Unsubscribe=One-Click" };
  }
  return options;
}

export interface RenderedEmail {
  /** The whole message, CRLF line endings, as it goes after SMTP DATA. */
  raw: Buffer;
  /** The SMTP envelope: the From address and the recipients. */
  envelope: { from: string; to: string[] };
}

let renderer: nodemailer.Transporter<StreamTransport.SentMessageInfo> | null = null;

/**
 * Renders the full message with nodemailer's stream transport (nothing is sent anywhere).
 * Throws EmailError, permanent: an email that cannot be built will not build on a retry either.
 */
export async function renderEmail(email: OutboundEmail): Promise<RenderedEmail> {
  renderer ??= nodemailer.createTransport({ streamTransport: true, buffer: true, newline: "windows" });
  const cannot = (reason: string, cause?: unknown) =>
    new EmailError(`Could not build email ${email.id} to ${email.to}: ${reason}`, { permanent: true, notAccepted: true, cause });
  let info: StreamTransport.SentMessageInfo;
  try {
    info = await renderer.sendMail(mailOptions(email));
  } catch (err) {
    throw cannot(err instanceof Error ? err.message : String(err), err);
  }
  if (!Buffer.isBuffer(info.message)) throw cannot("nodemailer's stream transport did not return a buffer");
  const from = info.envelope.from;
  if (!from) throw cannot("it has no sender address");
  if (info.envelope.to.length === 0) throw cannot("it has no recipient address");
  return { raw: info.message, envelope: { from, to: info.envelope.to } };
}
