/**
 * LocalAiResponder: the default, rule-based AI responder. Deterministic and offline: the same
 * context always gives the same reply, with no network and no randomness.
 *
 * Each call re-reads every customer turn and extracts lead facts with small keyword tables and
 * patterns (job type per trade, urgency words, a US street address, "my name is X" / "this is X",
 * simple preferred times). Facts from `known` win over extracted ones, except urgency, where the
 * more severe of the two wins. Then it writes the next text:
 *   1. newest customer message says "wrong number" / "not interested" -> polite closing;
 *   2. urgency is emergency -> "someone will call right away", 911 advice for gas smell/fire;
 *   3. no earlier AI turn -> the tenant's greeting ([TRADE] replaced); when facts are already
 *      known the greeting's questions are dropped and the next missing fact is asked instead;
 *   4. otherwise ask for the next missing fact, in order problem -> address -> urgency;
 *   5. all three known -> propose a callback.
 *
 * confidence (deterministic):
 *   - wrong_number / not_interested: 0.9 (an explicit phrase matched);
 *   - emergency: 0.9 when an emergency word is in the customer's text, 0.8 when it only came from `known`;
 *   - everything else: 0.3 + 0.5 x (share of problem/address/urgency known)
 *     + 0.1 when a job-type keyword matched + 0.05 when an urgency keyword matched, at most 0.95;
 *   rounded to 2 decimals.
 */
import type { AiContext, AiReply, AiResponder, ConversationTurn, LeadFacts, Urgency } from "./ai.ts";

const MAX_SMS = 320;
const MAX_PROBLEM = 500;
const MAX_ADDRESS = 200;

type Facts = {
  customerName: string | null;
  problem: string | null;
  jobType: string | null;
  urgency: Urgency | null;
  address: string | null;
  preferredTime: string | null;
};
type Question = "problem" | "address" | "urgency";

/** Job-type keywords per trade, most specific first. The tenant's own trade is tried first. */
const JOB_TYPES: Record<string, ReadonlyArray<readonly [RegExp, string]>> = {
  plumbing: [
    [/\bwater heater|\bhot water\b|\btankless\b/i, "water heater"],
    [/\bsewer\b|\bseptic\b/i, "sewer line"],
    [/\btoilets?\b/i, "toilet repair"],
    [/\bdrains?\b|\bclog(?:s|ged)?\b|\bbacked up\b|\bblocked\b/i, "drain cleaning"],
    [/\bleak(?:s|ing|ed|y)?\b|\bpipes?\b|\bdrip(?:s|ping)?\b|\bburst\b/i, "leak repair"],
    [/\bfaucets?\b|\bsinks?\b|\btaps?\b|\bshower\b/i, "faucet repair"],
  ],
  electrical: [
    [/\bbreakers?\b|\b(?:electrical |breaker )?panel\b|\bfuse ?box\b|\bfuses?\b/i, "breaker panel"],
    [/\boutlets?\b|\bsockets?\b|\bplugs?\b/i, "outlet repair"],
    [/\bsparks?\b|\bsparking\b|\bwiring\b|\bwires?\b/i, "wiring repair"],
    [/\bpower\b|\belectricity\b/i, "power outage"],
    [/\blights?\b|\blight fixtures?\b|\bceiling fan\b/i, "lighting"],
  ],
  hvac: [
    [/\bac\b|\ba\/c\b|\bair ?condition(?:er|ing)?\b|\bcooling\b|\bcentral air\b/i, "AC repair"],
    [/\bfurnace\b|\bheat(?:ing)?\b|(?<!water )\bheater\b|\bboiler\b|\bheat pump\b/i, "heating repair"],
    [/\bthermostat\b/i, "thermostat"],
    [/\bducts?\b|\bvents?\b/i, "duct work"],
  ],
  roofing: [
    [/\bgutters?\b/i, "gutter repair"],
    [/\broof(?:s|ing)?\b|\bshingles?\b|\bskylight\b/i, "roof repair"],
  ],
};
const TRADE_LABELS: Record<string, string> = { hvac: "HVAC" };

const URGENCY_RANK: Record<Urgency, number> = { low: 1, normal: 2, high: 3, emergency: 4 };
/** Phrases that look urgent but are not ("not urgent", "smoke detector"): counted as low / removed before the checks. */
const NOT_URGENT =
  /\b(?:not|isn'?t|no|nothing)\s+(?:an?\s+|really\s+|that\s+|too\s+|very\s+|super\s+)?(?:emergency|urgent)\b|\bno (?:big )?(?:rush|hurry)\b/gi;
const FALSE_ALARMS = /\b(?:smoke|fire|co|carbon monoxide) (?:detectors?|alarms?)\b/gi;
const EMERGENCY =
  /\bflood(?:s|ed|ing)?\b|\bburst\b|\bgas (?:smell|leak)\b|\bsmell(?:s|ing)? (?:of |like )?gas\b|\bsparks?\b|\bsparking\b|\bfire\b|\bsmoke\b|\bemergency\b|\basap right now\b/i;
const NO_HEAT = /\bno heat\b|\bheat(?:ing)? (?:is )?(?:out|off|not working|stopped)\b|\bfurnace (?:is )?(?:out|dead|not working)\b/i;
const WINTER = /\bfreez(?:e|es|ing)\b|\bfrozen\b|\bwinter\b|\bbelow zero\b|\bsnow(?:ing)?\b/i;
const HIGH = /\btoday\b|\basap\b|\burgent(?:ly)?\b|\bas soon as\b|\bright (?:now|away)\b|\btonight\b/i;
const LOW = /\bno (?:big )?(?:rush|hurry)\b|\bnext (?:week|month)\b|\bwhenever\b|\bcan wait\b|\bfew days\b|\bnot urgent\b/i;

const WRONG_NUMBER = /\bwrong (?:number|person)\b|\bwrong #|\bdid(?:n'?t| not) call (?:you|anyone|this number)\b|\bnever called\b/i;
const NOT_INTERESTED =
  /\bnot interested\b|\bno,? thanks?\b|\bno thank you\b|\bdon'?t need (?:it|you|anything|help|service|your)\b|\balready (?:fixed|found|hired|got|have|called) (?:it|someone|somebody|a)\b|\bnever ?mind\b|\bstop (?:texting|messaging)\b|^\s*(?:stop|unsubscribe)\s*[.!]*\s*$/i;

const STREET =
  /\b\d{1,6}[A-Za-z]?(?:\s+[A-Za-z0-9][A-Za-z0-9'.-]*){1,4}?\s+(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Way|Court|Ct|Place|Pl|Terrace|Ter|Parkway|Pkwy|Circle|Cir|Highway|Hwy)\b\.?/i;
/** What may follow the street: unit, then "City, ST 12345" / "City ST" / "City 12345" / "12345" / ", City" at the end of a sentence. Case matters (state codes). */
const STREET_TAIL =
  /^(?:,?\s+(?:Apt|Apartment|Unit|Suite|Ste|#)\.?\s*[A-Za-z0-9-]+)?(?:,\s*[A-Za-z][A-Za-z .'-]{0,30}?,?\s+[A-Z]{2}\b(?:\s+\d{5}(?:-\d{4})?\b)?|,\s*[A-Z][A-Za-z .'-]{0,30}?\s+\d{5}(?:-\d{4})?\b|,?\s+\d{5}(?:-\d{4})?\b|,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+)?(?=\s*(?:[.!?]|$)))?/;
/** A loose address, only accepted as the answer to an address question: a house number followed by a word. */
const LOOSE_ADDRESS =
  /\b\d{1,6}[A-Za-z]?\s+(?!(?:am|pm|a\.m|p\.m|o'?clock|mins?|minutes?|hours?|hrs?|days?|weeks?|months?|years?|times?)\b)[A-Za-z]{2,}/i;

const NAME_INTRO = /\b(my name is|my name's|this is)\s+([A-Za-z][A-Za-z'-]*)(?:\s+([A-Za-z][A-Za-z'-]*))?/gi;
const NOT_NAMES = new Set(
  (
    "a an the about regarding re not my our your it is was and or but so just very really still also " +
    "urgent emergency important me we they he she you i from at with for in on to "
    + "monday tuesday wednesday thursday friday saturday sunday today tomorrow"
  ).split(" "),
);

const TIMES: readonly RegExp[] = [
  /\b(?:tomorrow|today|tonight|this|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\s+(?:morning|afternoon|evening|night)\b/i,
  /\b(?:after|before|around|by|at)\s+\d{1,2}(?::\d{2})?\s*(?:am|pm|a\.m\.?|p\.m\.?)(?![a-z])/i,
  /\b(?:after|before|around|by)\s+(?:noon|lunch|work)\b/i,
  /\b(?:in the|this)\s+(?:morning|afternoon|evening)\b/i,
  /\b(?:this|next)\s+weekend\b/i,
  /\b(?:tomorrow|tonight)\b/i,
  /\b(?:on\s+)?(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b/i,
  /\b\d{1,2}(?::\d{2})?\s*(?:am|pm)\b/i,
];

/** Words that carry no problem description: a message made only of these is not "substantive". */
const FILLER =
  /\b(?:hi|hello|hey|yo|good (?:morning|afternoon|evening)|thanks|thank you|ok|okay|yes|yeah|yep|yup|no|nope|sure|please|there|can you|could you|call me(?: back)?|text me|asap|today|tomorrow|this is|my name is|who is this|what is this|you called|missed call)\b/gi;

export class LocalAiResponder implements AiResponder {
  readonly name = "local";

  async reply(context: AiContext): Promise<AiReply> {
    return localReply(context);
  }
}

function localReply(context: AiContext): AiReply {
  const turns = Array.isArray(context.turns) ? context.turns.filter((turn) => typeof turn?.body === "string") : [];
  const trade = context.tradeType?.trim().toLowerCase() || null;
  const business = clip(context.businessName?.trim() || "our team", 60);
  const extracted = extract(turns, trade);
  const facts = merge(context.known ?? {}, extracted.facts);

  const customerTurns = turns.filter((turn) => turn.sender === "customer");
  const newest = customerTurns.at(-1)?.body ?? "";
  const ask = (intent: string, body: string, confidence: number): AiReply => ({
    body: cutSms(body),
    intent,
    confidence: Math.round(confidence * 100) / 100,
    facts,
  });

  if (WRONG_NUMBER.test(newest)) {
    return ask("wrong_number", "Sorry for the mix-up, and thanks for letting us know. Have a good day!", 0.9);
  }
  if (NOT_INTERESTED.test(newest)) {
    return ask("not_interested", `No problem, thanks for letting us know. If you ever need us, just text this number. - ${business}`, 0.9);
  }

  if (facts.urgency === "emergency") {
    const body =
      `This sounds like an emergency. Someone from ${business} will call you right away.` +
      (facts.address === null ? " Please reply with the address." : "") +
      " If you smell gas or see fire or smoke, leave the building now and call 911.";
    return ask("emergency", body, extracted.emergencyWordSeen ? 0.9 : 0.8);
  }

  const known = [facts.problem, facts.address, facts.urgency].filter((fact) => fact !== null).length;
  const confidence = Math.min(
    0.95,
    0.3 + 0.5 * (known / 3) + (extracted.jobTypeMatched ? 0.1 : 0) + (extracted.urgencyMatched ? 0.05 : 0),
  );
  const next: Question | null = facts.problem === null ? "problem" : facts.address === null ? "address" : facts.urgency === null ? "urgency" : null;
  const firstAiTurn = !turns.some((turn) => turn.sender === "ai");
  const thanks = facts.customerName === null ? "Thanks!" : `Thanks, ${facts.customerName.split(" ")[0]}!`;

  let intro = "";
  if (firstAiTurn) {
    const greeting = fillTemplate(context.greetingTemplate, trade, business);
    if (next === "problem") return ask("greeting", greeting, confidence);
    // We already know what they need: keep the greeting's statements, drop its questions.
    intro = `${statementsOnly(greeting, business)} `;
  }

  if (next === "problem") {
    return ask("ask_problem", `${intro}${thanks} Could you tell me a bit about the problem you need help with?`, confidence);
  }
  if (next === "address") {
    return ask("ask_address", `${intro}${thanks} What's the address where you need the work done (street, city and ZIP)?`, confidence);
  }
  if (next === "urgency") {
    return ask(
      "ask_urgency",
      `${intro}${thanks} How urgent is this? Is it an emergency, do you need someone today, or can it wait a few days?`,
      confidence,
    );
  }

  const lastAi = turns.filter((turn) => turn.sender === "ai").at(-1)?.body ?? "";
  if (lastAi.includes("We have what we need")) {
    const noted = facts.preferredTime === null ? "" : ` We noted: ${facts.preferredTime}.`;
    return ask("other", `${thanks} Someone from ${business} will call you back shortly.${noted}`, confidence);
  }
  const job = facts.jobType ?? (trade === null ? "your request" : `${TRADE_LABELS[trade] ?? trade} service`);
  const noted = facts.preferredTime === null ? "" : ` We noted: ${facts.preferredTime}.`;
  return ask(
    "propose_callback",
    `${intro}Thanks! We have what we need: ${job} at ${clip(facts.address ?? "", 120)}. Someone will call you back shortly to confirm a time.${noted}`,
    confidence,
  );
}

interface Extraction {
  facts: Facts;
  jobTypeMatched: boolean;
  urgencyMatched: boolean;
  emergencyWordSeen: boolean;
}

/** Facts from the customer's turns only; `asked` is what the last ai/human turn before each one asked for. */
function extract(turns: ConversationTurn[], trade: string | null): Extraction {
  const facts: Facts = { customerName: null, problem: null, jobType: null, urgency: null, address: null, preferredTime: null };
  let jobTypeMatched = false;
  let urgencyMatched = false;
  let emergencyWordSeen = false;
  let asked: Question | null = null;

  for (const turn of turns) {
    if (turn.sender === "ai" || turn.sender === "human") {
      asked = questionIn(turn.body);
      continue;
    }
    if (turn.sender !== "customer") continue;
    const text = turn.body;

    const name = nameIn(text);
    facts.customerName ??= name;

    const jobType = jobTypeIn(text, trade);
    if (jobType !== null && facts.jobType === null) {
      facts.jobType = jobType;
      jobTypeMatched = true;
    }

    const urgency = urgencyIn(text);
    if (urgency !== null) {
      urgencyMatched = true;
      if (urgency === "emergency") emergencyWordSeen = true;
    }
    const answered = urgency ?? (asked === "urgency" ? "normal" : null);
    if (answered !== null && (facts.urgency === null || URGENCY_RANK[answered] > URGENCY_RANK[facts.urgency])) {
      facts.urgency = answered;
    }

    // Latest address / time win: customers correct themselves.
    const address = addressIn(text) ?? (asked === "address" ? looseAddressIn(text) : null);
    if (address !== null) facts.address = address;
    const time = timeIn(text);
    if (time !== null) facts.preferredTime = time;

    if (facts.problem === null && asked !== "address" && asked !== "urgency" && isSubstantive(text, trade, name)) {
      facts.problem = clip(text.replace(/\s+/g, " ").trim(), MAX_PROBLEM);
    }
    asked = null;
  }
  return { facts, jobTypeMatched, urgencyMatched, emergencyWordSeen };
}

/** Known facts win; urgency takes the more severe of the two. Every key is present (null when unknown). */
function merge(known: LeadFacts, extracted: Facts): Facts {
  const pick = (value: string | null | undefined, fallback: string | null): string | null =>
    typeof value === "string" && value.trim() !== "" ? value : fallback;
  const knownUrgency = known.urgency != null && known.urgency in URGENCY_RANK ? known.urgency : null;
  let urgency = knownUrgency ?? extracted.urgency;
  if (knownUrgency !== null && extracted.urgency !== null && URGENCY_RANK[extracted.urgency] > URGENCY_RANK[knownUrgency]) {
    urgency = extracted.urgency;
  }
  return {
    customerName: pick(known.customerName, extracted.customerName),
    problem: pick(known.problem, extracted.problem),
    jobType: pick(known.jobType, extracted.jobType),
    urgency,
    address: pick(known.address, extracted.address),
    preferredTime: pick(known.preferredTime, extracted.preferredTime),
  };
}

function questionIn(body: string): Question | null {
  if (/\bhow (?:urgent|soon)\b/i.test(body)) return "urgency";
  if (/\baddress\b/i.test(body) && body.includes("?")) return "address";
  return null;
}

function jobTypeIn(text: string, trade: string | null): string | null {
  const order = trade !== null && trade in JOB_TYPES ? [trade, ...Object.keys(JOB_TYPES).filter((t) => t !== trade)] : Object.keys(JOB_TYPES);
  for (const key of order) {
    for (const [pattern, jobType] of JOB_TYPES[key] ?? []) {
      if (pattern.test(text)) return jobType;
    }
  }
  return null;
}

function urgencyIn(raw: string): Urgency | null {
  const negated = raw.replace(NOT_URGENT, " ");
  const text = negated.replace(FALSE_ALARMS, " ");
  if (EMERGENCY.test(text) || (NO_HEAT.test(text) && WINTER.test(text))) return "emergency";
  if (HIGH.test(text)) return "high";
  if (negated !== raw || LOW.test(raw)) return "low";
  return null;
}

function addressIn(text: string): string | null {
  const street = STREET.exec(text);
  if (street === null) return null;
  const tail = STREET_TAIL.exec(text.slice(street.index + street[0].length))?.[0] ?? "";
  return tidyAddress(street[0] + tail);
}

function looseAddressIn(text: string): string | null {
  const match = LOOSE_ADDRESS.exec(text);
  if (match === null) return null;
  return tidyAddress(text.slice(match.index).split(/[\r\n]/)[0] ?? "");
}

function tidyAddress(text: string): string | null {
  const tidy = clip(text.replace(/\s+/g, " ").trim().replace(/[.!?,;:]+$/, ""), MAX_ADDRESS);
  return tidy === "" ? null : tidy;
}

function nameIn(text: string): string | null {
  for (const match of text.matchAll(NAME_INTRO)) {
    const explicit = match[1]?.toLowerCase() !== "this is";
    const first = match[2] ?? "";
    const second = match[3];
    if (NOT_NAMES.has(first.toLowerCase())) continue;
    if (!explicit && !/^[A-Z]/.test(first)) continue; // "this is urgent" is not a name
    const words = [first];
    if (second !== undefined && /^[A-Z]/.test(second) && !NOT_NAMES.has(second.toLowerCase())) words.push(second);
    return clip(words.map((word) => word.charAt(0).toUpperCase() + word.slice(1)).join(" "), 100);
  }
  return null;
}

function timeIn(text: string): string | null {
  for (const pattern of TIMES) {
    const match = pattern.exec(text);
    if (match !== null) return match[0].replace(/\s+/g, " ").trim();
  }
  return null;
}

/** Describes a problem: a job-type or emergency word, or three or more words beyond greetings, names, addresses and times. */
function isSubstantive(text: string, trade: string | null, name: string | null): boolean {
  if (WRONG_NUMBER.test(text) || NOT_INTERESTED.test(text)) return false;
  if (jobTypeIn(text, trade) !== null || urgencyIn(text) === "emergency") return true;
  let rest = text.replace(FILLER, " ");
  for (const word of name?.split(" ") ?? []) rest = rest.replaceAll(new RegExp(`\\b${word}\\b`, "gi"), " ");
  const address = addressIn(rest);
  if (address !== null) rest = rest.replace(address, " ");
  for (const pattern of TIMES) rest = rest.replace(pattern, " ");
  return (rest.match(/[A-Za-z']+/g)?.length ?? 0) >= 3;
}

function fillTemplate(template: string, trade: string | null, business: string): string {
  const text = template?.trim() ? template.trim() : `Hi! Thanks for contacting ${business}. What can we help you with today?`;
  return text.replaceAll("[TRADE]", trade === null ? "service" : (TRADE_LABELS[trade] ?? trade));
}

/** The greeting without its questions ("Hello! ... What can I help with?" -> "Hello! ..."). */
function statementsOnly(greeting: string, business: string): string {
  const sentences = greeting.match(/[^.!?]+[.!?]*/g) ?? [];
  const kept = sentences.map((s) => s.trim()).filter((s) => s !== "" && !s.endsWith("?"));
  return kept.length > 0 ? kept.join(" ") : `Hi from ${business}!`;
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max).trimEnd();
}

function cutSms(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  if (flat.length <= MAX_SMS) return flat;
  const cut = flat.slice(0, MAX_SMS - 3);
  const space = cut.lastIndexOf(" ");
  return `${(space > MAX_SMS / 2 ? cut.slice(0, space) : cut).trimEnd()}...`;
}
