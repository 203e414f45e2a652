/**
 * The AI responder interface for the missed-call-to-text service: when nobody at the business
 * answers the SMS thread, an AiResponder writes the next text, classifies it (intent) and pulls
 * lead facts (problem, address, urgency, ...) out of the conversation.
 *
 * Two implementations: LocalAiResponder (rule-based, deterministic, no network; the default) and
 * OpenAiCompatibleResponder (any /chat/completions endpoint). createAiResponder (aiFactory.ts) picks
 * one from the environment. Only the contract lives here (as sms.ts and email.ts for their
 * providers): the implementations import it, and this module imports neither of them.
 */

export type Urgency = "low" | "normal" | "high" | "emergency";

export interface LeadFacts {
  customerName?: string | null;
  problem?: string | null;
  jobType?: string | null;
  urgency?: Urgency | null;
  address?: string | null;
  preferredTime?: string | null;
}

export interface ConversationTurn {
  sender: "customer" | "ai" | "human" | "system";
  body: string;
}

export interface AiContext {
  businessName: string;
  /** e.g. "plumbing"; may be null. */
  tradeType: string | null;
  /** e.g. "Hello! I'm here to help with your [TRADE] needs. ..."; [TRADE] becomes the trade, or "service" when null. */
  greetingTemplate: string;
  /** Oldest first; the last one is normally the customer's newest message. */
  turns: ConversationTurn[];
  /** What we already know (from earlier turns / the CRM). */
  known: LeadFacts;
}

export interface AiReply {
  /** The SMS to send: plain text, at most 320 characters. */
  body: string;
  /** One of: greeting, ask_problem, ask_address, ask_urgency, propose_callback, emergency, not_interested, wrong_number, other. */
  intent: string;
  /** 0..1, rounded to 2 decimals. */
  confidence: number;
  /** Facts extracted from the turns, merged with `known`. */
  facts: LeadFacts;
}

export interface AiResponder {
  readonly name: string;
  reply(context: AiContext): Promise<AiReply>;
}

/** The provider failed (HTTP error, timeout, unusable answer). `status` is the HTTP status when there was one. */
export class AiProviderError extends Error {
  override name = "AiProviderError";
  readonly status: number | null;

  constructor(message: string, options: { cause?: unknown; status?: number | null } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = options.status ?? null;
  }
}
