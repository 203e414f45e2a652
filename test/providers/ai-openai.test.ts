/**
 * OpenAiCompatibleResponder against a fake OpenAI-compatible server on 127.0.0.1 (node:http):
 * the request it sends, strict validation of the model's JSON, HTTP errors and timeouts as
 * AiProviderError, and createAiResponder's environment handling.
 */
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AiProviderError, type AiContext } from "../../src/providers/ai.ts";
import { createAiResponder } from "../../src/providers/aiFactory.ts";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";
import { OpenAiCompatibleResponder } from "../../src/providers/aiOpenAi.ts";

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: any;
}

let server: Server;
let baseUrl: string;
let received: Received[] = [];
/** What the fake server does with the next requests; set per test. */
let respond: (res: ServerResponse) => void;

beforeAll(async () => {
  server = createServer((req, res) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (text += chunk));
    req.on("end", () => {
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // keep the raw text
      }
      received.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      respond(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  received = [];
  respond = completion(goodAnswer());
});

function goodAnswer(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    reply: "Thanks! What's the address where you need the work done?",
    intent: "ask_address",
    confidence: 0.876,
    facts: { customerName: "Maria", problem: "kitchen sink leaking", jobType: "leak repair", urgency: null, address: null, preferredTime: null },
    ...overrides,
  };
}

/** A chat completion whose message content is `content` (JSON-encoded unless already a string). */
function completion(content: unknown, status = 200): (res: ServerResponse) => void {
  return (res) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        id: "chatcmpl-test",
        object: "chat.completion",
        choices: [{ index: 0, finish_reason: "stop", message: { role: "assistant", content: typeof content === "string" ? content : JSON.stringify(content) } }],
      }),
    );
  };
}

function raw(status: number, body: string, contentType = "application/json"): (res: ServerResponse) => void {
  return (res) => {
    res.writeHead(status, { "content-type": contentType });
    res.end(body);
  };
}

function context(overrides: Partial<AiContext> = {}): AiContext {
  return {
    businessName: "Acme Plumbing",
    tradeType: "plumbing",
    greetingTemplate: "Hello! I'm here to help with your [TRADE] needs. What can I assist you with today?",
    turns: [
      { sender: "system", body: "Missed call at 9:14" },
      { sender: "ai", body: "Hello! I'm here to help with your plumbing needs. What can I assist you with today?" },
      { sender: "customer", body: "Hi, this is Maria, my kitchen sink is leaking" },
      { sender: "human", body: "We'll get back to you" },
      { sender: "customer", body: "ok thanks" },
    ],
    known: { customerName: "Maria Lopez", preferredTime: "tomorrow morning" },
    ...overrides,
  };
}

function responder(options: Partial<ConstructorParameters<typeof OpenAiCompatibleResponder>[0]> = {}): OpenAiCompatibleResponder {
  return new OpenAiCompatibleResponder({ baseUrl, apiKey: "sk-test-123", model: "test-model", timeoutMs: 5_000, ...options });
}

async function providerError(promise: Promise<unknown>): Promise<AiProviderError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(AiProviderError);
    expect((error as Error).name).toBe("AiProviderError");
    return error as AiProviderError;
  }
  throw new Error("expected an AiProviderError");
}

describe("request", () => {
  it("POSTs the model, a JSON response format, a system prompt and the turns as user/assistant messages", async () => {
    await responder().reply(context());
    expect(received).toHaveLength(1);
    const [request] = received;
    expect(request?.method).toBe("POST");
    expect(request?.url).toBe("/v1/chat/completions");
    expect(request?.headers["content-type"]).toBe("application/json");
    expect(request?.headers.authorization).toBe("Bearer sk-test-123");
    expect(request?.body.model).toBe("test-model");
    expect(request?.body.response_format).toEqual({ type: "json_object" });

    const messages = request?.body.messages as { role: string; content: string }[];
    expect(messages.map((message) => message.role)).toEqual(["system", "assistant", "user", "assistant", "user"]);
    expect(messages.slice(1).map((message) => message.content)).toEqual([
      "Hello! I'm here to help with your plumbing needs. What can I assist you with today?",
      "Hi, this is Maria, my kitchen sink is leaking",
      "(sent by staff) We'll get back to you",
      "ok thanks",
    ]);
    const system = messages[0]?.content ?? "";
    expect(system).toContain("Acme Plumbing");
    expect(system).toContain("Answer ONLY with a JSON object");
    expect(system).toMatch(/problem.*address.*urgent/s);
    expect(system).toContain("Missed call at 9:14"); // system turns go into the prompt, not the chat
    expect(system).toContain('"customerName":"Maria Lopez"'); // known facts
    expect(system).toContain("your plumbing needs"); // greeting with [TRADE] replaced
    expect(system).not.toContain("[TRADE]");
  });

  it("sends no Authorization header without an API key, and accepts a base URL with a trailing slash", async () => {
    await responder({ apiKey: null, baseUrl: `${baseUrl}/` }).reply(context());
    expect(received[0]?.url).toBe("/v1/chat/completions");
    expect(received[0]?.headers.authorization).toBeUndefined();
  });

  it("uses fetchImpl when given", async () => {
    const calls: string[] = [];
    const fetchImpl: typeof fetch = async (input) => {
      calls.push(String(input));
      return new Response(JSON.stringify({ choices: [{ message: { content: JSON.stringify(goodAnswer()) } }] }), { status: 200 });
    };
    const reply = await responder({ baseUrl: "https://ai.example.test/v1", fetchImpl }).reply(context());
    expect(calls).toEqual(["https://ai.example.test/v1/chat/completions"]);
    expect(reply.intent).toBe("ask_address");
    expect(received).toHaveLength(0);
  });

  it.each([
    [{ baseUrl: "not a url" }, /baseUrl is not a valid URL/],
    [{ baseUrl: "ftp://example.com" }, /must start with http/],
    [{ model: " " }, /model must not be empty/],
    [{ timeoutMs: 0 }, /timeoutMs must be a positive number/],
  ])("rejects bad options %j", (options, message) => {
    expect(() => responder(options)).toThrow(message);
  });
});

describe("answer", () => {
  it("turns a good JSON answer into an AiReply: confidence rounded, facts merged with known", async () => {
    const reply = await responder().reply(context());
    expect(reply).toEqual({
      body: "Thanks! What's the address where you need the work done?",
      intent: "ask_address",
      confidence: 0.88,
      facts: {
        customerName: "Maria", // the model's value wins over known
        problem: "kitchen sink leaking",
        jobType: "leak repair",
        urgency: null,
        address: null,
        preferredTime: "tomorrow morning", // known, the model said null
      },
    });
  });

  it("cuts a long reply to 320 characters and accepts facts left out", async () => {
    respond = completion(goodAnswer({ reply: `Hello ${"there ".repeat(100)}`, facts: { urgency: "emergency" } }));
    const reply = await responder().reply(context({ known: {} }));
    expect(reply.body.length).toBeLessThanOrEqual(320);
    expect(reply.body.startsWith("Hello there")).toBe(true);
    expect(reply.facts).toEqual({ customerName: null, problem: null, jobType: null, urgency: "emergency", address: null, preferredTime: null });
  });

  it.each([
    ["content that is not JSON", completion("Sure! Here's my reply: hello"), /not valid JSON/],
    ["a JSON array", completion([goodAnswer()]), /expected a JSON object/],
    ["no reply", completion(goodAnswer({ reply: undefined })), /"reply" must be a non-empty string/],
    ["an empty reply", completion(goodAnswer({ reply: "   " })), /"reply" must be a non-empty string/],
    ["an unknown intent", completion(goodAnswer({ intent: "sell_upgrade" })), /"intent" must be one of .*"sell_upgrade"/],
    ["no intent", completion(goodAnswer({ intent: undefined })), /"intent" must be one of/],
    ["confidence above 1", completion(goodAnswer({ confidence: 1.5 })), /"confidence" must be a number from 0 to 1 \(got 1.5\)/],
    ["confidence as a string", completion(goodAnswer({ confidence: "0.9" })), /"confidence" must be a number/],
    ["no facts", completion(goodAnswer({ facts: undefined })), /"facts" must be an object/],
    ["a numeric address", completion(goodAnswer({ facts: { address: 42 } })), /"facts.address" must be a string or null/],
    ["an unknown urgency", completion(goodAnswer({ facts: { urgency: "very" } })), /"facts.urgency" must be one of low, normal, high, emergency/],
    ["a body that is not JSON", raw(200, "<html>oops</html>", "text/html"), /response is not JSON/],
    ["no choices", raw(200, JSON.stringify({ choices: [] })), /no choices\[0\]\.message\.content/],
    ["a null content (refusal)", raw(200, JSON.stringify({ choices: [{ message: { content: null, refusal: "no" } }] })), /no choices/],
  ])("rejects %s with an AiProviderError", async (_label, handler, message) => {
    respond = handler;
    const error = await providerError(responder().reply(context()));
    expect(error.message).toMatch(message);
    expect(error.message).toContain(`${baseUrl}/chat/completions`);
  });
});

describe("failures", () => {
  it("names the HTTP status of an error answer", async () => {
    respond = raw(500, JSON.stringify({ error: { message: "upstream exploded" } }));
    const error = await providerError(responder().reply(context()));
    expect(error.message).toMatch(/HTTP 500/);
    expect(error.message).toContain("upstream exploded");
    expect(error.status).toBe(500);
  });

  it("does not put the API key in the message of a 401", async () => {
    respond = raw(401, JSON.stringify({ error: { message: "Incorrect API key provided" } }));
    const error = await providerError(responder().reply(context()));
    expect(error.message).toMatch(/HTTP 401.*Incorrect API key/);
    expect(error.message).not.toContain("sk-test-123");
  });

  it("gives up after timeoutMs when the server does not answer", async () => {
    respond = () => {
      // never answer; afterAll closes the connection
    };
    const error = await providerError(responder({ timeoutMs: 200 }).reply(context()));
    expect(error.message).toMatch(/did not answer within 200 ms/);
    expect(error.status).toBeNull();
    expect(error.cause).toBeInstanceOf(Error);
  });

  it("reports a server that cannot be reached", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const error = await providerError(responder({ baseUrl: `http://127.0.0.1:${port}/v1` }).reply(context()));
    expect(error.message).toMatch(/Could not reach the AI provider/);
  });
});

describe("createAiResponder", () => {
  it("gives the local responder by default", () => {
    for (const env of [{}, { AI_PROVIDER: "" }, { AI_PROVIDER: "local" }]) {
      const ai = createAiResponder(env);
      expect(ai).toBeInstanceOf(LocalAiResponder);
      expect(ai.name).toBe("local");
    }
  });

  it("builds the OpenAI-compatible responder with the default model and no key", async () => {
    const ai = createAiResponder({ AI_PROVIDER: "openai-compatible", AI_BASE_URL: baseUrl });
    expect(ai).toBeInstanceOf(OpenAiCompatibleResponder);
    expect(ai.name).toBe("openai-compatible");
    await ai.reply(context());
    expect(received[0]?.body.model).toBe("gpt-4o-mini");
    expect(received[0]?.headers.authorization).toBeUndefined();
  });

  it("passes AI_API_KEY, AI_MODEL and AI_TIMEOUT_MS through", async () => {
    const ai = createAiResponder({
      AI_PROVIDER: "openai-compatible",
      AI_BASE_URL: baseUrl,
      AI_API_KEY: "sk-env",
      AI_MODEL: "llama3.1",
      AI_TIMEOUT_MS: "200",
    });
    await ai.reply(context());
    expect(received[0]?.body.model).toBe("llama3.1");
    expect(received[0]?.headers.authorization).toBe("Bearer sk-env");
    respond = () => {};
    const error = await providerError(ai.reply(context()));
    expect(error.message).toMatch(/within 200 ms/);
  });

  it.each([
    [{ AI_PROVIDER: "openai-compatible" }, /AI_BASE_URL is required/],
    [{ AI_PROVIDER: "openai-compatible", AI_BASE_URL: "  " }, /AI_BASE_URL is required/],
    [{ AI_PROVIDER: "openai-compatible", AI_BASE_URL: "api.openai.com/v1" }, /AI_BASE_URL is not a valid URL/],
    [{ AI_PROVIDER: "openai-compatible", AI_BASE_URL: "file:///tmp" }, /AI_BASE_URL must start with http/],
    [{ AI_PROVIDER: "openai-compatible", AI_BASE_URL: "https://x.test/v1", AI_TIMEOUT_MS: "soon" }, /AI_TIMEOUT_MS must be a whole number/],
    [{ AI_PROVIDER: "openai-compatible", AI_BASE_URL: "https://x.test/v1", AI_TIMEOUT_MS: "0" }, /AI_TIMEOUT_MS must be a whole number/],
    [{ AI_PROVIDER: "openai" }, /AI_PROVIDER must be "local" or "openai-compatible" \(got "openai"\)/],
  ])("rejects %j", (env, message) => {
    expect(() => createAiResponder(env)).toThrow(message);
  });
});
