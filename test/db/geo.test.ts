/**
 * Geography of leads (created in
 * migrations/committed/000002-lead-crm-leads-history-dnc-geo-segments-roi-funnel-ledger-sc.sql):
 * the area code and region reference data, the
 * lookups, and the trigger that fills a lead's timezone (and region/country) when they are not given —
 * from the phone's area code, else the lead's region, else the tenant's business_settings.timezone.
 * Leads are written as a tenant member (the visitor role), as the API and the worker would.
 */
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { addMember, becomeApiKey, becomeRoot, becomeUser, db, expectSqlError, registerUser, withRootDb, type RegisteredUser } from "../helpers.ts";

interface LeadGeo {
  phone: string | null;
  country: string;
  region: string | null;
  timezone: string | null;
}

/** A tenant with a distinctive time zone (Europe/Paris: no area code or region gives it) and an agent acting in it. */
async function parisTenant(client: pg.ClientBase): Promise<{ owner: RegisteredUser; agent: RegisteredUser }> {
  const owner = await registerUser(client, { businessName: "Geo Test Co", timezone: "Europe/Paris" });
  const agent = await addMember(client, owner.tenant_id!, "agent");
  await becomeUser(client, agent);
  return { owner, agent };
}

let phoneCounter = 0;
/** A fresh subscriber number (exchange 555, lines 0100-0199 are reserved for fiction) under an area code. */
const phoneIn = (areaCode: string) => `+1${areaCode}555${String(100 + (phoneCounter++ % 100)).padStart(4, "0")}`;

async function insertLead(client: pg.ClientBase, fields: Record<string, string | null>): Promise<LeadGeo & { id: string }> {
  const columns = Object.keys(fields);
  const { rows } = await client.query<LeadGeo & { id: string }>(
    `insert into app_public.leads (first_name, ${columns.join(", ")}) values ('Geo', ${columns.map((_, i) => `$${i + 1}`).join(", ")})
     returning id, phone, country, region, timezone`,
    Object.values(fields),
  );
  return rows[0]!;
}

async function leadGeo(client: pg.ClientBase, id: string): Promise<LeadGeo> {
  const { rows } = await client.query<LeadGeo>("select phone, country, region, timezone from app_public.leads where id = $1", [id]);
  return rows[0]!;
}

describe("reference data", () => {
  it("every zone is a real IANA zone, area codes are unique and 3 digits, and there are several hundred", async () => {
    await withRootDb(async (client) => {
      const { rows } = await client.query(
        `select (select count(*)::int from app_public.phone_area_codes) as area_codes,
                (select count(distinct area_code)::int from app_public.phone_area_codes) as distinct_area_codes,
                (select count(*)::int from app_public.phone_area_codes where area_code !~ '^[2-9][0-9]{2}$') as malformed,
                (select array_agg(distinct timezone) from app_public.phone_area_codes
                  where not exists (select 1 from pg_timezone_names n where n.name = timezone)) as bad_area_zones,
                (select array_agg(distinct timezone) from app_public.region_timezones
                  where not exists (select 1 from pg_timezone_names n where n.name = timezone)) as bad_region_zones,
                (select count(*)::int from app_public.phone_area_codes a
                  where not exists (select 1 from app_public.region_timezones r where r.country = a.country and r.region = a.region)) as orphans`,
      );
      const r = rows[0];
      expect(r.area_codes).toBeGreaterThanOrEqual(300);
      expect(r.distinct_area_codes).toBe(r.area_codes);
      expect(r.malformed).toBe(0);
      expect(r.bad_area_zones).toBeNull();
      expect(r.bad_region_zones).toBeNull();
      expect(r.orphans).toBe(0);
    });
  });

  it("lists every US state, DC, the territories and every Canadian province and territory", async () => {
    await withRootDb(async (client) => {
      const { rows } = await client.query<{ country: string; regions: string[] }>(
        "select country, array_agg(region order by region) as regions from app_public.region_timezones group by country order by country",
      );
      const states =
        "AK AL AR AZ CA CO CT DC DE FL GA HI IA ID IL IN KS KY LA MA MD ME MI MN MO MS MT NC ND NE NH NJ NM NV NY OH OK OR PA RI SC SD TN TX UT VA VT WA WI WV WY";
      expect(rows).toEqual([
        { country: "CA", regions: "AB BC MB NB NL NS NT NU ON PE QC SK YT".split(" ") },
        { country: "US", regions: `${states} AS GU MP PR VI`.split(" ").sort() },
      ]);
      const zones = await client.query<{ region: string; timezone: string }>(
        `select region, timezone from app_public.region_timezones
          where (country, region) in (('US','FL'), ('US','TX'), ('US','IN'), ('US','AZ'), ('US','HI'), ('US','AK'), ('US','TN'), ('CA','SK'), ('CA','QC'))
          order by region`,
      );
      expect(Object.fromEntries(zones.rows.map((z) => [z.region, z.timezone]))).toEqual({
        AK: "America/Anchorage",
        AZ: "America/Phoenix",
        FL: "America/New_York",
        HI: "Pacific/Honolulu",
        IN: "America/Indiana/Indianapolis",
        QC: "America/Toronto",
        SK: "America/Regina",
        TN: "America/Chicago",
        TX: "America/Chicago",
      });
    });
  });

  it.each([
    ["212", "US", "NY", "America/New_York"],
    ["213", "US", "CA", "America/Los_Angeles"],
    ["312", "US", "IL", "America/Chicago"],
    ["415", "US", "CA", "America/Los_Angeles"],
    ["512", "US", "TX", "America/Chicago"],
    ["602", "US", "AZ", "America/Phoenix"],
    ["702", "US", "NV", "America/Los_Angeles"],
    ["808", "US", "HI", "Pacific/Honolulu"],
    ["907", "US", "AK", "America/Anchorage"],
    ["617", "US", "MA", "America/New_York"],
    ["404", "US", "GA", "America/New_York"],
    ["305", "US", "FL", "America/New_York"],
    ["850", "US", "FL", "America/Chicago"],
    ["915", "US", "TX", "America/Denver"],
    ["208", "US", "ID", "America/Boise"],
    ["219", "US", "IN", "America/Chicago"],
    ["317", "US", "IN", "America/Indiana/Indianapolis"],
    ["270", "US", "KY", "America/Chicago"],
    ["865", "US", "TN", "America/New_York"],
    ["615", "US", "TN", "America/Chicago"],
    ["313", "US", "MI", "America/Detroit"],
    ["202", "US", "DC", "America/New_York"],
    ["787", "US", "PR", "America/Puerto_Rico"],
    ["671", "US", "GU", "Pacific/Guam"],
    ["514", "CA", "QC", "America/Toronto"],
    ["416", "CA", "ON", "America/Toronto"],
    ["604", "CA", "BC", "America/Vancouver"],
    ["403", "CA", "AB", "America/Edmonton"],
    ["306", "CA", "SK", "America/Regina"],
    ["902", "CA", "NS", "America/Halifax"],
    ["709", "CA", "NL", "America/St_Johns"],
  ])("area code %s is %s-%s in %s", async (areaCode, country, region, timezone) => {
    await withRootDb(async (client) => {
      const { rows } = await client.query("select country, region, timezone from app_public.phone_area_codes where area_code = $1", [areaCode]);
      expect(rows).toEqual([{ country, region, timezone }]);
    });
  });

  it("has no non-geographic codes (toll-free, premium, personal, government, Canadian non-geographic)", async () => {
    await withRootDb(async (client) => {
      const codes = ["800", "888", "877", "866", "855", "844", "833", "822", "900", "500", "521", "533", "544", "566", "577", "588", "600", "622", "700", "710", "456", "211", "911"];
      const { rows } = await client.query("select area_code from app_public.phone_area_codes where area_code = any($1)", [codes]);
      expect(rows).toEqual([]);
      // And the table refuses them.
      await expectSqlError(client, "23514", () =>
        client.query("insert into app_public.phone_area_codes (area_code, country, region, timezone) values ('833', 'US', 'NY', 'America/New_York')"),
      );
    });
  });

  it("is readable by every request, and no request can change it", async () => {
    await withRootDb(async (client) => {
      const user = await registerUser(client);
      await becomeUser(client, user);
      const { rows } = await client.query("select count(*)::int as n from app_public.phone_area_codes");
      expect(rows[0].n).toBeGreaterThanOrEqual(300);
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.phone_area_codes (area_code, country, region, timezone) values ('999', 'US', 'NY', 'America/New_York')"),
      );
      await expectSqlError(client, "42501", () => client.query("update app_public.phone_area_codes set timezone = 'America/Chicago' where area_code = '212'"));
      await expectSqlError(client, "42501", () => client.query("delete from app_public.region_timezones where region = 'FL'"));
      await expectSqlError(client, "42501", () => client.query("select app_private.lead_default_timezone(null, '+12125550100', 'US', 'NY')"));
    });
  });
});

describe("lookups", () => {
  it("phone_region and timezone_for_phone read +1 numbers and return nothing for the rest", async () => {
    await withRootDb(async (client) => {
      const user = await registerUser(client);
      await becomeUser(client, user);
      const { rows } = await client.query(
        `select (app_public.phone_region('+1 (305) 555-0100')).* `,
      );
      expect(rows).toEqual([{ area_code: "305", country: "US", region: "FL", timezone: "America/New_York" }]);
      const zones = await client.query(
        `select app_public.timezone_for_phone('+18505550100') as panhandle,
                app_public.timezone_for_phone('+1.416.555.0100') as toronto,
                app_public.timezone_for_phone('+18005550100') as toll_free,
                app_public.timezone_for_phone('+18765550100') as jamaica,
                app_public.timezone_for_phone('+442071234567') as london,
                app_public.timezone_for_phone('2125550100') as no_plus,
                app_public.timezone_for_phone('+1212555010') as too_short,
                app_public.timezone_for_phone(null) as nothing`,
      );
      expect(zones.rows[0]).toEqual({
        panhandle: "America/Chicago",
        toronto: "America/Toronto",
        toll_free: null,
        jamaica: null,
        london: null,
        no_plus: null,
        too_short: null,
        nothing: null,
      });
    });
  });

  it("timezone_for_region takes a postal code, an ISO 3166-2 code or a name, and territories as countries", async () => {
    await withRootDb(async (client) => {
      const { rows } = await client.query(
        `select app_public.timezone_for_region('US', 'az') as az, app_public.timezone_for_region('US', 'US-TX') as tx,
                app_public.timezone_for_region('CA', 'British Columbia') as bc, app_public.timezone_for_region('PR', null) as pr,
                app_public.timezone_for_region('US', 'ON') as wrong_country, app_public.timezone_for_region('US', 'Atlantis') as unknown`,
      );
      expect(rows[0]).toEqual({
        az: "America/Phoenix",
        tx: "America/Chicago",
        bc: "America/Vancouver",
        pr: "America/Puerto_Rico",
        wrong_country: null,
        unknown: null,
      });
    });
  });
});

describe("a lead's timezone and region are derived when not given", () => {
  it.each([
    ["305", "US", "FL", "America/New_York"],
    ["850", "US", "FL", "America/Chicago"],
    ["212", "US", "NY", "America/New_York"],
    ["915", "US", "TX", "America/Denver"],
    ["416", "CA", "ON", "America/Toronto"],
    ["787", "US", "PR", "America/Puerto_Rico"],
  ])("a %s number gets country %s, region %s and %s", async (areaCode, country, region, timezone) => {
    await withRootDb(async (client) => {
      await parisTenant(client);
      const phone = phoneIn(areaCode);
      const lead = await insertLead(client, { phone });
      expect(lead).toMatchObject({ phone, country, region, timezone });
    });
  });

  it.each([
    ["a toll-free number", "+18005550100"],
    ["a non-NANP number", "+442071234567"],
    ["a Caribbean NANP number", "+18765550100"],
  ])("%s falls back to the tenant's timezone, and the region stays empty", async (_label, phone) => {
    await withRootDb(async (client) => {
      await parisTenant(client);
      const lead = await insertLead(client, { phone });
      expect(lead).toMatchObject({ phone, country: "US", region: null, timezone: "Europe/Paris" });
    });
  });

  it("a lead with only an email gets the tenant's timezone; each tenant its own", async () => {
    await withRootDb(async (client) => {
      await parisTenant(client);
      const paris = await insertLead(client, { email: "paris@example.test" });
      expect(paris.timezone).toBe("Europe/Paris");
      await becomeRoot(client);
      const tokyo = await registerUser(client, { businessName: "Tokyo Co", timezone: "Asia/Tokyo" });
      await becomeUser(client, tokyo);
      const other = await insertLead(client, { email: "tokyo@example.test" });
      expect(other.timezone).toBe("Asia/Tokyo");
    });
  });

  it("a given region without a known area code gives that region's zone", async () => {
    await withRootDb(async (client) => {
      await parisTenant(client);
      expect(await insertLead(client, { email: "tx@example.test", region: "TX" })).toMatchObject({ country: "US", region: "TX", timezone: "America/Chicago" });
      expect(await insertLead(client, { phone: "+442071234567", region: "AZ" })).toMatchObject({ region: "AZ", timezone: "America/Phoenix" });
      expect(await insertLead(client, { email: "bc@example.test", country: "CA", region: "BC" })).toMatchObject({ country: "CA", region: "BC", timezone: "America/Vancouver" });
      expect(await insertLead(client, { email: "fl@example.test", region: "Florida" })).toMatchObject({ region: "Florida", timezone: "America/New_York" });
      // A region this data doesn't know: the tenant's zone, and the region is kept as given.
      expect(await insertLead(client, { email: "by@example.test", country: "DE", region: "BY" })).toMatchObject({ country: "DE", region: "BY", timezone: "Europe/Paris" });
    });
  });

  it("a given region is kept even when the area code says otherwise; the zone follows the phone", async () => {
    await withRootDb(async (client) => {
      await parisTenant(client);
      const lead = await insertLead(client, { phone: phoneIn("212"), region: "NJ" });
      expect(lead).toMatchObject({ country: "US", region: "NJ", timezone: "America/New_York" });
    });
  });

  it("an explicit timezone is kept (a blank one counts as not given)", async () => {
    await withRootDb(async (client) => {
      await parisTenant(client);
      expect(await insertLead(client, { phone: phoneIn("305"), timezone: "America/Denver" })).toMatchObject({ region: "FL", timezone: "America/Denver" });
      expect(await insertLead(client, { phone: phoneIn("305"), timezone: "Asia/Kolkata" })).toMatchObject({ timezone: "Asia/Kolkata" });
      expect(await insertLead(client, { phone: phoneIn("305"), timezone: "  " })).toMatchObject({ timezone: "America/New_York" });
      expect(await insertLead(client, { phone: phoneIn("305"), timezone: "Europe/Paris" })).toMatchObject({ timezone: "Europe/Paris" });
    });
  });

  it("an unknown explicit timezone is refused with 22023 and nothing is written", async () => {
    await withRootDb(async (client) => {
      const { agent } = await parisTenant(client);
      const error = await expectSqlError(client, "22023", () => insertLead(client, { phone: phoneIn("305"), timezone: "Mars/Olympus_Mons" }));
      expect(error.message).toMatch(/Unknown timezone 'Mars\/Olympus_Mons'/);
      await becomeRoot(client);
      const { rows } = await client.query("select count(*)::int as n from app_public.leads where tenant_id = $1", [agent.tenant_id]);
      expect(rows[0].n).toBe(0);

      await becomeUser(client, agent);
      const lead = await insertLead(client, { phone: phoneIn("305") });
      const updateError = await expectSqlError(client, "22023", () =>
        client.query("update app_public.leads set timezone = 'Eastern' where id = $1", [lead.id]),
      );
      expect(updateError.message).toMatch(/Unknown timezone 'Eastern'/);
      expect((await leadGeo(client, lead.id)).timezone).toBe("America/New_York");
    });
  });

  it("on update, derived values follow a new phone or region; explicit ones stay", async () => {
    await withRootDb(async (client) => {
      await parisTenant(client);
      // Derived from the phone: a new phone re-derives region, country and zone.
      const derived = await insertLead(client, { phone: phoneIn("305") });
      await client.query("update app_public.leads set phone = $2 where id = $1", [derived.id, phoneIn("415")]);
      expect(await leadGeo(client, derived.id)).toMatchObject({ country: "US", region: "CA", timezone: "America/Los_Angeles" });
      await client.query("update app_public.leads set phone = $2 where id = $1", [derived.id, phoneIn("604")]);
      expect(await leadGeo(client, derived.id)).toMatchObject({ country: "CA", region: "BC", timezone: "America/Vancouver" });
      // A number the data doesn't place: the derived region goes, the zone falls back to the tenant's.
      await client.query("update app_public.leads set phone = '+442071234567' where id = $1", [derived.id]);
      expect(await leadGeo(client, derived.id)).toMatchObject({ region: null, timezone: "Europe/Paris" });
      // Then a region is given: its zone replaces the fallback.
      await client.query("update app_public.leads set country = 'US', region = 'HI' where id = $1", [derived.id]);
      expect(await leadGeo(client, derived.id)).toMatchObject({ region: "HI", timezone: "Pacific/Honolulu" });

      // Explicit zone and region survive a phone change.
      const explicit = await insertLead(client, { phone: phoneIn("305"), region: "NY", timezone: "America/Denver" });
      await client.query("update app_public.leads set phone = $2 where id = $1", [explicit.id, phoneIn("415")]);
      expect(await leadGeo(client, explicit.id)).toMatchObject({ region: "NY", timezone: "America/Denver" });
      // Setting the zone to null asks for it to be derived again.
      await client.query("update app_public.leads set timezone = null where id = $1", [explicit.id]);
      expect((await leadGeo(client, explicit.id)).timezone).toBe("America/Los_Angeles");
      // A phone change and a zone in the same statement: the given zone wins.
      await client.query("update app_public.leads set phone = $2, timezone = 'America/Chicago' where id = $1", [explicit.id, phoneIn("212")]);
      expect((await leadGeo(client, explicit.id)).timezone).toBe("America/Chicago");
    });
  });

  it("a request made with an API key gets the tenant fallback too", async () => {
    await withRootDb(async (client) => {
      const { owner } = await parisTenant(client);
      await becomeUser(client, owner);
      const { rows: keys } = await client.query("select k.secret from app_public.create_api_key('Geo import', 'agent') k");
      await becomeApiKey(client, keys[0].secret);
      expect(await insertLead(client, { phone: "+33142685300" })).toMatchObject({ region: null, timezone: "Europe/Paris" });
    });
  });

  it("the worker (owner role) gets the same derivation, including the tenant fallback", async () => {
    await withRootDb(async (client) => {
      const { owner } = await parisTenant(client);
      await becomeRoot(client);
      await client.query(`set local role ${db.roles.owner}`);
      const { rows } = await client.query<LeadGeo>(
        `insert into app_public.leads (tenant_id, first_name, phone) values ($1, 'Worker', '+33142685300'), ($1, 'Worker', $2)
         returning phone, country, region, timezone`,
        [owner.tenant_id, phoneIn("808")],
      );
      expect(rows.map((r) => [r.region, r.timezone])).toEqual([
        [null, "Europe/Paris"],
        ["HI", "Pacific/Honolulu"],
      ]);
      await client.query("reset role");
    });
  });
});
