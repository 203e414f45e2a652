/**
 * SMS compliance core: the hours in which marketing texts may reach a recipient (federal, Canadian
 * and stricter state rules, kept as data), per-state caps, and the carrier keywords of inbound texts
 * (opt-out, opt-in, help). Asked as a tenant member (the visitor role), as the API would.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../src/config.ts";
import { becomeUser, consentToMarketingTexts, db, expectSqlError, registerUser, withRootDb } from "../helpers.ts";

interface Window {
  allowed: boolean;
  next_allowed_at: Date | null;
  timezone: string;
  jurisdictions: string[];
  max_per_24h: number | null;
  reason: string;
}

interface HolidayRule {
  jurisdiction: string;
  name: string;
  month: number | null;
  day: number | null;
  isodow: number | null;
  nth: number | null;
  easter_offset: number | null;
  on_date: string | null;
  weekend_rule: string;
}

/** Easter Sunday by Oudin's algorithm (1940), not the one the database uses. */
function easterSunday(year: number): string {
  const g = year % 19;
  const c = Math.floor(year / 100);
  const h = (c - Math.floor(c / 4) - Math.floor((8 * c + 13) / 25) + 19 * g + 15) % 30;
  const i = h - Math.floor(h / 28) * (1 - Math.floor(29 / (h + 1)) * Math.floor((21 - g) / 11));
  const j = (year + Math.floor(year / 4) + i + 2 - c + Math.floor(c / 4)) % 7;
  const l = i - j;
  const month = 3 + Math.floor((l + 40) / 44);
  return isoDay(Date.UTC(year, month - 1, l + 28 - 31 * Math.floor(month / 4)));
}

const isoDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const plusDays = (day: string, n: number) => isoDay(Date.parse(`${day}T00:00:00Z`) + n * 86_400_000);
const isoWeekday = (day: string) => new Date(`${day}T00:00:00Z`).getUTCDay() || 7;

/** The days of one holiday rule in a year, read the way a person reads the statute. */
function holidayDays(rule: HolidayRule, year: number): string[] {
  let day: string | null = null;
  if (rule.on_date) {
    day = rule.on_date.startsWith(`${year}-`) ? rule.on_date : null;
  } else if (rule.easter_offset !== null) {
    day = plusDays(easterSunday(year), rule.easter_offset);
  } else if (rule.isodow === null) {
    const date = new Date(Date.UTC(year, rule.month! - 1, rule.day!));
    day = date.getUTCMonth() === rule.month! - 1 ? isoDay(date.getTime()) : null;
  } else if (rule.nth === -1) {
    let last = isoDay(Date.UTC(year, rule.month!, 0));
    while (isoWeekday(last) !== rule.isodow) last = plusDays(last, -1);
    day = last;
  } else {
    let first = isoDay(Date.UTC(year, rule.month! - 1, rule.day ?? 1));
    while (isoWeekday(first) !== rule.isodow) first = plusDays(first, 1);
    const nth = plusDays(first, (rule.nth! - 1) * 7);
    day = Number(nth.slice(5, 7)) === rule.month ? nth : null;
  }
  if (day === null) return [];
  const weekday = isoWeekday(day);
  const moved: Record<string, Record<number, number>> = {
    nearest_weekday: { 6: -1, 7: 1 },
    sunday_to_monday: { 7: 1 },
    next_monday: { 6: 2, 7: 1 },
    none: {},
  };
  const shift = moved[rule.weekend_rule]![weekday];
  return shift === undefined ? [day] : [day, plusDays(day, shift)];
}

/** Every holiday day of a jurisdiction that bans them in a year: its country's holidays and its own. */
function holidayCalendar(rules: HolidayRule[], jurisdiction: string, year: number): Set<string> {
  const own = rules.filter((r) => r.jurisdiction === jurisdiction || r.jurisdiction === jurisdiction.split("-")[0]);
  return new Set([year - 1, year, year + 1].flatMap((y) => own.flatMap((r) => holidayDays(r, y))).filter((d) => d.startsWith(`${year}-`)));
}

/** The review table of docs/messaging-and-compliance.md (State rules), written from the rules tables. */
async function renderStateRules(client: pg.ClientBase): Promise<string> {
  const days = ["", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
  const weekdays = ["", "Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays"];
  const { rows: jurisdictions } = await client.query<{ jurisdiction: string; name: string }>(
    "select jurisdiction, name from app_public.sms_jurisdictions order by jurisdiction <> 'US', jurisdiction <> 'CA', jurisdiction",
  );
  const { rows: windows } = await client.query<{ jurisdiction: string; isodow: number; hours: string | null; source: string }>(
    "select jurisdiction, isodow, to_char(allowed_from, 'HH24:MI') || '–' || to_char(allowed_until, 'HH24:MI') as hours, source from app_public.sms_send_windows order by jurisdiction, isodow",
  );
  const { rows: caps } = await client.query<{ jurisdiction: string; max_per_24h: number; source: string }>("select * from app_public.sms_message_caps");
  const { rows: bans } = await client.query<{ jurisdiction: string; source: string }>("select * from app_public.sms_holiday_bans");
  const { rows: holidays } = await client.query<{ jurisdiction: string; name: string; source: string }>(
    "select jurisdiction, name, source from app_public.sms_holidays order by jurisdiction, name",
  );
  const lines = [
    "| Jurisdiction | Hours (recipient's local time) | No texts on | Per 24 h | Sources |",
    "|---|---|---|---|---|",
  ];
  const without: string[] = [];
  for (const { jurisdiction, name } of jurisdictions) {
    const own = windows.filter((w) => w.jurisdiction === jurisdiction);
    const cap = caps.find((c) => c.jurisdiction === jurisdiction);
    const ban = bans.find((b) => b.jurisdiction === jurisdiction);
    if (own.length === 0 && !cap && !ban) {
      without.push(`${name} (${jurisdiction})`);
      continue;
    }
    // Consecutive weekdays with the same hours are written as one range.
    const spans: string[] = [];
    for (let i = 0; i < own.length; ) {
      let j = i;
      while (j + 1 < own.length && own[j + 1]!.hours === own[i]!.hours) j++;
      const range = i === 0 && j === own.length - 1 && own.length === 7 ? "every day" : i === j ? days[own[i]!.isodow]! : `${days[own[i]!.isodow]}–${days[own[j]!.isodow]}`;
      if (own[i]!.hours !== null) spans.push(`${range} ${own[i]!.hours}`);
      i = j + 1;
    }
    const closed = own.filter((w) => w.hours === null).map((w) => weekdays[w.isodow]!);
    const holidayNames = holidays.filter((h) => h.jurisdiction === jurisdiction).map((h) => h.name);
    const noTexts = [
      ...closed,
      ...(ban ? [`legal holidays (federal${holidayNames.length > 0 ? `, and ${holidayNames.join(", ")}` : ""})`] : []),
    ];
    const sources = [...new Set([...own.map((w) => w.source), ...(cap ? [cap.source] : []), ...(ban ? [ban.source] : []),
      ...holidays.filter((h) => h.jurisdiction === jurisdiction).map((h) => h.source)])];
    lines.push(`| ${name} (${jurisdiction}) | ${spans.join("; ") || "national hours"} | ${noTexts.join("; ") || "—"} | ${cap ? cap.max_per_24h : "—"} | ${sources.join("; ")} |`);
  }
  return `${lines.join("\n")}\n\nNo rule of their own (the national rule applies): ${without.join(", ")}.\n`;
}

async function windowFor(client: pg.ClientBase, phone: string, at: string, region: string | null = null, timezone: string | null = null): Promise<Window> {
  const { rows } = await client.query<Window>("select * from app_public.sms_send_window($1, $2, $3, $4::timestamptz)", [phone, region, timezone, at]);
  return rows[0]!;
}

describe("quiet hours", () => {
  it("holds texts to 8:00-21:00 local time under the federal rule, and says when the next window opens", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      // 212 is New York (no stricter state rule). 2026-11-23 is a Monday; New York is at UTC-5.
      const morning = await windowFor(client, "+12125550100", "2026-11-23T13:00:00Z"); // 08:00 local
      expect(morning).toMatchObject({ allowed: true, timezone: "America/New_York", jurisdictions: ["US"], max_per_24h: null, reason: "" });
      const early = await windowFor(client, "+12125550100", "2026-11-23T12:59:00Z"); // 07:59 local
      expect(early.allowed).toBe(false);
      expect(early.next_allowed_at!.toISOString()).toBe("2026-11-23T13:00:00.000Z");
      expect(early.reason).toBe("Outside the allowed hours (US): it is Mon 07:59 there (America/New_York); next allowed Mon 08:00 local time");
      const late = await windowFor(client, "+12125550100", "2026-11-24T02:00:00Z"); // Monday 21:00 local: closed
      expect(late.allowed).toBe(false);
      expect(late.next_allowed_at!.toISOString()).toBe("2026-11-24T13:00:00.000Z"); // Tuesday 08:00
      // 808 is Hawaii (UTC-10): 13:00Z is 03:00 there.
      const hawaii = await windowFor(client, "+18085550100", "2026-11-23T13:00:00Z");
      expect([hawaii.allowed, hawaii.timezone]).toEqual([false, "Pacific/Honolulu"]);
    });
  });

  it("applies the stricter state rules kept as data: Florida, Connecticut, Texas on Sunday, Rhode Island at weekends", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      // Florida (305, UTC-5): 20:30 local is fine federally but not in Florida; the cap is 3 a day.
      const fl = await windowFor(client, "+13055550100", "2026-11-24T01:30:00Z");
      expect(fl).toMatchObject({ allowed: false, jurisdictions: ["US", "US-FL"], max_per_24h: 3 });
      // Connecticut (203): 08:30 local is too early (9:00).
      expect((await windowFor(client, "+12035550100", "2026-11-23T13:30:00Z")).allowed).toBe(false);
      expect((await windowFor(client, "+12035550100", "2026-11-23T14:00:00Z")).allowed).toBe(true);
      // Texas (214, UTC-6): Sunday 2026-11-22 at 10:00 local is closed (noon on Sundays), Monday 10:00 open.
      const sunday = await windowFor(client, "+12145550100", "2026-11-22T16:00:00Z");
      expect(sunday.allowed).toBe(false);
      expect(sunday.next_allowed_at!.toISOString()).toBe("2026-11-22T18:00:00.000Z");
      expect((await windowFor(client, "+12145550100", "2026-11-23T16:00:00Z")).allowed).toBe(true);
      // Rhode Island (401): Saturday 17:30 local is closed (17:00 on Saturdays); Sunday has no texts at
      // all (R.I. Gen. Laws 5-61-2(2)), so the next is Monday 09:00 (before issue 17: Sunday 10:00).
      const saturday = await windowFor(client, "+14015550100", "2026-11-21T22:30:00Z");
      expect(saturday.allowed).toBe(false);
      expect(saturday.next_allowed_at!.toISOString()).toBe("2026-11-23T14:00:00.000Z");
    });
  });

  it("applies both the area code's state and the recipient's known state, in the given time zone", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      // A New York number whose owner lives in Florida: Florida's 20:00 end applies, in Miami time.
      const moved = await windowFor(client, "+12125550100", "2026-11-24T01:30:00Z", "FL");
      expect(moved).toMatchObject({ allowed: false, jurisdictions: ["US", "US-FL"], max_per_24h: 3 });
      // The state may be spelled as its ISO code or its name; an unknown one is refused, never ignored.
      for (const spelling of ["US-FL", "florida", " Florida "]) {
        expect((await windowFor(client, "+12125550100", "2026-11-24T01:30:00Z", spelling)).jurisdictions).toEqual(["US", "US-FL"]);
      }
      const unknown = await expectSqlError(client, "22023", () => windowFor(client, "+12125550100", "2026-11-24T01:30:00Z", "Narnia"));
      expect(unknown.message).toMatch(/Unknown region 'Narnia'/);
      // A New York number whose owner lives in Los Angeles (timezone given): 20:30 UTC-5 is 17:30 there.
      const west = await windowFor(client, "+12125550100", "2026-11-24T01:30:00Z", "CA", "America/Los_Angeles");
      expect([west.allowed, west.timezone]).toEqual([true, "America/Los_Angeles"]);
      // A Canadian number follows the CRTC rule (weekdays until 21:30): Toronto 21:15 on a Monday is fine.
      const toronto = await windowFor(client, "+14165550100", "2026-11-24T02:15:00Z");
      expect(toronto).toMatchObject({ allowed: true, jurisdictions: ["CA"] });
    });
  });

  it("a recipient who moved: every zone that may be theirs must allow the text, and the next moment respects all of them (issue 17)", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      // A Florida number living in California, its zone derived from the area code (New York time):
      // 10:30 in Miami is 07:30 in Los Angeles. Before, only Miami's clock was read and the text went.
      const moved = await windowFor(client, "+13055550100", "2026-11-24T15:30:00Z", "CA", "America/New_York");
      expect(moved).toMatchObject({ allowed: false, timezone: "America/Los_Angeles", jurisdictions: ["US", "US-FL"] });
      expect(moved.next_allowed_at!.toISOString()).toBe("2026-11-24T16:00:00.000Z"); // 08:00 in Los Angeles
      expect(moved.reason).toBe("Outside the allowed hours (US, US-FL): it is Tue 07:30 there (America/Los_Angeles); next allowed Tue 08:00 local time");
      // Its evening: 19:30 in Los Angeles is 22:30 in Miami; the next moment is 08:00 in Los Angeles.
      const evening = await windowFor(client, "+13055550100", "2026-11-25T03:30:00Z", "CA", "America/Los_Angeles");
      expect([evening.allowed, evening.timezone]).toEqual([false, "America/New_York"]);
      expect(evening.next_allowed_at!.toISOString()).toBe("2026-11-25T16:00:00.000Z");
      // Across the change to summer time (Sunday 8 March 2026; Arizona keeps its clock): a Florida number in
      // Phoenix, Sunday 20:30 in Miami (17:30 in Phoenix), waits for Monday 08:00 in Phoenix (11:00 in Miami).
      const dst = await windowFor(client, "+13055550100", "2026-03-09T00:30:00Z", "AZ");
      expect([dst.allowed, dst.timezone]).toEqual([false, "America/New_York"]);
      expect(dst.next_allowed_at!.toISOString()).toBe("2026-03-09T15:00:00.000Z");
      // A member types Pacific/Kiritimati (UTC+14) on a New York lead, hoping to text at night in New York:
      // 10:30 in New York is 05:30 there, and the text waits for 08:00 there, 13:00 in New York.
      const far = await windowFor(client, "+12125550100", "2026-11-24T15:30:00Z", null, "Pacific/Kiritimati");
      expect([far.allowed, far.timezone]).toEqual([false, "Pacific/Kiritimati"]);
      expect(far.next_allowed_at!.toISOString()).toBe("2026-11-24T18:00:00.000Z");
      // And at 22:00 in New York (17:00 there) it is New York's clock that forbids it.
      const night = await windowFor(client, "+12125550100", "2026-11-25T03:00:00Z", null, "Pacific/Kiritimati");
      expect([night.allowed, night.timezone]).toEqual([false, "America/New_York"]);
    });
  });

  it("property: a marketing text to a random lead at a random moment is scheduled at the first moment every zone of the lead allows, days without texts and holidays included (an oracle written here)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const rules = (await client.query<{ jurisdiction: string; isodow: number; opens: number | null; closes: number | null }>(
        "select jurisdiction, isodow, extract(epoch from allowed_from)::int as opens, extract(epoch from allowed_until)::int as closes from app_public.sms_send_windows",
      )).rows;
      const bans = (await client.query<{ jurisdiction: string }>("select jurisdiction from app_public.sms_holiday_bans")).rows.map((b) => b.jurisdiction);
      const holidayRules = (await client.query<HolidayRule>(
        "select jurisdiction, name, month, day, isodow, nth, easter_offset, to_char(on_date, 'YYYY-MM-DD') as on_date, weekend_rule from app_public.sms_holidays",
      )).rows;
      const caps = (await client.query<{ jurisdiction: string }>("select jurisdiction from app_public.sms_message_caps")).rows.map((c) => c.jurisdiction);
      const areas = new Map((await client.query<{ area_code: string; country: string; region: string; timezone: string }>(
        "select area_code, country, region, timezone from app_public.phone_area_codes",
      )).rows.map((a) => [a.area_code, a]));
      const regions = (await client.query<{ country: string; region: string; timezone: string }>("select country, region, timezone from app_public.region_timezones")).rows;
      const business = "+1786" + String(Date.now() % 10_000_000).padStart(7, "0");
      await client.query(
        "insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned) values ($1, $2, 'PN' || md5(random()::text), '786', 'active', now())",
        [owner.tenant_id, business],
      );
      const weekday: Record<string, number> = { Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6, Sun: 7 };
      const formats = new Map<string, Intl.DateTimeFormat>();
      const local = (ms: number, zone: string) => {
        if (!formats.has(zone)) {
          formats.set(zone, new Intl.DateTimeFormat("en-US", {
            timeZone: zone, hourCycle: "h23", weekday: "short", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
          }));
        }
        const parts = Object.fromEntries(formats.get(zone)!.formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
        return {
          isodow: weekday[parts.weekday!]!,
          date: `${parts.year}-${parts.month}-${parts.day}`,
          seconds: Number(parts.hour) * 3600 + Number(parts.minute) * 60 + Number(parts.second),
        };
      };
      const holidaysOf = new Map<string, Set<string>>();
      const isHoliday = (date: string, jurisdictions: string[]) =>
        jurisdictions.some((j) => {
          if (!bans.includes(j)) return false;
          const key = `${j} ${date.slice(0, 4)}`;
          if (!holidaysOf.has(key)) holidaysOf.set(key, holidayCalendar(holidayRules, j, Number(date.slice(0, 4))));
          return holidaysOf.get(key)!.has(date);
        });
      // The law as this test reads it: the national rule of every country involved and the rules of the
      // area code's state and of the known state all hold, in every zone that may be the recipient's; a
      // day a rule gives no hours, or a holiday of a jurisdiction that bans them, has no texts.
      const oracle = (ms: number, zones: string[], jurisdictions: string[]) =>
        zones.every((zone) => {
          const { isodow, date, seconds } = local(ms, zone);
          const day = rules.filter((r) => jurisdictions.includes(r.jurisdiction) && r.isodow === isodow);
          if (day.length === 0 || day.some((r) => r.opens === null) || isHoliday(date, jurisdictions)) return false;
          const opens = Math.max(...day.map((r) => r.opens!));
          const closes = Math.min(...day.map((r) => r.closes!));
          return opens < closes && seconds >= opens && seconds < closes;
        });
      let seed = 20261204;
      const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
      const pick = <T,>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
      const codes = ["305", "212", "214", "401", "203", "808", "416", "602", "213", "907", "801", "205", "504", "215", "601", "206", "973"];
      const givenRegions = [null, "FL", "CA", "TX", "AZ", "RI", "NY", "HI", "AK", "UT", "AL", "LA", "PA", "MS", "WA"];
      const givenZones = [null, null, "America/Los_Angeles", "America/New_York", "America/Phoenix", "Pacific/Honolulu", "America/Chicago", "America/Anchorage", "America/Denver"];
      // Half the moments anywhere in 2026 and 2027 (both changes of clock), half around a holiday of a
      // jurisdiction that bans them.
      const start = Date.parse("2026-01-01T00:00:00Z");
      const holidayDays = bans.flatMap((j) => [2026, 2027].flatMap((year) => [...holidayCalendar(holidayRules, j, year)]));
      for (let i = 0; i < 240; i++) {
        const phone = `+1${pick(codes)}${String(1_000_000 + i * 7919 + Math.floor(random() * 1000)).slice(-7)}`;
        const at = i % 2 === 0
          ? start + Math.floor(random() * 730 * 1440) * 60_000
          : Date.parse(`${pick(holidayDays)}T00:00:00Z`) + Math.floor((random() * 3 - 1) * 1440) * 60_000;
        const { rows: [lead] } = await client.query(
          "insert into app_public.leads (tenant_id, phone, region, timezone, source) values ($1, $2, $3, $4, 'test') returning id, region, country, timezone",
          [owner.tenant_id, phone, pick(givenRegions), pick(givenZones)],
        );
        const area = areas.get(phone.slice(2, 5));
        const given = lead.region ? regions.find((r) => r.region === lead.region && (!area || r.country === area.country)) ?? regions.find((r) => r.region === lead.region) : undefined;
        const zones = [...new Set([lead.timezone, area?.timezone, given?.timezone].filter((z): z is string => !!z))];
        const countries = [area?.country ?? given?.country ?? "US", area?.country, given?.country].filter((c): c is string => !!c);
        const states = [area && `${area.country}-${area.region}`, given && `${given.country}-${given.region}`].filter((j): j is string => !!j);
        const jurisdictions = [...new Set([...countries, ...states])]
          .filter((j) => rules.some((r) => r.jurisdiction === j) || bans.includes(j) || caps.includes(j));
        let expected: number | null = null;
        if (oracle(at, zones, jurisdictions)) {
          expected = at;
        } else {
          // Every window starts on a quarter hour of a zone a whole or half hour from UTC.
          for (let t = Math.ceil(at / 900_000) * 900_000; t < at + 9 * 86_400_000; t += 900_000) {
            if (oracle(t, zones, jurisdictions)) {
              expected = t;
              break;
            }
          }
        }
        const label = `${phone} region ${lead.region} zone ${lead.timezone} at ${new Date(at).toISOString()} (zones ${zones.join(", ")}; ${jurisdictions.join(", ")})`;
        await consentToMarketingTexts(client, owner.tenant_id!, phone, lead.id);
        await client.query("savepoint queued");
        const queued = await client
          .query("select scheduled_for from app_private.queue_message($1, $2, $3, 'Spring special', 'marketing', 'system', null, $4, null, $5::timestamptz)", [
            owner.tenant_id, phone, business, lead.id, new Date(at).toISOString(),
          ])
          .then((r) => (r.rows[0].scheduled_for as Date).getTime(), (error: { code?: string }) => error);
        await client.query(typeof queued === "number" ? "release savepoint queued" : "rollback to savepoint queued");
        if (expected === null) {
          expect(queued, label).toMatchObject({ code: "22023" });
        } else {
          expect(new Date(queued as number).toISOString(), label).toBe(new Date(expected).toISOString());
        }
      }
    });
  });

  it("refuses to guess the local time of an unknown number: 22023, with a message that says what to give", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      const error = await expectSqlError(client, "22023", () => windowFor(client, "+18005550100", "2026-11-23T15:00:00Z"));
      expect(error.message).toMatch(/Cannot tell the local time of \+18005550100.*give a timezone/);
      await expectSqlError(client, "22023", () => windowFor(client, "+12125550100", "2026-11-23T15:00:00Z", null, "Mars/Olympus_Mons"));
      // With a time zone, a toll-free number is held to the national rule.
      expect((await windowFor(client, "+18005550100", "2026-11-23T15:00:00Z", null, "America/Chicago")).allowed).toBe(true);
    });
  });

  it("keeps the reference data read-only for members", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      await expectSqlError(client, "42501", () => client.query("update app_public.sms_send_windows set allowed_until = '23:59' where jurisdiction = 'US'"));
      await expectSqlError(client, "42501", () => client.query("delete from app_public.sms_message_caps"));
      const { rows } = await client.query("select count(*)::int as n from app_public.sms_send_windows where jurisdiction = 'US-RI'");
      expect(rows[0].n).toBe(7);
    });
  });
});

describe("days without texts, holidays and the state rules (issue 17)", () => {
  it("bans Sundays where the law does: Rhode Island, Mississippi, Utah, Alabama and Louisiana wait for Monday; Texas opens at noon", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      // Sunday 2026-11-22 at 12:00 local, federally fine. Monday 2026-11-23 is no holiday.
      const cases: Array<[string, string, string, string]> = [
        ["+14015550100", "2026-11-22T17:00:00Z", "2026-11-23T14:00:00.000Z", "US-RI"], // Providence, Monday 09:00
        ["+16015550100", "2026-11-22T18:00:00Z", "2026-11-23T14:00:00.000Z", "US-MS"], // Jackson, Monday 08:00
        ["+18015550100", "2026-11-22T19:00:00Z", "2026-11-23T15:00:00.000Z", "US-UT"], // Salt Lake City, Monday 08:00
        ["+12055550100", "2026-11-22T18:00:00Z", "2026-11-23T14:00:00.000Z", "US-AL"], // Birmingham, Monday 08:00
        ["+15045550100", "2026-11-22T18:00:00Z", "2026-11-23T14:00:00.000Z", "US-LA"], // New Orleans, Monday 08:00
      ];
      for (const [phone, at, next, state] of cases) {
        const sunday = await windowFor(client, phone, at);
        expect(sunday, phone).toMatchObject({ allowed: false, jurisdictions: ["US", state] });
        expect(sunday.next_allowed_at!.toISOString(), phone).toBe(next);
        expect(sunday.reason, phone).toMatch(/it is Sun 1[12]:00 there \(America\/[A-Za-z_]+\), a day without texts; next allowed Mon 0[89]:00 local time/);
      }
      // Texas texts on Sunday from noon (Tex. Bus. & Com. Code 301.051).
      expect((await windowFor(client, "+12145550100", "2026-11-22T18:00:00Z")).allowed).toBe(true);
      // A New York number whose owner lives in Utah: Utah's Sunday applies to them too.
      const moved = await windowFor(client, "+12125550100", "2026-11-22T19:00:00Z", "UT");
      expect(moved).toMatchObject({ allowed: false, jurisdictions: ["US", "US-UT"] });
    });
  });

  it("bans the holidays of Rhode Island, Utah, Alabama, Louisiana and Pennsylvania, computed for the year, and says which holiday", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      // Thanksgiving (the fourth Thursday of November, 26 November 2026) in Rhode Island: Friday 09:00.
      const thanksgiving = await windowFor(client, "+14015550100", "2026-11-26T15:00:00Z");
      expect(thanksgiving).toMatchObject({ allowed: false, jurisdictions: ["US", "US-RI"] });
      expect(thanksgiving.next_allowed_at!.toISOString()).toBe("2026-11-27T14:00:00.000Z");
      expect(thanksgiving.reason).toBe("Outside the allowed hours (US, US-RI): it is Thu 10:00 there (America/New_York), Thanksgiving Day, a holiday without texts; next allowed Fri 09:00 local time");
      // The same moment in New York (no holiday ban): allowed.
      expect((await windowFor(client, "+12125550100", "2026-11-26T15:00:00Z")).allowed).toBe(true);
      // Victory Day, Rhode Island's own (second Monday of August: 10 August 2026).
      expect((await windowFor(client, "+14015550100", "2026-08-10T15:00:00Z")).next_allowed_at!.toISOString()).toBe("2026-08-11T13:00:00.000Z");
      // Pioneer Day in Utah (24 July, a Friday in 2026): next is Saturday 08:00 in Salt Lake City.
      const pioneer = await windowFor(client, "+18015550100", "2026-07-24T16:00:00Z");
      expect(pioneer.reason).toMatch(/Pioneer Day, a holiday without texts; next allowed Sat 08:00/);
      expect(pioneer.next_allowed_at!.toISOString()).toBe("2026-07-25T14:00:00.000Z");
      // Mardi Gras (47 days before Easter: 17 February 2026) in Louisiana.
      expect((await windowFor(client, "+15045550100", "2026-02-17T16:00:00Z")).reason).toMatch(/Mardi Gras, a holiday without texts/);
      // Election Day in Pennsylvania (the Tuesday after the first Monday of November: 3 November 2026).
      expect((await windowFor(client, "+12155550100", "2026-11-03T15:00:00Z")).reason).toMatch(/Election Day, a holiday without texts/);
      expect((await windowFor(client, "+12155550100", "2026-11-04T15:00:00Z")).allowed).toBe(true);
      // Christmas 2027 is a Saturday. Alabama: Friday 24 (observed), Saturday 25, Sunday 26 are without
      // texts; Monday 27 at 08:00. Rhode Island also keeps Monday 27 (its Monday observance): Tuesday 09:00.
      const alabama = await windowFor(client, "+12055550100", "2027-12-24T16:00:00Z");
      expect(alabama.reason).toMatch(/it is Fri 10:00 there \(America\/Chicago\), Christmas Day, a holiday without texts; next allowed Mon 08:00/);
      expect(alabama.next_allowed_at!.toISOString()).toBe("2027-12-27T14:00:00.000Z");
      const rhodeIsland = await windowFor(client, "+14015550100", "2027-12-24T16:00:00Z");
      expect(rhodeIsland.next_allowed_at!.toISOString()).toBe("2027-12-28T14:00:00.000Z");
      // A New York number whose owner lives in Rhode Island keeps Rhode Island's holidays.
      expect((await windowFor(client, "+12125550100", "2026-11-26T15:00:00Z", "RI")).allowed).toBe(false);
      // Outside the stored calendar's years (2000 to 2199) the rules are computed on the spot:
      // Thanksgiving 2230 is Thursday 25 November.
      const far = await windowFor(client, "+14015550100", "2230-11-25T15:00:00Z");
      expect(far.reason).toMatch(/Thanksgiving Day, a holiday without texts; next allowed Fri 09:00/);
      expect((await windowFor(client, "+14015550100", "2230-11-26T15:00:00Z")).allowed).toBe(true);
    });
  });

  it("the stored holiday calendar holds exactly the days of the rules, read here the way a person reads the statutes, for every banning state and many years", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      const holidayRules = (await client.query<HolidayRule>(
        "select jurisdiction, name, month, day, isodow, nth, easter_offset, to_char(on_date, 'YYYY-MM-DD') as on_date, weekend_rule from app_public.sms_holidays",
      )).rows;
      const bans = (await client.query<{ jurisdiction: string }>("select jurisdiction from app_public.sms_holiday_bans order by 1")).rows.map((b) => b.jurisdiction);
      expect(bans).toEqual(["US-AL", "US-LA", "US-PA", "US-RI", "US-UT"]);
      const { rows: stored } = await client.query<{ jurisdiction: string; year: number; days: string[] }>(
        `select jurisdiction, extract(year from day)::int as year, array_agg(distinct to_char(day, 'YYYY-MM-DD') order by to_char(day, 'YYYY-MM-DD')) as days
           from app_public.sms_holiday_calendar where extract(year from day) in (2000, 2024, 2025, 2026, 2027, 2028, 2038, 2100, 2199)
          group by 1, 2`,
      );
      for (const jurisdiction of bans) {
        for (const year of [2000, 2024, 2025, 2026, 2027, 2028, 2038, 2100, 2199]) {
          const expected = [...holidayCalendar(holidayRules, jurisdiction, year)].sort();
          const row = stored.find((r) => r.jurisdiction === jurisdiction && r.year === year);
          expect(row?.days ?? [], `${jurisdiction} ${year}`).toEqual(expected);
        }
      }
      // And the rules computed on the spot, outside those years, agree with the same reading.
      const { rows: [computed] } = await client.query<{ days: string[] }>(
        `select array_agg(to_char(d, 'YYYY-MM-DD') order by d) as days
           from generate_series(date '2231-01-01', date '2231-12-31', interval '1 day') d
          where app_hidden.sms_holiday(d::date, '{US-RI}') is not null`,
      );
      expect(computed!.days).toEqual([...holidayCalendar(holidayRules, "US-RI", 2231)].sort());
    });
  });

  it("corrects the rows the review found wrong: Washington 8:00-20:00, Massachusetts 8:00-20:00, New Jersey 8:00-21:00 without a daily cap; every row cites its statute", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      // 20:30 local on a Monday (2026-11-23): closed in Seattle and Boston, open in Newark (N.J.S.A. 56:8-128(d)).
      expect(await windowFor(client, "+12065550100", "2026-11-24T04:30:00Z")).toMatchObject({ allowed: false, jurisdictions: ["US", "US-WA"] });
      expect(await windowFor(client, "+16175550100", "2026-11-24T01:30:00Z")).toMatchObject({ allowed: false, jurisdictions: ["US", "US-MA"] });
      expect(await windowFor(client, "+19735550100", "2026-11-24T01:30:00Z")).toMatchObject({ allowed: true, jurisdictions: ["US", "US-NJ"], max_per_24h: null });
      const { rows } = await client.query(
        // The Canadian rule is cited by its Part (CRTC Unsolicited Telecommunications Rules, Part III).
        `select source from app_public.sms_send_windows where jurisdiction like 'US%' union all select source from app_public.sms_message_caps
         union all select source from app_public.sms_holiday_bans union all select source from app_public.sms_holidays`,
      );
      for (const { source } of rows) expect(source).toMatch(/\d/); // a section, not only the name of an act
      const { rows: florida } = await client.query("select distinct source from app_public.sms_send_windows where jurisdiction = 'US-FL'");
      expect(florida).toEqual([{ source: "Fla. Stat. 501.616(6)(a)" }]);
    });
  });

  it("refuses malformed rules with a constraint that says what is wrong, and writes nothing", async () => {
    await withRootDb(async (client) => {
      await client.query(`set local role ${db.roles.owner}`);
      const before = (await client.query("select (select count(*) from app_public.sms_holidays) + (select count(*) from app_public.sms_holiday_calendar) as n")).rows[0].n;
      const bad: Array<[string, string, string]> = [
        ["23503", "sms_holidays_jurisdiction_must_be_known", "insert into app_public.sms_holidays (jurisdiction, name, month, day, source) values ('US-ZZ', 'Narnia Day', 1, 2, 'none 1')"],
        ["23514", "sms_holidays_must_name_exactly_one_rule", "insert into app_public.sms_holidays (jurisdiction, name, month, day, easter_offset, source) values ('US-RI', 'Two rules', 1, 2, -2, 'x 1')"],
        ["23514", "sms_holidays_must_name_exactly_one_rule", "insert into app_public.sms_holidays (jurisdiction, name, source) values ('US-RI', 'No rule', 'x 1')"],
        ["23514", "sms_holidays_day_must_exist_in_its_month", "insert into app_public.sms_holidays (jurisdiction, name, month, day, source) values ('US-RI', 'April 31', 4, 31, 'x 1')"],
        ["23514", "sms_holidays_nth_must_be_1_to_5_or_minus_1_for_the_last", "insert into app_public.sms_holidays (jurisdiction, name, month, isodow, nth, source) values ('US-RI', 'Sixth Monday', 5, 1, 6, 'x 1')"],
        ["23514", "sms_holidays_weekend_rule_must_be_known", "insert into app_public.sms_holidays (jurisdiction, name, month, day, weekend_rule, source) values ('US-RI', 'Odd', 3, 3, 'whenever', 'x 1')"],
        ["23514", "sms_holidays_name_and_source_must_not_be_blank", "insert into app_public.sms_holidays (jurisdiction, name, month, day, source) values ('US-RI', 'Unsourced', 3, 3, ' ')"],
        ["23503", "sms_holiday_bans_jurisdiction_must_be_known", "insert into app_public.sms_holiday_bans (jurisdiction, source) values ('XX', 'x 1')"],
        ["23503", "sms_send_windows_jurisdiction_must_be_known", "insert into app_public.sms_send_windows (jurisdiction, isodow, allowed_from, allowed_until, source) values ('US-ZZ', 1, '09:00', '17:00', 'x 1')"],
        ["23514", "sms_send_windows_day_without_texts_has_neither_hour", "update app_public.sms_send_windows set allowed_until = null where jurisdiction = 'US-FL' and isodow = 1"],
        ["23514", "sms_send_windows_must_start_before_they_end", "update app_public.sms_send_windows set allowed_from = '21:00' where jurisdiction = 'US-FL' and isodow = 1"],
      ];
      for (const [code, constraint, sql] of bad) {
        const error = await expectSqlError(client, code, () => client.query(sql));
        expect(error.constraint, sql).toBe(constraint);
      }
      expect((await client.query("select (select count(*) from app_public.sms_holidays) + (select count(*) from app_public.sms_holiday_calendar) as n")).rows[0].n).toBe(before);
    });
  });

  it("a holiday the governor proclaims for one year, added by the owner, is in the calendar at once and lifted when removed", async () => {
    await withRootDb(async (client) => {
      const session = await registerUser(client);
      await client.query(`set local role ${db.roles.owner}`);
      await client.query("insert into app_public.sms_holidays (jurisdiction, name, on_date, source) values ('US-LA', 'Christmas Eve (proclaimed)', '2026-12-24', 'Governor''s proclamation, example 1')");
      await becomeUser(client, session);
      const eve = await windowFor(client, "+15045550100", "2026-12-24T16:00:00Z");
      expect(eve.reason).toMatch(/Christmas Eve \(proclaimed\), a holiday without texts; next allowed Sat 08:00/); // Christmas Friday
      expect((await windowFor(client, "+15045550100", "2027-12-24T16:00:00Z")).reason).not.toMatch(/proclaimed/); // one year only
      await client.query(`reset role`);
      await client.query(`set local role ${db.roles.owner}`);
      await client.query("delete from app_public.sms_holidays where name = 'Christmas Eve (proclaimed)'");
      await becomeUser(client, session);
      expect((await windowFor(client, "+15045550100", "2026-12-24T16:00:00Z")).allowed).toBe(true);
    });
  });

  it("the state rules review table in docs/messaging-and-compliance.md is the data, jurisdiction by jurisdiction", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      const expected = await renderStateRules(client);
      const file = resolve(projectRoot, "docs/messaging-and-compliance.md");
      const text = readFileSync(file, "utf8");
      const begin = "<!-- state-rules:begin -->\n";
      const end = "<!-- state-rules:end -->";
      expect(text.includes(begin) && text.includes(end), "the markers of the state rules table").toBe(true);
      const current = text.slice(text.indexOf(begin) + begin.length, text.indexOf(end));
      if (process.env.WRITE_STATE_RULES === "1" && current !== expected) {
        writeFileSync(file, text.slice(0, text.indexOf(begin) + begin.length) + expected + text.slice(text.indexOf(end)));
        return;
      }
      expect(current, "docs/messaging-and-compliance.md, State rules: run this test with WRITE_STATE_RULES=1 to rewrite it").toBe(expected);
    });
  });

  it("keeps the rules and the calendar read-only for members", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      await expectSqlError(client, "42501", () => client.query("delete from app_public.sms_holidays"));
      await expectSqlError(client, "42501", () => client.query("insert into app_public.sms_holiday_bans (jurisdiction, source) values ('US-NY', 'x 1')"));
      await expectSqlError(client, "42501", () => client.query("delete from app_public.sms_holiday_calendar"));
      await expectSqlError(client, "42501", () => client.query("update app_public.sms_jurisdictions set name = 'x'"));
      const { rows } = await client.query("select count(*)::int as n from app_public.sms_holiday_calendar where jurisdiction = 'US-RI' and day between '2026-01-01' and '2026-12-31'");
      expect(rows[0].n).toBeGreaterThan(15);
    });
  });
});

describe("carrier keywords", () => {
  it.each([
    ["STOP", "opt_out"],
    ["stop", "opt_out"],
    ["Stop please!", "opt_out"],
    ["  STOP.  ", "opt_out"],
    ["please stop, thanks", "opt_out"],
    ["StopAll", "opt_out"],
    ["UNSUBSCRIBE", "opt_out"],
    ["cancel", "opt_out"],
    ["End", "opt_out"],
    ["quit", "opt_out"],
    ["REVOKE", "opt_out"],
    ["opt out", "opt_out"],
    ["OPTOUT", "opt_out"],
    ["Start", "opt_in"],
    ["UNSTOP", "opt_in"],
    ["yes", "opt_in"],
    ["HELP", "help"],
    ["info?", "help"],
    // Any reasonable means (47 CFR 64.1200(a)(10), since 11 April 2025): requests built on the words…
    ["Please stop texting me", "opt_out"],
    ["unsubscribe me", "opt_out"],
    ["Take me off your list", "opt_out"],
    ["remove me from your list please", "opt_out"],
    ["Don't text me again", "opt_out"],
    ["no more texts", "opt_out"],
    ["I want to opt out", "opt_out"],
    ["Stop calling me, wrong number", "opt_out"],
    ["stop sending me these ads or I will sue", "opt_out"],
    // …a keyword said as a sentence of its own, said again, in full-width letters…
    ["Stop. Who is this?", "opt_out"],
    ["STOP STOP", "opt_out"],
    ["stop stop stop!!!", "opt_out"],
    ["ＳＴＯＰ", "opt_out"],
    ["Ｐｌｅａｓｅ ｓｔｏｐ", "opt_out"],
    // …in Spanish and French.
    ["ALTO", "opt_out"],
    ["Parar", "opt_out"],
    ["CANCELAR", "opt_out"],
    ["baja", "opt_out"],
    ["ARRÊT", "opt_out"],
    ["Arret", "opt_out"],
    ["No me envíes más mensajes", "opt_out"],
    ["Quiero darme de baja", "opt_out"],
    ["Arrêtez de m'envoyer des messages", "opt_out"],
    ["Ne m'envoyez plus de SMS", "opt_out"],
    ["Désabonnez-moi", "opt_out"],
    ["AYUDA", "help"],
    ["Aide", "help"],
    // Words of opting out without a request we can read: marketing waits for a clarifying answer.
    ["how do I unsubscribe?", "unclear"],
    ["Stop it", "unclear"],
    ["stop with these texts already", "unclear"],
  ])("%j is %s", async (body, meaning) => {
    await withRootDb(async (client) => {
      const { rows } = await client.query("select app_public.sms_keyword($1) as k", [body]);
      expect(rows[0].k).toBe(meaning);
    });
  });

  it("a member may ask what a text means (smsKeyword), as the API does", async () => {
    await withRootDb(async (client) => {
      await becomeUser(client, await registerUser(client));
      const { rows } = await client.query("select app_public.sms_keyword('Please stop texting me') as a, app_public.sms_keyword('how do I unsubscribe?') as b");
      expect(rows[0]).toEqual({ a: "opt_out", b: "unclear" });
    });
  });

  it("leaves ordinary messages alone, even when they contain a keyword", async () => {
    await withRootDb(async (client) => {
      for (const body of [
        "stop by at 5 please",
        "Can you stop the leak?",
        "don't stop",
        "yes, Tuesday works",
        "end of the day works",
        "cancel my appointment",
        "I need to cancel the visit tomorrow",
        "The water won't stop running",
        "Quit worrying, I'm home at 5",
        "Para mañana a las 5",
        "",
        null,
        "x".repeat(10_000),
      ]) {
        const { rows } = await client.query("select app_public.sms_keyword($1) as k", [body]);
        expect(rows[0].k, String(body).slice(0, 30)).toBeNull();
      }
    });
  });
});
