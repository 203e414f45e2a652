/**
 * SMS compliance core: the hours in which marketing texts may reach a recipient (federal, Canadian
 * and stricter state rules, kept as data), per-state caps, and the carrier keywords of inbound texts
 * (opt-out, opt-in, help). Asked as a tenant member (the visitor role), as the API would.
 */
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { becomeUser, expectSqlError, registerUser, withRootDb } from "../helpers.ts";

interface Window {
  allowed: boolean;
  next_allowed_at: Date | null;
  timezone: string;
  jurisdictions: string[];
  max_per_24h: number | null;
  reason: string;
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
      // Rhode Island (401): Saturday 17:30 local is closed (17:00 at weekends); next is Sunday 10:00.
      const saturday = await windowFor(client, "+14015550100", "2026-11-21T22:30:00Z");
      expect(saturday.allowed).toBe(false);
      expect(saturday.next_allowed_at!.toISOString()).toBe("2026-11-22T15:00:00.000Z");
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

  it("property: a marketing text to a random lead at a random moment is scheduled at the first moment every zone of the lead allows (an oracle written here)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const rules = (await client.query<{ jurisdiction: string; isodow: number; opens: number; closes: number }>(
        "select jurisdiction, isodow, extract(epoch from allowed_from)::int as opens, extract(epoch from allowed_until)::int as closes from app_public.sms_send_windows",
      )).rows;
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
          formats.set(zone, new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", weekday: "short", hour: "2-digit", minute: "2-digit", second: "2-digit" }));
        }
        const parts = Object.fromEntries(formats.get(zone)!.formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
        return { isodow: weekday[parts.weekday!]!, seconds: Number(parts.hour) * 3600 + Number(parts.minute) * 60 + Number(parts.second) };
      };
      // The law as this test reads it: the national rule of every country involved and the rules of the
      // area code's state and of the known state all hold, in every zone that may be the recipient's.
      const oracle = (ms: number, zones: string[], jurisdictions: string[]) =>
        zones.every((zone) => {
          const { isodow, seconds } = local(ms, zone);
          const day = rules.filter((r) => jurisdictions.includes(r.jurisdiction) && r.isodow === isodow);
          if (day.length === 0) return false;
          const opens = Math.max(...day.map((r) => r.opens));
          const closes = Math.min(...day.map((r) => r.closes));
          return opens < closes && seconds >= opens && seconds < closes;
        });
      let seed = 20261204;
      const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
      const pick = <T,>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
      const codes = ["305", "212", "214", "401", "203", "808", "416", "602", "213", "907"];
      const givenRegions = [null, "FL", "CA", "TX", "AZ", "RI", "NY", "HI", "AK"];
      const givenZones = [null, null, "America/Los_Angeles", "America/New_York", "America/Phoenix", "Pacific/Honolulu", "America/Chicago", "America/Anchorage"];
      const start = Date.parse("2026-01-01T00:00:00Z");
      for (let i = 0; i < 150; i++) {
        const phone = `+1${pick(codes)}${String(1_000_000 + i * 7919 + Math.floor(random() * 1000)).slice(-7)}`;
        const at = start + Math.floor(random() * 365 * 1440) * 60_000; // any minute of 2026, the changes of clock included
        const { rows: [lead] } = await client.query(
          "insert into app_public.leads (tenant_id, phone, region, timezone, source) values ($1, $2, $3, $4, 'test') returning id, region, country, timezone",
          [owner.tenant_id, phone, pick(givenRegions), pick(givenZones)],
        );
        const area = areas.get(phone.slice(2, 5));
        const given = lead.region ? regions.find((r) => r.region === lead.region && (!area || r.country === area.country)) ?? regions.find((r) => r.region === lead.region) : undefined;
        const zones = [...new Set([lead.timezone, area?.timezone, given?.timezone].filter((z): z is string => !!z))];
        const countries = [area?.country ?? given?.country ?? "US", area?.country, given?.country].filter((c): c is string => !!c);
        const states = [area && `${area.country}-${area.region}`, given && `${given.country}-${given.region}`].filter((j): j is string => !!j);
        const jurisdictions = [...new Set([...countries, ...states])].filter((j) => rules.some((r) => r.jurisdiction === j));
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
