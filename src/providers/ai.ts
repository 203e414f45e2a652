/**
 * The AI responder interface for the missed-call-to-text service: when nobody at the business
 * answers the SMS thread, an AiResponder writes the next text, classifies it (intent) and pulls
 * lead facts (problem, address, urgency, ...) out of the conversation.
 *
 * Two implementations: LocalAiResponder (rule-based, deterministic, no network; the default) and
 * OpenAiCompatibleResponder (any /chat/completions endpoint). createAiResponder picks one from the
 * environment. The types live here; the implementations import them with `import type`.
 */
import { LocalAiResponder } from "./aiLocal.ts";
import { OpenAiCompatibleResponder } from "./aiOpenAi.ts";

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

/**
 * Builds the responder the environment asks for:
 * AI_PROVIDER ("local" by default, or "openai-compatible"), AI_BASE_URL (required for
 * openai-compatible, e.g. https://api.openai.com/v1), AI_API_KEY (optional), AI_MODEL
 * (default "gpt-4o-mini"), AI_TIMEOUT_MS (default 15000).
 */
export function createAiResponder(env: Record<string, string | undefined>): AiResponder {
  const value = (key: string): string | undefined => {
    const raw = env[key]?.trim();
    return raw === undefined || raw === "" ? undefined : raw;
  };

  const provider = value("AI_PROVIDER") ?? "local";
  if (provider === "local") return new LocalAiResponder();
  if (provider !== "openai-compatible") {
    throw new Error(`AI_PROVIDER must be "local" or "openai-compatible" (got "${provider}")`);
  }

  const baseUrl = value("AI_BASE_URL");
  if (baseUrl === undefined) {
    throw new Error('AI_BASE_URL is required when AI_PROVIDER is "openai-compatible" (for example https://api.openai.com/v1)');
  }
  let parsed: URL;
  try {
    parsed = new URL(baseUrl);
  } catch {
    throw new Error(`AI_BASE_URL is not a valid URL (got "${baseUrl}")`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new Error(`AI_BASE_URL must start with http:// or https:// (got "${baseUrl}")`);
  }

  const timeoutText = value("AI_TIMEOUT_MS") ?? "15000";
  const timeoutMs = /^\d+$/.test(timeoutText) ? Number(timeoutText) : Number.NaN;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
    throw new Error(`AI_TIMEOUT_MS must be a whole number of milliseconds greater than 0 (got "${timeoutText}")`);
  }

  return new OpenAiCompatibleResponder({
    baseUrl,
    apiKey: value("AI_API_KEY") ?? null,
    model: value("AI_MODEL") ?? "gpt-4o-mini",
    timeoutMs,
  });
}
