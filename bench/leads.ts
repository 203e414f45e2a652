/**
 * Lead CRM benchmark: loads a realistic data set with status history — a big tenant (200,000 leads),
 * a small one (10,000) and other tenants around them (90,000 leads in 8 tenants) — then measures, for
 * the small and the big tenant in the same run, the GraphQL latency of six operations and,
 * interleaved with them, a raw-SQL baseline doing the same work directly on a pooled connection (no
 * HTTP, no GraphQL, no RLS). It prints medians and p95s and the ratio GraphQL / SQL, so the figures
 * survive a noisy shared machine, and says which goals of issue 16 hold.
 *
 *   npm run bench:leads                                   # embedded PostgreSQL in a temporary folder
 *   BENCH_BIG_LEADS=50000 BENCH_OTHER_LEADS=0 npm run bench:leads   # smaller data set
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:leads
 *
 * Operations: a filtered lead list page (find_leads: status + tag + score, 50 rows), search_leads,
 * lead_funnel, lead_source_roi (one year), the first page of the timeline of a lead with 40,000
 * events, and a single-lead update with its history triggers. The baselines of the funnel and ROI are
 * the from-scratch queries the reports ran before their rollups; that of the timeline reads the first
 * 50 rows of one of its sources (the audit log) through its index. Each measured tenant has twenty
 * segments (so every lead write keeps their counts by deltas), and the run ends with the cost of
 * their counts: a recount from the leads against the fold the job runs after a lead change.
 */
import "../src/env.ts";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { openBenchDatabase } from "./database.ts";
import { startBenchApi } from "./api.ts";

const BIG = Number(process.env.BENCH_BIG_LEADS ?? 200_000);
const SMALL = Number(process.env.BENCH_SMALL_LEADS ?? 10_000);
const OTHER = Number(process.env.BENCH_OTHER_LEADS ?? 90_000);
const OTHER_TENANTS = Math.max(1, Number(process.env.BENCH_OTHER_TENANTS ?? 8));
const LEADS = BIG + SMALL + OTHER;
const TENANTS = 2 + OTHER_TENANTS;
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 60);
const roles = { owner: "switchboard_bench_owner", authenticator: "switchboard_bench_authenticator", visitor: "switchboard_bench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);

async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  const result = await fn();
  log(`  ${label}: ${((performance.now() - start) / 1000).toFixed(1)} s`);
  return result;
}

/** Generates the data set in SQL, set-based, with triggers off for the bulk load (history is generated explicitly). */
async function load(root: pg.Client): Promise<void> {
  await root.query("set session_replication_role = replica");
  await timed(`${TENANTS} tenants`, () =>
    root.query(
      `insert into app_public.tenants (id, business_name, trade_type)
       select gen_random_uuid(), 'Bench Tenant ' || i, (array['plumbing','hvac','electrical','dj','insurance'])[1 + i % 5]
         from generate_series(1, $1) i`,
      [TENANTS],
    ),
  );
  // Tenant 1 is the big one, tenant 2 the small one; g numbers the leads across tenants.
  await timed(`${LEADS.toLocaleString()} leads`, () =>
    root.query(
      `with t as (select id, n, size, sum(size) over (order by n) - size as first
                    from (select id, row_number() over (order by substring(business_name from '[0-9]+$')::int) as n
                            from app_public.tenants where business_name like 'Bench Tenant %') x
                   cross join lateral (select case x.n when 1 then $1::bigint when 2 then $2::bigint
                                                   else $3::bigint / $4 + case when x.n - 3 < $3::bigint % $4 then 1 else 0 end end as size) s)
       insert into app_public.leads (tenant_id, first_name, last_name, phone, email, city, region, source, tags, status, lead_score,
                                     urgency, estimated_value, created_at, updated_at)
       select t.id,
              (array['James','Mary','Robert','Patricia','John','Jennifer','Michael','Linda','David','Elizabeth','Maria','Carlos','Wei','Aisha'])[1 + (g % 14)],
              (array['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez','Nguyen','Patel','Kim','Lopez','Wilson'])[1 + ((g / 14) % 15)],
              '+1' || (2000000000 + g)::text,
              case when g % 3 = 0 then 'lead' || g || '@example.com' end,
              (array['Miami','Orlando','Tampa','Austin','Dallas','Houston','Denver','Phoenix','Seattle','Boston'])[1 + (g % 10)],
              (array['FL','FL','FL','TX','TX','TX','CO','AZ','WA','MA'])[1 + (g % 10)],
              (array['google_ads','facebook','referral','missed_call','website','yelp','import'])[1 + (g % 7)],
              case g % 5 when 0 then array['residential'] when 1 then array['commercial','urgent'] when 2 then array['referral']
                         when 3 then array['facebook','retarget'] else array[]::text[] end,
              (array['new','new','new','contacted','contacted','nurturing','qualified','hot','won','lost','cold'])[1 + (g % 11)],
              (g * 7919) % 101,
              (array['low','normal','normal','high','emergency'])[1 + (g % 5)],
              ((g * 31) % 5000)::numeric,
              now() - ((g % 365) || ' days')::interval - ((g % 1440) || ' minutes')::interval,
              now()
         from t
        cross join lateral generate_series(t.first, t.first + t.size - 1) g`,
      [BIG, SMALL, OTHER, OTHER_TENANTS],
    ),
  );
  await timed("status history", () =>
    root.query(
      `insert into app_public.lead_status_history (tenant_id, lead_id, from_status, to_status, trigger_type, changed_at)
       select l.tenant_id, l.id, p.from_status, p.to_status, 'manual', l.created_at + p.step * interval '1 day'
         from app_public.leads l
         cross join lateral (values (0, null, 'new'), (1, 'new', 'contacted'), (2, 'contacted', 'qualified'), (3, 'qualified', 'hot'), (4, 'hot', 'won'))
              as p(step, from_status, to_status)
        where p.step <= case l.status when 'new' then 0 when 'contacted' then 1 when 'nurturing' then 1 when 'cold' then 1 when 'lost' then 2
                                      when 'qualified' then 2 when 'hot' then 3 when 'won' then 4 else 0 end`,
    ),
  );
  await timed("source costs", () =>
    root.query(
      `insert into app_public.lead_source_costs (tenant_id, source, period, cost)
       select t.id, s.source, to_char(date_trunc('month', now()) - (m || ' months')::interval, 'YYYY-MM'), 100 + (m * 37) % 900
         from app_public.tenants t
         cross join unnest(array['google_ads','facebook','referral','missed_call','website','yelp','import']) s(source)
         cross join generate_series(0, 11) m
        where t.business_name like 'Bench Tenant %'`,
    ),
  );
  await root.query("set session_replication_role = origin");
  // Loaded with triggers off, so the report rollups are built as after any bulk load.
  await timed("report rollups (app_private.rebuild_lead_rollups, every tenant)", () =>
    root.query("select app_private.rebuild_lead_rollups(id) from app_public.tenants where business_name like 'Bench Tenant %'"),
  );
  await timed("analyze", () => root.query("analyze"));
}

interface Sample {
  gql: number[];
  sql: number[];
}

function stats(values: number[]): { median: number; p95: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { median: at(0.5), p95: at(0.95) };
}

interface Result {
  name: string;
  gql: { median: number; p95: number };
  sql: { median: number; p95: number };
  ratio: number;
  goal: string;
}

/** Twenty segments such as a team keeps: statuses, tags, scores, places, owners, a name, one recent window. */
const SEGMENT_FILTERS: Array<Record<string, unknown>> = [
  { status: "new" }, { status: ["contacted", "qualified"] }, { status: "hot" }, { status_not: ["won", "lost"] },
  { tags_any: ["urgent"] }, { tags_all: ["facebook", "retarget"] }, { score_min: 80 }, { score_max: 20 },
  { source: "google_ads" }, { source: ["referral", "yelp"] }, { city: "Miami" }, { region: ["TX", "FL"] },
  { unassigned: true }, { text: "garcia" }, { status: "new", score_min: 50 }, { tags_any: ["residential"], region: "FL" },
  { status: "won", source: "facebook" }, { created_from: "2026-01-01" }, { include_deleted: true, status: "lost" },
  { created_within_days: 7 },
];

interface SegmentFigures {
  recount: { median: number; p95: number };
  fold: { median: number; p95: number };
}

/** The six operations for one tenant, as one of its owners through the API and as raw SQL. */
async function measureTenant(
  root: pg.Client,
  api: Awaited<ReturnType<typeof startBenchApi>>,
  sqlClient: pg.Client,
  tenantName: string,
): Promise<{ results: Result[]; segments: SegmentFigures }> {
  // A real user of the tenant, logged in through the API.
  const { rows: tenantRows } = await root.query<{ id: string }>("select id from app_public.tenants where business_name = $1", [tenantName]);
  const tenantId = tenantRows[0]!.id;
  const email = `bench-${tenantId.slice(0, 8)}@example.com`;
  const { rows: userRows } = await root.query<{ id: string }>("select (app_private.create_user($1, 'bench-password-1')).id", [email]);
  await root.query("select app_private.add_member($1, $2, 'owner')", [tenantId, userRows[0]!.id]);
  const gql = api.gql;
  const token = await api.login(email, "bench-password-1");
  const { rows: leadRows } = await sqlClient.query<{ id: string }>(
    "select id from app_public.leads where tenant_id = $1 and deleted_at is null order by created_at desc limit 1",
    [tenantId],
  );
  const leadId = leadRows[0]!.id;
  // A long history for that lead: 20,000 field changes and 20,000 score changes over a month.
  await root.query("set session_replication_role = replica");
  await root.query(
    `insert into app_public.lead_audit_log (tenant_id, lead_id, field_name, old_value, new_value, change_source, changed_at)
     select $1, $2, 'city', to_jsonb('City ' || g), to_jsonb('City ' || (g + 1)), 'manual', now() - interval '30 days' + g * interval '1 minute'
       from generate_series(1, 20000) g`,
    [tenantId, leadId],
  );
  await root.query(
    `insert into app_public.lead_score_history (tenant_id, lead_id, score, factors, calculated_at)
     select $1, $2, (g * 7) % 101, '{}', now() - interval '30 days' + g * interval '1 minute' + interval '1 second'
       from generate_series(1, 20000) g`,
    [tenantId, leadId],
  );
  await root.query("set session_replication_role = origin");
  await root.query("analyze app_public.lead_audit_log, app_public.lead_score_history");
  // The tenant's segments: every lead write below (the update row) keeps their counts by deltas.
  for (const [i, filter] of SEGMENT_FILTERS.entries()) {
    await root.query("insert into app_public.segments (tenant_id, name, filter) values ($1, $2, $3)", [tenantId, `Bench segment ${i + 1}`, JSON.stringify(filter)]);
  }
  const nodeIdData = await gql(`query ($id: UUID!) { leadByRowId(rowId: $id) { id } }`, { id: leadId }, token);
  const leadNodeId: string = nodeIdData.leadByRowId.id;
  const from = new Date(Date.now() - 365 * 86400_000).toISOString().slice(0, 10);
  const to = new Date().toISOString().slice(0, 10);
  let toggle = 0;

  const operations: Array<{ name: string; maxRatio?: number; floor?: boolean; gql: () => Promise<unknown>; sql: () => Promise<unknown> }> = [
    {
      // What every request costs before any work: HTTP, the token, PostGraphile, the transaction and its settings.
      name: "floor: { currentUser { rowId } } vs select 1",
      floor: true,
      gql: () => gql(`{ currentUser { rowId } }`, {}, token),
      sql: () => sqlClient.query("select 1"),
    },
    {
      name: "filtered lead list page (50 rows)",
      maxRatio: 3,
      gql: () =>
        gql(
          `query ($f: JSON!) { findLeads(filter: $f, first: 50) { nodes { rowId fullName phone status leadScore tags createdAt } } }`,
          { f: { status: ["new", "contacted"], tags_any: ["commercial", "referral"], score_min: 40 } },
          token,
        ),
      sql: () =>
        sqlClient.query(
          `select id, full_name, phone, status, lead_score, tags, created_at from app_public.leads
            where tenant_id = $1 and deleted_at is null and status = any($2) and tags && $3 and lead_score >= $4
            order by created_at desc, id limit 50`,
          [tenantId, ["new", "contacted"], ["commercial", "referral"], 40],
        ),
    },
    {
      name: "search_leads('garcia', 20 rows)",
      maxRatio: 3,
      gql: () => gql(`{ searchLeads(query: "garcia", first: 20) { nodes { rowId fullName phone email } } }`, {}, token),
      sql: () =>
        sqlClient.query(
          `select id, full_name, phone, email from app_public.leads
            where tenant_id = $1 and deleted_at is null and full_name ilike '%' || $2 || '%'
            order by similarity(full_name, $2) desc limit 20`,
          [tenantId, "garcia"],
        ),
    },
    {
      name: "lead_funnel (one year)",
      gql: () => gql(`query ($from: Date!, $to: Date!) { leadFunnel(fromDate: $from, toDate: $to) { nodes { stage leads conversionFromPrevious } } }`, { from, to }, token),
      sql: () =>
        sqlClient.query(
          `select s.stage_order, count(distinct h.lead_id)
             from app_public.lead_status_history h join app_public.lead_statuses s on s.status = h.to_status
            where h.tenant_id = $1 and h.changed_at >= $2::date and h.changed_at < $3::date + 1 and s.stage_order is not null
            group by 1 order by 1`,
          [tenantId, from, to],
        ),
    },
    {
      name: "lead_source_roi (one year)",
      gql: () =>
        gql(`query ($from: Date!, $to: Date!) { leadSourceRoi(fromDate: $from, toDate: $to) { nodes { source leads conversions cost costPerLead } } }`, { from, to }, token),
      sql: () =>
        sqlClient.query(
          `with l as (select source, count(*) as leads, count(*) filter (where status in ('won','recruited')) as conversions
                        from app_public.leads where tenant_id = $1 and deleted_at is null and created_at >= $2::date and created_at < $3::date + 1
                       group by source),
                c as (select source, sum(cost) as cost from app_public.lead_source_costs
                       where tenant_id = $1 and period between to_char($2::date, 'YYYY-MM') and to_char($3::date, 'YYYY-MM') group by source)
           select coalesce(l.source, c.source), l.leads, l.conversions, c.cost, c.cost / nullif(l.leads, 0)
             from l full join c using (source)`,
          [tenantId, from, to],
        ),
    },
    {
      name: "lead_timeline, first 50 of 40,000 events",
      gql: () =>
        gql(`query ($id: UUID!) { leadTimeline(leadId: $id, first: 50) { nodes { occurredAt eventType summary details } } }`, { id: leadId }, token),
      sql: () =>
        sqlClient.query(
          `select changed_at, field_name, old_value, new_value from app_public.lead_audit_log
            where tenant_id = $1 and lead_id = $2 order by changed_at, id limit 50`,
          [tenantId, leadId],
        ),
    },
    {
      name: "single-lead update with history triggers",
      maxRatio: 2,
      gql: () =>
        gql(
          `mutation ($id: ID!, $city: String!) { updateLead(input: { id: $id, leadPatch: { city: $city, status: "contacted" } }) { lead { rowId updatedAt } } }`,
          { id: leadNodeId, city: `City ${toggle++}` },
          token,
        ),
      sql: () => sqlClient.query("update app_public.leads set city = $2, status = 'contacted' where id = $1 returning id, updated_at", [leadId, `City ${toggle++}`]),
    },
  ];

  const results: Result[] = [];
  for (const op of operations) {
    for (let i = 0; i < 5; i++) {
      await op.gql();
      await op.sql();
    }
    const sample: Sample = { gql: [], sql: [] };
    for (let i = 0; i < ITERATIONS; i++) {
      let t = performance.now();
      await op.gql();
      sample.gql.push(performance.now() - t);
      t = performance.now();
      await op.sql();
      sample.sql.push(performance.now() - t);
    }
    const g = stats(sample.gql);
    const s = stats(sample.sql);
    const ratio = g.median / s.median;
    const misses = [g.median > 100 ? "median > 100 ms" : "", op.maxRatio !== undefined && ratio > op.maxRatio ? `ratio > ${op.maxRatio}x` : ""].filter(Boolean);
    const goal = op.floor ? "(the fixed cost of a request)" : `${op.maxRatio !== undefined ? `≤ 100 ms, ≤ ${op.maxRatio}x` : "≤ 100 ms"}: ${misses.length ? `missed (${misses.join(", ")})` : "met"}`;
    results.push({ name: op.name, gql: g, sql: s, ratio, goal });
  }

  // Segment counts: a recount from the leads (what every refresh did before migration 000061, and
  // what the nightly job does) against the fold the job runs after a lead change.
  const recount: number[] = [];
  const fold: number[] = [];
  for (let i = 0; i < Math.max(5, Math.floor(ITERATIONS / 6)); i++) {
    let t = performance.now();
    await sqlClient.query("select app_private.refresh_segment_counts($1)", [tenantId]);
    recount.push(performance.now() - t);
  }
  for (let i = 0; i < ITERATIONS; i++) {
    await sqlClient.query("update app_public.leads set status = $2 where id = $1", [leadId, i % 2 ? "new" : "contacted"]);
    const t = performance.now();
    await sqlClient.query("select app_private.fold_segment_counts($1)", [tenantId]);
    fold.push(performance.now() - t);
  }
  return { results, segments: { recount: stats(recount), fold: stats(fold) } };
}

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_bench", roles, log);
  const { urls } = bench;
  try {
    const root = new pg.Client({ connectionString: bench.rootUrl });
    root.on("error", (error) => log(`root connection: ${error.message}`));
    await root.connect();
    log(`Loading ${LEADS.toLocaleString()} leads across ${TENANTS} tenants…`);
    await load(root);

    const ownerPool = new pg.Pool({ connectionString: urls.ownerUrl, max: 4 });
    const api = await startBenchApi(urls, roles, ownerPool);
    const sqlClient = new pg.Client({ connectionString: urls.ownerUrl });
    sqlClient.on("error", (error) => log(`sql connection: ${error.message}`));
    await sqlClient.connect();

    const sizes = [
      { label: `${SMALL.toLocaleString()} leads`, tenant: "Bench Tenant 2", leads: SMALL },
      { label: `${BIG.toLocaleString()} leads`, tenant: "Bench Tenant 1", leads: BIG },
    ];
    const all: Array<{ label: string; results: Result[]; segments: SegmentFigures }> = [];
    for (const size of sizes) {
      log(`Measuring the tenant of ${size.label}: ${ITERATIONS} iterations per operation (GraphQL and SQL interleaved, after warm-up)…`);
      all.push({ label: size.label, ...(await measureTenant(root, api, sqlClient, size.tenant)) });
    }

    const pad = (text: string, n: number) => text.padEnd(n);
    console.log(`\nLead CRM benchmark — ${LEADS.toLocaleString()} leads in ${TENANTS} tenants; medians (p95) in ms`);
    for (const { label, results, segments } of all) {
      console.log(`\nTenant of ${label}`);
      console.log(`${pad("operation", 44)} ${pad("GraphQL median / p95", 22)} ${pad("SQL median / p95", 20)} ${pad("ratio", 7)} goal`);
      for (const r of results) {
        console.log(
          `${pad(r.name, 44)} ${pad(`${r.gql.median.toFixed(2)} / ${r.gql.p95.toFixed(2)}`, 22)} ${pad(`${r.sql.median.toFixed(2)} / ${r.sql.p95.toFixed(2)}`, 20)} ${pad(`${r.ratio.toFixed(2)}x`, 7)} ${r.goal}`,
        );
      }
      console.log(
        `segment counts (${SEGMENT_FILTERS.length} segments, SQL): recount from the leads ${segments.recount.median.toFixed(2)} / ${segments.recount.p95.toFixed(2)} ms; ` +
          `after a lead change, fold ${segments.fold.median.toFixed(2)} / ${segments.fold.p95.toFixed(2)} ms (${(segments.fold.median / segments.recount.median).toFixed(3)}x)`,
      );
    }
    await sqlClient.end();
    await root.end();
    await api.close();
    await ownerPool.end();
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  } finally {
    await bench.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
