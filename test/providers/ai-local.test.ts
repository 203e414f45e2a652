/**
 * LocalAiResponder, the rule-based SMS assistant: greeting from the tenant's template, fact
 * extraction, asking for the next missing fact (never a known one), emergencies, polite closings,
 * deterministic confidence, and staying within one 320-character reply whatever comes in.
 */
import { describe, expect, it } from "vitest";
import type { AiContext, AiReply, ConversationTurn, LeadFacts } from "../../src/providers/ai.ts";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";

const TEMPLATE = "Hello! I'm here to help with your [TRADE] needs. What can I assist you with today?";
const responder = new LocalAiResponder();

function context(overrides: Partial<AiContext> = {}): AiContext {
  return {
    businessName: "Acme Home Services",
    tradeType: "plumbing",
    greetingTemplate: TEMPLATE,
    turns: [],
    known: {},
    ...overrides,
  };
}

const customer = (body: string): ConversationTurn => ({ sender: "customer", body });
const ai = (body: string): ConversationTurn => ({ sender: "ai", body });

async function replyTo(messages: string[], overrides: Partial<AiContext> = {}): Promise<AiReply> {
  return responder.reply(context({ turns: messages.map(customer), ...overrides }));
}

/** Plays a conversation: after each customer message the responder answers and its text joins the thread. */
async function play(tradeType: string | null, messages: string[], known: LeadFacts = {}): Promise<AiReply[]> {
  const turns: ConversationTurn[] = [];
  const replies: AiReply[] = [];
  for (const message of messages) {
    turns.push(customer(message));
    const reply = await responder.reply(context({ tradeType, turns: [...turns], known }));
    replies.push(reply);
    turns.push(ai(reply.body));
  }
  return replies;
}

function expectWellFormed(reply: AiReply): void {
  expect(reply.body.length).toBeGreaterThan(0);
  expect(reply.body.length).toBeLessThanOrEqual(320);
  expect(reply.confidence).toBeGreaterThanOrEqual(0);
  expect(reply.confidence).toBeLessThanOrEqual(1);
  expect(Math.round(reply.confidence * 100) / 100).toBe(reply.confidence);
}

describe("greeting", () => {
  it("answers an empty conversation with the tenant's template, [TRADE] replaced", async () => {
    const reply = await responder.reply(context());
    expect(reply.intent).toBe("greeting");
    expect(reply.body).toBe("Hello! I'm here to help with your plumbing needs. What can I assist you with today?");
    expect(reply.facts).toEqual({
      customerName: null,
      problem: null,
      jobType: null,
      urgency: null,
      address: null,
      preferredTime: null,
    });
  });

  it.each([
    [null, "Hello! I'm here to help with your service needs. What can I assist you with today?"],
    ["electrical", "Hello! I'm here to help with your electrical needs. What can I assist you with today?"],
    ["hvac", "Hello! I'm here to help with your HVAC needs. What can I assist you with today?"],
  ])("uses %s as the trade (null becomes \"service\")", async (tradeType, expected) => {
    const reply = await responder.reply(context({ tradeType }));
    expect(reply.body).toBe(expected);
  });

  it("replaces every [TRADE] in the template", async () => {
    const reply = await responder.reply(context({ greetingTemplate: "[TRADE] trouble? Our [TRADE] team can help. What's up?" }));
    expect(reply.body).toBe("plumbing trouble? Our plumbing team can help. What's up?");
  });

  it("falls back to a generic greeting when the template is empty", async () => {
    const reply = await responder.reply(context({ greetingTemplate: "  " }));
    expect(reply.intent).toBe("greeting");
    expect(reply.body).toBe("Hi! Thanks for contacting Acme Home Services. What can we help you with today?");
  });

  it("greets when the first message says nothing about the problem", async () => {
    for (const message of ["Hi", "Hello? Who is this", "hey you called me", "Hi, this is John Smith"]) {
      const reply = await replyTo([message]);
      expect(reply.intent, message).toBe("greeting");
      expect(reply.facts.problem, message).toBeNull();
    }
  });

  it("acknowledges a problem described before the first reply and asks for the next fact instead of the greeting's question", async () => {
    const reply = await replyTo(["Hi, my kitchen sink is leaking under the cabinet"]);
    expect(reply.intent).toBe("ask_address");
    expect(reply.body).toBe(
      "Hello! I'm here to help with your plumbing needs. Thanks! What's the address where you need the work done (street, city and ZIP)?",
    );
    expect(reply.facts.problem).toBe("Hi, my kitchen sink is leaking under the cabinet");
    expect(reply.facts.jobType).toBe("leak repair");
  });

  it("greets only once: later turns ask for the problem without the template", async () => {
    const reply = await responder.reply(context({ turns: [customer("hi"), ai("Hello! ..."), customer("hello?")] }));
    expect(reply.intent).toBe("ask_problem");
    expect(reply.body).toBe("Thanks! Could you tell me a bit about the problem you need help with?");
  });
});

describe("scripted conversations", () => {
  it("plumbing: name, problem, address, urgency and time, then a callback", async () => {
    const replies = await play("plumbing", [
      "Hi, this is Maria Lopez",
      "My kitchen drain is clogged and backing up into the sink",
      "1208 Oak Ridge Dr, Austin, TX 78704",
      "No rush, tomorrow morning works",
    ]);
    expect(replies.map((reply) => reply.intent)).toEqual(["greeting", "ask_address", "ask_urgency", "propose_callback"]);
    expect(replies[1]?.body).toBe("Thanks, Maria! What's the address where you need the work done (street, city and ZIP)?");
    const last = replies.at(-1)!;
    expect(last.body).toBe(
      "Thanks! We have what we need: drain cleaning at 1208 Oak Ridge Dr, Austin, TX 78704. " +
        "Someone will call you back shortly to confirm a time. We noted: tomorrow morning.",
    );
    expect(last.facts).toEqual({
      customerName: "Maria Lopez",
      problem: "My kitchen drain is clogged and backing up into the sink",
      jobType: "drain cleaning",
      urgency: "low",
      address: "1208 Oak Ridge Dr, Austin, TX 78704",
      preferredTime: "tomorrow morning",
    });
    for (const reply of replies) expectWellFormed(reply);
  });

  it("electrical: problem and name in the first text, urgency 'today' is high", async () => {
    const replies = await play("electrical", [
      "The breaker keeps tripping in my garage, my name is dave",
      "55 Maple Avenue",
      "need someone today if possible",
    ]);
    expect(replies.map((reply) => reply.intent)).toEqual(["ask_address", "ask_urgency", "propose_callback"]);
    expect(replies[0]?.body).toBe(
      "Hello! I'm here to help with your electrical needs. Thanks, Dave! What's the address where you need the work done (street, city and ZIP)?",
    );
    expect(replies.at(-1)?.facts).toMatchObject({
      customerName: "Dave",
      jobType: "breaker panel",
      address: "55 Maple Avenue",
      urgency: "high",
    });
    expect(replies.at(-1)?.body).toContain("breaker panel at 55 Maple Avenue");
  });

  it("hvac: an answer to the urgency question without urgency words counts as normal", async () => {
    const replies = await play("hvac", [
      "My AC stopped cooling last night",
      "it's at 7 Birch Ln Unit 2, Denver CO 80203",
      "hmm not sure, sometime this week",
    ]);
    expect(replies.map((reply) => reply.intent)).toEqual(["ask_address", "ask_urgency", "propose_callback"]);
    expect(replies.at(-1)?.facts).toMatchObject({
      jobType: "AC repair",
      address: "7 Birch Ln Unit 2, Denver CO 80203",
      urgency: "normal",
    });
  });

  it("accepts an address without a street suffix when it answers the address question", async () => {
    const replies = await play("plumbing", ["toilet keeps running", "45 Oak Hollow, Springfield"]);
    expect(replies[1]?.intent).toBe("ask_urgency");
    expect(replies[1]?.facts.address).toBe("45 Oak Hollow, Springfield");
  });

  it("does not take a time for an address", async () => {
    const replies = await play("plumbing", ["toilet keeps running", "after 5 pm works best"]);
    expect(replies[1]?.intent).toBe("ask_address");
    expect(replies[1]?.facts.address).toBeNull();
    expect(replies[1]?.facts.preferredTime).toBe("after 5 pm");
  });

  it("after proposing the callback, a further message gets a short confirmation, not the same questions", async () => {
    const replies = await play("plumbing", ["leaking pipe at 9 Pine St, asap", "ok thanks, after 5pm please"]);
    expect(replies.map((reply) => reply.intent)).toEqual(["propose_callback", "other"]);
    expect(replies[1]?.body).toBe("Thanks! Someone from Acme Home Services will call you back shortly. We noted: after 5pm.");
  });
});

describe("fact extraction", () => {
  it.each([
    ["plumbing", "water heater is making noise", "water heater"],
    ["plumbing", "the toilet won't flush", "toilet repair"],
    ["plumbing", "shower drain clogged", "drain cleaning"],
    ["electrical", "half my outlets stopped working", "outlet repair"],
    ["electrical", "lost power in the kitchen", "power outage"],
    ["hvac", "the furnace is making a banging noise", "heating repair"],
    ["hvac", "my water heater is broken", "water heater"],
    ["roofing", "a few shingles blew off", "roof repair"],
    ["plumbing", "my AC is broken", "AC repair"],
    [null, "roof has a hole", "roof repair"],
    ["plumbing", "can someone come look at my fence", null],
  ])("%s: %j -> job type %s", async (tradeType, message, jobType) => {
    const reply = await replyTo([message], { tradeType });
    expect(reply.facts.jobType).toBe(jobType);
  });

  it.each([
    ["basement is flooding", "emergency"],
    ["a pipe burst in the wall", "emergency"],
    ["I smell gas near the stove", "emergency"],
    ["the panel is throwing sparks", "emergency"],
    ["no heat and it's freezing in here", "emergency"],
    ["This is an emergency", "emergency"],
    ["need it asap right now", "emergency"],
    ["need someone today", "high"],
    ["it's urgent", "high"],
    ["as soon as you can please", "high"],
    ["no rush on this one", "low"],
    ["next week is fine", "low"],
    ["whenever works", "low"],
    ["not urgent, the faucet drips", "low"],
    ["not an emergency but the faucet drips", "low"],
    ["no heat upstairs", null],
    ["smoke detector keeps chirping", null],
    ["dripping faucet", null],
  ])("%j -> urgency %s", async (message, urgency) => {
    const reply = await replyTo([message]);
    expect(reply.facts.urgency).toBe(urgency);
  });

  it.each([
    ["I'm at 42 Elm Street, Springfield, IL 62704. Thanks", "42 Elm Street, Springfield, IL 62704"],
    ["100 N Main St Apt 4, Austin TX 78701", "100 N Main St Apt 4, Austin TX 78701"],
    ["address is 9 Pine Ave.", "9 Pine Ave"],
    ["3300 Sunset Blvd, Los Angeles", "3300 Sunset Blvd, Los Angeles"],
    ["it's 12 Harbor Way 02110", "12 Harbor Way 02110"],
    ["we have 2 bathrooms upstairs", null],
    ["call after 5 pm", null],
  ])("%j -> address %s", async (message, address) => {
    const reply = await replyTo(["my drain is clogged", message]);
    expect(reply.facts.address).toBe(address);
  });

  it.each([
    ["My name is sarah and the outlet is dead", "Sarah"],
    ["this is Bob Jones, my sink leaks", "Bob Jones"],
    ["Hi this is Ana", "Ana"],
    ["this is urgent, the drain is clogged", null],
    ["This is Urgent", null],
    ["my drain is clogged", null],
  ])("%j -> name %s", async (message, name) => {
    const reply = await replyTo([message]);
    expect(reply.facts.customerName).toBe(name);
  });

  it.each([
    ["can you come tomorrow morning", "tomorrow morning"],
    ["any time after 5pm", "after 5pm"],
    ["before noon would be great", "before noon"],
    ["Saturday afternoon is best", "Saturday afternoon"],
    ["next weekend", "next weekend"],
    ["my drain is clogged", null],
  ])("%j -> preferred time %s", async (message, time) => {
    const reply = await replyTo(["my drain is clogged", message]);
    expect(reply.facts.preferredTime).toBe(time);
  });

  it("takes the problem from the first substantive message and trims it to 500 characters", async () => {
    const long = `The pipe under the sink ${"keeps leaking ".repeat(60)}`;
    const reply = await replyTo(["hi", long, "it also smells weird"]);
    expect(reply.facts.problem).toBe(long.replace(/\s+/g, " ").trim().slice(0, 500).trimEnd());
    expect(reply.facts.problem?.length).toBeLessThanOrEqual(500);
  });

  it("reads only the customer's turns, not the assistant's or the platform's", async () => {
    const reply = await responder.reply(
      context({
        turns: [
          { sender: "system", body: "Missed call from +15125550100 at 100 Main St, emergency line" },
          ai("How urgent is this? Is it an emergency?"),
          { sender: "human", body: "This is Tom from the office, is it flooding?" },
        ],
      }),
    );
    expect(reply.facts).toEqual({
      customerName: null,
      problem: null,
      jobType: null,
      urgency: null,
      address: null,
      preferredTime: null,
    });
  });
});

describe("known facts", () => {
  it.each<[LeadFacts, string]>([
    [{}, "greeting"],
    [{ problem: "leaking water heater" }, "ask_address"],
    [{ problem: "leaking water heater", address: "12 Main St" }, "ask_urgency"],
    [{ problem: "leaking water heater", urgency: "high" }, "ask_address"],
    [{ problem: "leaking water heater", address: "12 Main St", urgency: "normal" }, "propose_callback"],
  ])("with known %j the first reply is %s", async (known, intent) => {
    const reply = await responder.reply(context({ known }));
    expect(reply.intent).toBe(intent);
  });

  it("never asks again for a fact it already has", async () => {
    const known: LeadFacts = { address: "12 Main St", urgency: "high" };
    const replies = await play("plumbing", ["hi", "toilet is clogged"], known);
    expect(replies.map((reply) => reply.intent)).toEqual(["greeting", "propose_callback"]);
    expect(replies[1]?.body).toContain("toilet repair at 12 Main St");
    for (const reply of replies) {
      expect(reply.body).not.toMatch(/what's the address/i);
      expect(reply.body).not.toMatch(/how urgent/i);
    }
  });

  it("keeps known facts over extracted ones, but a more severe urgency in the text wins", async () => {
    const reply = await replyTo(["this is Bobby, the basement is flooding at 5 Lake Rd"], {
      known: { customerName: "Robert Smith", urgency: "low", address: "12 Main St" },
    });
    expect(reply.facts.customerName).toBe("Robert Smith");
    expect(reply.facts.address).toBe("12 Main St");
    expect(reply.facts.urgency).toBe("emergency");
    expect(reply.intent).toBe("emergency");
  });

  it("ignores empty known values", async () => {
    const reply = await responder.reply(context({ known: { problem: "", address: "  ", urgency: null } }));
    expect(reply.intent).toBe("greeting");
    expect(reply.facts.problem).toBeNull();
  });
});

describe("emergencies", () => {
  it.each(["My basement is flooding!!", "I smell gas in the kitchen", "outlet is throwing sparks", "no heat and the pipes are freezing"])(
    "%j gets someone calling right away and 911 advice",
    async (message) => {
      const reply = await replyTo([message]);
      expect(reply.intent).toBe("emergency");
      expect(reply.body).toContain("Someone from Acme Home Services will call you right away.");
      expect(reply.body).toContain("call 911");
      expect(reply.body).toContain("Please reply with the address.");
      expect(reply.confidence).toBe(0.9);
      expectWellFormed(reply);
    },
  );

  it("does not ask for the address when it is known", async () => {
    const reply = await replyTo(["water everywhere, pipe burst at 77 River Rd"]);
    expect(reply.intent).toBe("emergency");
    expect(reply.facts.address).toBe("77 River Rd");
    expect(reply.body).not.toContain("address");
  });

  it("treats a known emergency as an emergency with a lower confidence", async () => {
    const reply = await replyTo(["hello?"], { known: { urgency: "emergency" } });
    expect(reply.intent).toBe("emergency");
    expect(reply.confidence).toBe(0.8);
  });
});

describe("closings", () => {
  it.each(["Wrong number", "sorry, wrong #", "I didn't call you", "I never called this number"])(
    "%j -> wrong_number with a polite closing",
    async (message) => {
      const reply = await replyTo([message]);
      expect(reply.intent).toBe("wrong_number");
      expect(reply.body).toBe("Sorry for the mix-up, and thanks for letting us know. Have a good day!");
      expect(reply.confidence).toBe(0.9);
    },
  );

  it.each(["Not interested", "no thanks", "No thank you, already found someone", "never mind, we fixed it", "STOP"])(
    "%j -> not_interested with a polite closing that asks nothing",
    async (message) => {
      const reply = await replyTo([message]);
      expect(reply.intent).toBe("not_interested");
      expect(reply.body).not.toContain("?");
      expect(reply.body).toContain("Acme Home Services");
    },
  );

  it("closes even in the middle of a conversation, and the problem is not taken from the closing", async () => {
    const replies = await play("plumbing", ["hi", "wrong number, I never called a plumber"]);
    expect(replies[1]?.intent).toBe("wrong_number");
    expect(replies[1]?.facts.problem).toBeNull();
  });

  it("only the newest message decides: an earlier 'no thanks' does not close a conversation that went on", async () => {
    const replies = await play("plumbing", ["no thanks", "actually my water heater is leaking"]);
    expect(replies.map((reply) => reply.intent)).toEqual(["not_interested", "ask_address"]);
  });
});

describe("confidence", () => {
  it("follows the documented formula", async () => {
    // nothing known: 0.3
    expect((await responder.reply(context())).confidence).toBe(0.3);
    // problem (1/3) + job-type keyword: 0.3 + 0.5/3 + 0.1 = 0.57
    expect((await replyTo(["my sink is leaking"])).confidence).toBe(0.57);
    // problem + urgency (2/3) + job type + urgency keyword: 0.3 + 0.5*2/3 + 0.1 + 0.05 = 0.78
    expect((await replyTo(["my sink is leaking, need help today"])).confidence).toBe(0.78);
    // all three known from the CRM, no keywords: 0.3 + 0.5 = 0.8
    expect((await replyTo(["ok"], { known: { problem: "leak", address: "1 A St", urgency: "normal" } })).confidence).toBe(0.8);
    // all three from the text with both keyword bonuses, capped at 0.95
    expect((await replyTo(["leaking pipe at 9 Pine St, asap"])).confidence).toBe(0.95);
  });

  it("is the same for the same input: the whole reply is deterministic", async () => {
    const input = context({
      tradeType: "electrical",
      turns: [customer("Hi this is Ann, outlets sparking in the kitchen"), ai("..."), customer("88 Cedar Ct, Boise ID 83702")],
    });
    const first = await responder.reply(input);
    const second = await responder.reply(structuredClone(input));
    expect(second).toEqual(first);
    expect(await new LocalAiResponder().reply(input)).toEqual(first);
  });
});

describe("robustness", () => {
  it("survives a 10,000-character message and keeps the reply within 320 characters", async () => {
    const huge = "my basement pipe is leaking everywhere at 12 Main St ".repeat(200).slice(0, 10_000);
    const reply = await replyTo([huge]);
    expectWellFormed(reply);
    expect(reply.facts.problem?.length).toBeLessThanOrEqual(500);
    const noise = await replyTo(["x".repeat(10_000)]);
    expectWellFormed(noise);
    expect(noise.intent).toBe("greeting");
    const digits = await replyTo(["1 ".repeat(5_000)]);
    expectWellFormed(digits);
  });

  it("keeps replies within 320 characters with a very long business name, template and address", async () => {
    const reply = await responder.reply(
      context({
        businessName: "B".repeat(500),
        greetingTemplate: `${"Welcome to the best [TRADE] company in town. ".repeat(20)}How can we help?`,
        turns: [customer("leaking pipe, asap"), ai("address?"), customer(`12 ${"Very ".repeat(100)}Long St`)],
      }),
    );
    expectWellFormed(reply);
    const greeting = await responder.reply(context({ greetingTemplate: "[TRADE] ".repeat(100) }));
    expectWellFormed(greeting);
  });

  it("ignores turns without a text body and a missing turns list", async () => {
    const broken = [{ sender: "customer" }, null, customer("my drain is clogged")] as unknown as ConversationTurn[];
    const reply = await responder.reply(context({ turns: broken }));
    expect(reply.facts.jobType).toBe("drain cleaning");
    const none = await responder.reply(context({ turns: undefined as unknown as ConversationTurn[] }));
    expect(none.intent).toBe("greeting");
  });

  it("is named local", () => {
    expect(responder.name).toBe("local");
  });
});
