/**
 * The email provider interface every implementation (SMTP through nodemailer, the local catcher)
 * follows, and the one error type they throw. As with texts, the outbox row comes first: the
 * email__send task claims a row, hands it to the provider, and records what the provider said.
 */

/** One email to hand to a provider, fully rendered by the database (claim_outbound_email). */
export interface OutboundEmail {
  /** Our outbox row id; the Message-ID header is built from it, so a lost answer can be looked up. */
  id: string;
  /** The RFC 5322 Message-ID, with angle brackets: <uuid@domain>. */
  messageId: string;
  from: { name: string | null; address: string };
  to: string;
  replyTo: string | null;
  subject: string;
  text: string;
  html: string | null;
  /** For marketing and nurture emails: the one-click unsubscribe URL (List-Unsubscribe + List-Unsubscribe-Post). */
  unsubscribeUrl: string | null;
}

export interface SentEmail {
  /** The Message-ID the provider sent with (ours). */
  messageId: string;
  /** The server's final answer, e.g. "250 2.0.0 Ok: queued as 4F1C". */
  response: string;
}

export interface EmailProvider {
  readonly name: "smtp" | "local";
  /** Hands one email to the provider. Throws EmailError. */
  send(email: OutboundEmail): Promise<SentEmail>;
  /**
   * Whether the provider has an email with this Message-ID: true / false, or null when the
   * provider cannot tell (SMTP has no such query). Used to settle an email whose send outcome
   * we never recorded: true → sent, false → queued again, null → marked uncertain, never resent.
   */
  lookup(messageId: string): Promise<boolean | null>;
  /** Closes connections (pooled SMTP transports). */
  close(): Promise<void>;
}

export interface EmailErrorOptions {
  /** The SMTP reply code when the server answered (e.g. 550, 451); null when there was no answer. */
  responseCode?: number | null;
  /** True when retrying cannot help (5xx: unknown mailbox, refused sender, bad credentials). */
  permanent: boolean;
  /**
   * True when the server certainly did not take the email (a 4xx answer, or no connection at all),
   * so it may be tried again. False with permanent false: the outcome is unknown (the connection
   * broke after the message was transmitted), so it must not be sent again automatically.
   */
  notAccepted: boolean;
  cause?: unknown;
}

export class EmailError extends Error {
  override name = "EmailError";
  readonly responseCode: number | null;
  readonly permanent: boolean;
  readonly notAccepted: boolean;

  constructor(message: string, options: EmailErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.responseCode = options.responseCode ?? null;
    this.permanent = options.permanent;
    this.notAccepted = options.notAccepted;
  }
}
