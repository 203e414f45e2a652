/**
 * Messaging compliance benchmark: what the outbox rules cost one marketing text, and whether that cost
 * grows with the tenant. A big tenant (BENCH_BIG_LEADS, default 200,000 leads, each with its consent
 * record and a past marketing text) and a small one (BENCH_SMALL_LEADS, default 2,000) are loaded with
 * triggers off. Their numbers are spread over area codes of states with and without stricter rules
 * (Sunday and holiday bans, daily caps), and a third of the leads live in another state than their
 * area code's (every zone must allow the text). 2% are on the do-not-contact list and 5% have no
 * consent: those texts are refused (SB001, SB002), as they would be.
 *
 * Timed, one statement each on one connection, in rounds that alternate the three so a noisy machine
 * hits them all:
 *   bare:   an insert of the same row into a copy of the messages table without triggers (the cost of
 *           writing the row itself: the baseline);
 *   small:  app_private.queue_message(… 'marketing' …) for a random lead of the small tenant, through
 *           the guard (do-not-contact, consent, unclear opt-out hold, every zone's hours with Sunday and
 *           holiday bans, daily cap, identification);
 *   big:    the same for the big tenant.
 * Also timed: app_public.sms_send_window alone for a recipient whose zones agree and one whose zones
 * disagree.
 *
 * Goal: cost per text grows with the result, not with the tenant: big / small ≤ 1.5.
 *
 *   npm run bench:messaging
 *   BENCH_BIG_LEADS=50000 BENCH_TEXTS=500 BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:messaging
 */
import "../src/env.ts";
import { cpus, totalmem } from "node:os";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { openBenchDatabase } from "./database.ts";

const BIG = Number(process.env.BENCH_BIG_LEADS ?? 200_000);
const SMALL = Number(process.env.BENCH_SMALL_LEADS ?? 2_000);
const TEXTS = Number(process.env.BENCH_TEXTS ?? 1_000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 4));
const roles = { owner: "switchboard_mbench_owner", authenticator: "switchboard_mbench_authenticator", visitor: "switchboard_mbench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);
// A Tuesday, 11:00 in New York: inside the hours of every state here (no holiday).
const AT = "2026-12-08T16:00:00Z";

async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  const result = await fn();
  log(`  ${label}: ${((performance.now() - start) / 1000).toFixed(1)} s`);
  return result;
}

interface Tenant {
  id: string;
  business: string;
  size: number;
}

/** A tenant with `size` leads, their consent, past texts and do-not-contact entries, loaded set-based with triggers off. */
async function loadTenant(root: pg.Client, name: string, size: number, offset: number): Promise<Tenant> {
  const { rows: [tenant] } = await root.query<{ id: string }>(
    "insert into app_public.tenants (business_name, trade_type, business_address) values ($1, 'plumbing', '1 Harbor Way, Miami, FL 33101') returning id",
    [name],
  );
  const business = `+1786${String(5_000_000 + offset / 1000).padStart(7, "0")}`;
  await root.query("set session_replication_role = replica");
  await root.query(
    "insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned) values ($1, $2, 'PN' || md5(random()::text), '786', 'active', now())",
    [tenant!.id, business],
  );
  await timed(`${name}: ${size.toLocaleString()} leads`, () =>
    root.query(
      `insert into app_public.leads (tenant_id, first_name, phone, region, source, created_at, updated_at)
       select $1, 'Lead ' || g,
              '+1' || (array['305','212','214','401','801','205','504','215','206','617','602','713'])[1 + g % 12] || lpad(((g + $3) % 10000000)::text, 7, '0'),
              -- A third live in another state than their area code's.
              case when g % 3 = 0 then (array['CA','NY','RI','UT','WA','FL','TX','AZ'])[1 + (g / 3) % 8] end,
              'bench', now() - (g % 365) * interval '1 day', now()
         from generate_series(1, $2) g`,
      [tenant!.id, size, offset],
    ),
  );
  await timed(`${name}: consent records (95%), past marketing texts, do-not-contact entries (2%)`, async () => {
    await root.query(
      `insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, given_at, evidence_hash)
       select l.tenant_id, l.id, 'sms', l.phone, 'marketing', 'import', 'I agree to receive marketing texts from this business. Reply STOP to stop.',
              l.created_at, repeat('0', 64)
         from app_public.leads l where l.tenant_id = $1 and hashtext(l.phone) % 20 <> 0`,
      [tenant!.id],
    );
    await root.query(
      `insert into app_public.messages (tenant_id, direction, sender, purpose, from_phone, to_phone, body, status, lead_id, scheduled_for, sent_at, created_at)
       select l.tenant_id, 'outbound', 'system', 'marketing', $2, l.phone, 'An earlier offer', 'sent', l.id,
              now() - (hashtext(l.phone) & 1023) * interval '1 hour', now() - (hashtext(l.phone) & 1023) * interval '1 hour', now() - (hashtext(l.phone) & 1023) * interval '1 hour'
         from app_public.leads l where l.tenant_id = $1`,
      [tenant!.id, business],
    );
    await root.query(
      `insert into app_public.dnc_list (tenant_id, phone, source, reason)
       select l.tenant_id, l.phone, 'manual', 'bench' from app_public.leads l where l.tenant_id = $1 and hashtext(l.phone) % 50 = 1`,
      [tenant!.id],
    );
  });
  await root.query("set session_replication_role = origin");
  return { id: tenant!.id, business, size };
}

function stats(values: number[]): { median: number; p95: number } {
  const s = [...values].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)] ?? NaN, p95: s[Math.min(s.length - 1, Math.floor(s.length * 0.95))] ?? NaN };
}

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_mbench", roles, log);
  try {
    const root = new pg.Client({ connectionString: bench.rootUrl });
    await root.connect();
    log("Loading…");
    const big = await loadTenant(root, "Big", BIG, 0);
    const small = await loadTenant(root, "Small", SMALL, BIG);
    await timed("analyze", () => root.query("analyze"));
    await root.query("create table public.bench_bare (like app_public.messages including defaults)");
    const leads = async (t: Tenant) =>
      (await root.query<{ id: string; phone: string }>("select id, phone from app_public.leads where tenant_id = $1 order by random() limit $2", [t.id, TEXTS * ROUNDS])).rows;
    const picks = { big: await leads(big), small: await leads(small) };
    const samples: Record<"bare" | "small" | "big", number[]> = { bare: [], small: [], big: [] };
    const outcomes: Record<string, number> = {};
    const queue = async (t: Tenant, lead: { id: string; phone: string }) => {
      const start = performance.now();
      try {
        await root.query("select id from app_private.queue_message($1, $2, $3, 'Spring tune-up, $79 this week', 'marketing', 'system', null, $4, null, $5::timestamptz)", [
          t.id, lead.phone, t.business, lead.id, AT,
        ]);
        outcomes.queued = (outcomes.queued ?? 0) + 1;
      } catch (error) {
        const code = (error as { code?: string }).code ?? "error";
        outcomes[code] = (outcomes[code] ?? 0) + 1;
      }
      return performance.now() - start;
    };
    for (let round = 0; round < ROUNDS; round++) {
      log(`Round ${round + 1}/${ROUNDS}: ${TEXTS} texts each (bare insert, small tenant, big tenant)…`);
      for (let i = 0; i < TEXTS; i++) {
        const k = round * TEXTS + i;
        const lead = picks.small[k % picks.small.length]!;
        const start = performance.now();
        await root.query(
          "insert into public.bench_bare (tenant_id, direction, sender, purpose, from_phone, to_phone, body, status, lead_id, scheduled_for) values ($1, 'outbound', 'system', 'marketing', $2, $3, 'Spring tune-up, $79 this week', 'queued', $4, $5::timestamptz)",
          [small.id, small.business, lead.phone, lead.id, AT],
        );
        samples.bare.push(performance.now() - start);
        samples.small.push(await queue(small, lead));
        samples.big.push(await queue(big, picks.big[k % picks.big.length]!));
      }
    }
    const window = async (phone: string, region: string | null) => {
      const times: number[] = [];
      for (let i = 0; i < TEXTS; i++) {
        const start = performance.now();
        await root.query("select * from app_public.sms_send_window($1, $2, null, $3::timestamptz + $4 * interval '37 minutes')", [phone, region, AT, i]);
        times.push(performance.now() - start);
      }
      return stats(times);
    };
    const agree = await window("+12125550100", null);
    const disagree = await window("+14015550100", "UT");
    const s = { bare: stats(samples.bare), small: stats(samples.small), big: stats(samples.big) };
    const ratio = s.big.median / s.small.median;
    const { rows: [server] } = await root.query<{ version: string }>("select version()");
    console.log(`\nMessaging compliance: ${TEXTS * ROUNDS} marketing texts per tenant, ${BIG.toLocaleString()}-lead and ${SMALL.toLocaleString()}-lead tenants\n`);
    console.log("| operation | median ms | p95 ms |");
    console.log("|---|---|---|");
    console.log(`| bare insert of the row (baseline) | ${s.bare.median.toFixed(3)} | ${s.bare.p95.toFixed(3)} |`);
    console.log(`| queue a marketing text, ${SMALL.toLocaleString()}-lead tenant | ${s.small.median.toFixed(3)} | ${s.small.p95.toFixed(3)} |`);
    console.log(`| queue a marketing text, ${BIG.toLocaleString()}-lead tenant | ${s.big.median.toFixed(3)} | ${s.big.p95.toFixed(3)} |`);
    console.log(`| sms_send_window, zones agree (New York) | ${agree.median.toFixed(3)} | ${agree.p95.toFixed(3)} |`);
    console.log(`| sms_send_window, zones disagree (Rhode Island number in Utah) | ${disagree.median.toFixed(3)} | ${disagree.p95.toFixed(3)} |`);
    console.log(`\nOutcomes: ${Object.entries(outcomes).map(([k, v]) => `${k} ${v}`).join(", ")}`);
    console.log(`bare / queued (small tenant): ${(s.bare.median / s.small.median).toFixed(3)}x; bare / queued (big tenant): ${(s.bare.median / s.big.median).toFixed(3)}x`);
    console.log(`big / small tenant: ${ratio.toFixed(2)}x (goal ≤ 1.5x: ${ratio <= 1.5 ? "met" : "missed"})`);
    console.log(`\nMachine: ${cpus().length} × ${cpus()[0]?.model.trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB; ${server!.version.split(" on ")[0]}; Node ${process.version}.`);
    await root.end();
  } finally {
    await bench.close();
  }
}

await main();
