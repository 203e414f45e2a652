/**
 * The SMS provider interface every implementation (Twilio, the local development provider)
 * follows, and the one error type they throw. Callers decide from `ProviderError.permanent`
 * whether to retry a send later or to mark the message as failed.
 */

/** One message to hand to a provider. Exactly one of `from` / `messagingServiceSid` should be set. */
export interface OutboundSms {
  to: string;
  from: string | null;
  messagingServiceSid: string | null;
  body: string;
  statusCallbackUrl: string | null;
}

/** A message as the provider sees it. `from` is "" while a Messaging Service has not picked a sender yet. */
export interface ProviderMessage {
  sid: string;
  status: string;
  to: string;
  from: string;
  body: string;
  dateCreated: Date | null;
  errorCode: number | null;
  errorMessage: string | null;
}

export interface SmsProvider {
  readonly name: "twilio" | "local";
  /** Hands one message to the provider. Throws ProviderError. */
  send(message: OutboundSms): Promise<ProviderMessage>;
  /** The provider's current view of one message, or null when it does not know the sid. */
  fetch(sid: string): Promise<ProviderMessage | null>;
  /**
   * Messages the provider sent to `to` (and from `from` when given) created at or after `since`,
   * newest first: used to reconcile a message whose send outcome we never recorded.
   */
  findSent(query: { to: string; from: string | null; since: Date }): Promise<ProviderMessage[]>;
}

export interface ProviderErrorOptions {
  /** The provider's error code (Twilio's, e.g. 21211 invalid 'To' number), when it gave one. */
  code?: number | null;
  /** The HTTP status of the provider's answer; null when there was no answer (network error, timeout). */
  httpStatus?: number | null;
  /** True when retrying cannot help (invalid number, unsubscribed recipient, bad credentials). */
  permanent: boolean;
  cause?: unknown;
}

/**
 * A provider call failed. `permanent: false` means the same call may succeed later (network
 * error, timeout, 429, 5xx) and, for a send, that the provider may or may not have accepted it.
 */
export class ProviderError extends Error {
  override name = "ProviderError";
  readonly code: number | null;
  readonly httpStatus: number | null;
  readonly permanent: boolean;

  constructor(message: string, options: ProviderErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code ?? null;
    this.httpStatus = options.httpStatus ?? null;
    this.permanent = options.permanent;
  }
}
