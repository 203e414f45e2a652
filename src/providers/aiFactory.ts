/**
 * Picks the AI responder the environment asks for (used by makeServices). Moved out of ai.ts so
 * that the contract module imports no implementation: aiFactory.ts -> aiLocal.ts / aiOpenAi.ts ->
 * ai.ts, never back.
 */
import type { AiResponder } from "./ai.ts";
import { LocalAiResponder } from "./aiLocal.ts";
import { OpenAiCompatibleResponder } from "./aiOpenAi.ts";

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
