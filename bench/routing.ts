/**
 * Routing benchmark: how route_lead's cost grows with the size of the team, against a TPC-B-like
 * baseline (pgbench's default transaction: update an account, read its balance, update a teller and
 * a branch, insert a history row) run by the same script, on the same server, with the same
 * connection counts. The embedded PostgreSQL ships no pgbench binary, so the baseline is pgbench's
 * transaction run as an equivalent raw-SQL loop, measured again before each routing run.
 *
 * For each team size in BENCH_AGENTS and each team shape in BENCH_TEAMS it builds a tenant and routes
 * its leads with direct assignment:
 * - all_eligible: every agent available with room, no skills or areas: the worst case for a router
 *   that looks at everyone, and the strategy's pure cost;
 * - realistic: agents over 20 service lines (two each), 3 languages, 50 cities (one in five serving a
 *   radius around its city instead), 20% offline; leads spread the same way, 30% with coordinates,
 *   10% events on a date that needs a free slot of the agent.
 * It prints one table: tps at 8 connections (and at 32 for the smallest team), the ratio to the
 * baseline, sequential p50 in SQL, and the bytes of lead_routing_history written per decision; then
 * the goals of issue 15, round-robin fairness, the invariants (must be 0) and the GraphQL overhead
 * of routeLead against route_lead in SQL.
 *
 *   npm run bench:routing
 *   BENCH_AGENTS=10,1000 BENCH_TEAMS=realistic BENCH_SECONDS=5 npm run bench:routing
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:routing
 *   BENCH_STRATEGY=least_loaded npm run bench:routing   (the tenants' default strategy; weighted round robin otherwise)
 */
import "../src/env.ts";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { openBenchDatabase } from "./database.ts";
import { startBenchApi } from "./api.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const SIZES = (process.env.BENCH_AGENTS ?? "10,100,1000,5000").split(",").map(Number).sort((a, b) => a - b);
const TEAMS = (process.env.BENCH_TEAMS ?? "all_eligible,realistic").split(",") as Team[];
const SEQUENTIAL = Number(process.env.BENCH_SEQUENTIAL ?? 100);
const GRAPHQL_CALLS = Number(process.env.BENCH_GRAPHQL_CALLS ?? 200);
const roles = { owner: "switchboard_rbench_owner", authenticator: "switchboard_rbench_authenticator", visitor: "switchboard_rbench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);

type Team = "all_eligible" | "realistic";

interface Run {
  transactions: number;
  seconds: number;
  latencies: number[];
}

interface Row {
  team: Team;
  agents: number;
  connections: number;
  baselineTps: number;
  routeTps: number;
  /** Throughput of the decision's writes alone (decision_writes), measured for the smallest all-eligible team. */
  floorTps: number | null;
  notAssigned: number;
  p50: number | null;
  bytesPerDecision: number;
}

function percentile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

/** Runs `work` on `connections` clients in parallel for SECONDS seconds; each call is one transaction. */
async function drive(pool: pg.Pool, connections: number, work: (client: pg.PoolClient, i: number) => Promise<void>): Promise<Run> {
  const latencies: number[] = [];
  let transactions = 0;
  let counter = 0;
  const until = performance.now() + SECONDS * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      const client = await pool.connect();
      try {
        while (performance.now() < until) {
          const t = performance.now();
          await work(client, counter++);
          latencies.push(performance.now() - t);
          transactions++;
        }
      } finally {
        client.release();
      }
    }),
  );
  return { transactions, seconds: (performance.now() - start) / 1000, latencies };
}

/** A tenant with `agents` agents of the given shape and `leads` unrouted leads; returns its id and lead ids. */
async function buildTenant(root: pg.Client, team: Team, agents: number, leads: number, ownerId: string): Promise<{ tenantId: string; leadIds: string[] }> {
  const { rows } = await root.query<{ id: string }>("select (app_private.create_tenant($1, $2)).id", [`Routing Bench ${team} ${agents}`, ownerId]);
  const tenantId = rows[0]!.id;
  await root.query(
    `insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'routing.direct_assignment', 'true', 'boolean')
     on conflict (tenant_id, key) do update set value = excluded.value`,
    [tenantId],
  );
  if (process.env.BENCH_STRATEGY) {
    await root.query(
      "insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'routing.default_strategy', to_jsonb($2::text), 'string')",
      [tenantId, process.env.BENCH_STRATEGY],
    );
  }
  if (team === "all_eligible") {
    await root.query(
      `with a as (insert into app_public.agents (tenant_id, display_name, routing_weight)
                  select $1, 'Agent ' || i, 1 + i % 3 from generate_series(1, $2) i returning id)
       insert into app_public.agent_availability (tenant_id, agent_id, status, max_capacity) select $1, id, 'available', 100000 from a`,
      [tenantId, agents],
    );
  } else {
    // City c sits at (30 + c % 10, -100 + c / 10); one agent in five serves 30 miles around its city.
    await root.query("drop table if exists pg_temp.bench_agents");
    await root.query("create temporary table bench_agents as select i, gen_random_uuid() as id from generate_series(1, $1::int) i", [agents]);
    const steps = [
      `insert into app_public.agents (id, tenant_id, display_name, routing_weight, languages)
         select id, $1::uuid, 'Agent ' || i, 1 + i % 3,
                case when i % 10 < 7 then '{en}'::text[] when i % 10 < 9 then '{en,es}' else '{en,vi}' end
           from bench_agents`,
      `insert into app_public.agent_availability (tenant_id, agent_id, status, max_capacity)
         select $1::uuid, id, case when i % 5 = 0 then 'offline' else 'available' end, 100000 from bench_agents`,
      `insert into app_public.agent_specializations (tenant_id, agent_id, service_line, proficiency)
         select $1::uuid, id, 'Line ' || (i % 20), 1 + i % 5 from bench_agents
         union all
         select $1::uuid, id, 'Line ' || ((i * 7 + 3) % 20), 3 from bench_agents where (i * 7 + 3) % 20 <> i % 20`,
      `insert into app_public.agent_service_areas (tenant_id, agent_id, kind, region, city, center_latitude, center_longitude, radius_miles)
         select $1::uuid, id,
                case when i % 5 = 1 then 'radius' else 'city' end,
                case when i % 5 = 1 then null else 'TX' end,
                case when i % 5 = 1 then null else 'City ' || (i % 50) end,
                case when i % 5 = 1 then 30 + (i % 50) % 10 end,
                case when i % 5 = 1 then -100 + (i % 50) / 10 end,
                case when i % 5 = 1 then 30 end
           from bench_agents`,
      `insert into app_public.availability_slots (tenant_id, agent_id, slot_date, start_time, end_time)
         select $1::uuid, id, current_date + d, make_time(h, 0, 0), make_time(h + 2, 0, 0)
           from bench_agents, generate_series(1, 14) d, unnest(array[10, 12, 14, 16]) h`,
    ];
    for (const step of steps) await root.query(step, [tenantId]);
    await root.query("drop table bench_agents");
  }
  await root.query("set session_replication_role = replica");
  if (team === "all_eligible") {
    await root.query(
      `insert into app_public.leads (tenant_id, first_name, phone, source, timezone)
       select $1, 'Lead ' || g, '+1' || (3000000000 + g + $3::bigint)::text, 'bench', 'America/New_York' from generate_series(1, $2) g`,
      [tenantId, leads, agents * 1_000_000],
    );
  } else {
    await root.query(
      `insert into app_public.leads (tenant_id, first_name, phone, source, timezone, service_line, language, city, region, attributes, event_date)
       select $1, 'Lead ' || g, '+1' || (3000000000 + g + $3::bigint)::text, 'bench', 'America/Chicago',
              'Line ' || (g % 20),
              case when g % 20 < 16 then 'en' when g % 20 < 19 then 'es' else 'vi' end,
              'City ' || (g % 50), 'TX',
              case when g % 10 < 3 then jsonb_build_object('latitude', 30 + (g % 50) % 10 + 0.1, 'longitude', -100 + (g % 50) / 10 + 0.1) else '{}'::jsonb end,
              case when g % 10 = 9 then current_date + 1 + g % 14 end
         from generate_series(1, $2) g`,
      [tenantId, leads, agents * 1_000_000],
    );
  }
  await root.query("set session_replication_role = origin");
  const { rows: leadRows } = await root.query<{ id: string }>("select id from app_public.leads where tenant_id = $1 order by random()", [tenantId]);
  return { tenantId, leadIds: leadRows.map((r) => r.id) };
}

async function tpcbSetup(root: pg.Client): Promise<void> {
  // The baseline's tables belong to the owner role, which both workloads run as.
  await root.query(`
    set role ${pg.escapeIdentifier(roles.owner)};
    drop schema if exists tpcb cascade;
    create schema tpcb;
    create table tpcb.branches (bid int primary key, bbalance int not null default 0, filler char(88));
    create table tpcb.tellers (tid int primary key, bid int not null, tbalance int not null default 0, filler char(84));
    create table tpcb.accounts (aid int primary key, bid int not null, abalance int not null default 0, filler char(84));
    create table tpcb.history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
    insert into tpcb.branches (bid) select generate_series(1, 10);
    insert into tpcb.tellers (tid, bid) select t, 1 + (t - 1) / 10 from generate_series(1, 100) t;
    insert into tpcb.accounts (aid, bid) select a, 1 + (a - 1) / 100000 from generate_series(1, 1000000) a;
    reset role;`);
}

/**
 * The writes of one direct assignment and nothing else: what route_lead must write whatever it does
 * to choose (the lead's new owner with its triggers, audit and assignment history; the agent's load
 * with its routing-pool refresh; the round-robin ledger; the decision record of the same size and the
 * routing event). No candidate is read or checked. Its throughput is the ceiling of route_lead's.
 */
async function decisionWritesSetup(root: pg.Client): Promise<void> {
  await root.query(`
    set role ${pg.escapeIdentifier(roles.owner)};
    create function tpcb.decision_writes(p_tenant uuid, p_lead uuid, p_agent uuid, p_candidates jsonb, p_counts jsonb) returns void
      language plpgsql volatile security definer set search_path to pg_catalog, public, pg_temp as $$
    declare
      v_history bigint;
    begin
      perform 1 from app_public.leads l where l.tenant_id = p_tenant and l.id = p_lead for no key update;
      perform 1 from app_public.agent_availability av where av.tenant_id = p_tenant and av.agent_id = p_agent for update;
      insert into app_public.agent_routing_credits as c (agent_id, tenant_id, pass) values (p_agent, p_tenant, 1)
      on conflict (agent_id) do update set pass = c.pass + 1, updated_at = now();
      update app_public.agent_availability av
         set current_load = av.current_load + 1, cap_day_count = av.cap_day_count + 1, cap_day = current_date,
             cap_week_count = av.cap_week_count + 1, cap_week = date_trunc('week', now())::date
       where av.tenant_id = p_tenant and av.agent_id = p_agent;
      perform set_config('app.assignment_strategy', 'weighted_round_robin', true);
      perform set_config('app.assignment_reason', 'Routing: write floor', true);
      perform set_config('app.change_source', 'routing', true);
      update app_public.leads l set owner_agent_id = p_agent where l.tenant_id = p_tenant and l.id = p_lead;
      if not found then raise exception 'decision_writes: lead % not updated', p_lead; end if;
      perform set_config('app.assignment_strategy', '', true);
      perform set_config('app.assignment_reason', '', true);
      perform set_config('app.change_source', '', true);
      insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, strategy, candidates, candidate_counts, chosen_agent_id, outcome, reason)
      values (p_tenant, p_lead, 'manual', 'weighted_round_robin', p_candidates, p_counts, p_agent, 'assigned', 'write floor')
      returning id into v_history;
      insert into app_public.routing_events (tenant_id, lead_id, agent_id, event_type, data)
      values (p_tenant, p_lead, p_agent, 'assigned', jsonb_build_object('history_id', v_history, 'strategy', 'weighted_round_robin', 'reason', 'write floor'));
    end;
    $$;
    reset role;`);
}

async function tpcb(client: pg.PoolClient): Promise<void> {
  const aid = 1 + Math.floor(Math.random() * 1_000_000);
  const tid = 1 + Math.floor(Math.random() * 100);
  const bid = 1 + Math.floor(Math.random() * 10);
  const delta = Math.floor(Math.random() * 10001) - 5000;
  await client.query("begin");
  await client.query("update tpcb.accounts set abalance = abalance + $1 where aid = $2", [delta, aid]);
  await client.query("select abalance from tpcb.accounts where aid = $1", [aid]);
  await client.query("update tpcb.tellers set tbalance = tbalance + $1 where tid = $2", [delta, tid]);
  await client.query("update tpcb.branches set bbalance = bbalance + $1 where bid = $2", [delta, bid]);
  await client.query("insert into tpcb.history (tid, bid, aid, delta, mtime) values ($1, $2, $3, $4, current_timestamp)", [tid, bid, aid, delta]);
  await client.query("commit");
}

const maxHistoryId = async (root: pg.Client) => (await root.query<{ id: string | null }>("select max(id)::text as id from app_public.lead_routing_history")).rows[0]!.id ?? "0";

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_rbench", roles, log);
  const { urls } = bench;
  try {
    const root = new pg.Client({ connectionString: bench.rootUrl });
    root.on("error", (error) => log(`root connection: ${error.message}`));
    await root.connect();
    const { rows: userRows } = await root.query<{ id: string }>("select (app_private.create_user('rbench@example.com', 'rbench-password-1')).id");
    const ownerId = userRows[0]!.id;
    log("Setting up the TPC-B-like tables…");
    await tpcbSetup(root);
    await decisionWritesSetup(root);

    const ownerPool = new pg.Pool({ connectionString: urls.ownerUrl, max: 40 });
    ownerPool.on("error", (error) => log(`owner pool: ${error.message}`));
    const rows: Row[] = [];
    const fairness: Array<{ team: Team; agents: number; gap: number }> = [];
    let graphqlTenant: { team: Team; agents: number; tenantId: string; leads: () => string } | null = null;

    for (const team of TEAMS) {
      for (const agents of SIZES) {
        const connectionCounts = agents === SIZES[0] ? [8, 32] : [8];
        const leadsNeeded = (connectionCounts.length + (team === "all_eligible" && agents === SIZES[0] ? 1 : 0)) * SECONDS * 2500 + SEQUENTIAL + (graphqlTenant ? 0 : 2 * GRAPHQL_CALLS) + 500;
        log(`${team}, ${agents} agents: building the tenant and ${leadsNeeded.toLocaleString()} leads…`);
        const { tenantId, leadIds } = await buildTenant(root, team, agents, leadsNeeded, ownerId);
        await root.query("analyze");
        let next = 0;
        const takeLead = () => {
          const id = leadIds[next++];
          if (!id) throw new Error(`ran out of leads (${leadIds.length})`);
          return id;
        };
        graphqlTenant ??= { team, agents, tenantId, leads: takeLead };
        const firstHistory = await maxHistoryId(root);
        for (const connections of connectionCounts) {
          log(`  TPC-B-like baseline, ${connections} connections, ${SECONDS} s…`);
          const baseline = await drive(ownerPool, connections, tpcb);
          log(`  route_lead, ${connections} connections, ${SECONDS} s…`);
          const before = await maxHistoryId(root);
          const routing = await drive(ownerPool, connections, async (client) => {
            await client.query("select app_private.route_lead($1, $2, 'manual')", [tenantId, takeLead()]);
          });
          // Outcomes are read afterwards (the history row a call inserts is not visible to that call's own statement).
          const { rows: outcomeRows } = await root.query<{ outcome: string; reason: string | null; n: string; bytes: string }>(
            `select outcome, min(reason) as reason, count(*) as n, sum(pg_column_size(h.*)) as bytes
               from app_public.lead_routing_history h where id > $1::bigint group by 1 order by 3 desc`,
            [before],
          );
          const decisions = outcomeRows.reduce((sum, r) => sum + Number(r.n), 0);
          const notAssigned = outcomeRows.filter((r) => r.outcome !== "assigned").reduce((sum, r) => sum + Number(r.n), 0);
          for (const r of outcomeRows.filter((r) => r.outcome !== "assigned").slice(0, 2)) log(`    not assigned (${r.n}): ${r.outcome}: e.g. ${r.reason ?? ""}`);
          rows.push({
            team,
            agents,
            connections,
            baselineTps: baseline.transactions / baseline.seconds,
            routeTps: routing.transactions / routing.seconds,
            floorTps: null,
            notAssigned,
            p50: null,
            bytesPerDecision: outcomeRows.reduce((sum, r) => sum + Number(r.bytes), 0) / Math.max(1, decisions),
          });
          if (team === "all_eligible" && agents === SIZES[0] && connections === 8) {
            // The same writes without the choice: each connection writes for an agent of its own (no lock waits),
            // with a decision record copied from a real one of this run.
            const { rows: sample } = await root.query<{ candidates: unknown; candidate_counts: unknown }>(
              "select candidates, candidate_counts from app_public.lead_routing_history where id > $1::bigint and outcome = 'assigned' order by id desc limit 1",
              [before],
            );
            const { rows: agentRows } = await root.query<{ id: string }>("select id from app_public.agents where tenant_id = $1 order by id", [tenantId]);
            log(`  the decision's writes alone, ${connections} connections, ${SECONDS} s…`);
            let slot = 0;
            const owners = new Map<pg.PoolClient, string>();
            const floor = await drive(ownerPool, connections, async (client) => {
              if (!owners.has(client)) owners.set(client, agentRows[slot++ % agentRows.length]!.id);
              await client.query("select tpcb.decision_writes($1, $2, $3, $4, $5)", [
                tenantId,
                takeLead(),
                owners.get(client),
                JSON.stringify(sample[0]?.candidates ?? []),
                sample[0]?.candidate_counts == null ? null : JSON.stringify(sample[0].candidate_counts),
              ]);
            });
            rows[rows.length - 1]!.floorTps = floor.transactions / floor.seconds;
          }
        }
        log(`  sequential route_lead, ${SEQUENTIAL} calls…`);
        const client = await ownerPool.connect();
        const times: number[] = [];
        try {
          for (let i = 0; i < SEQUENTIAL; i++) {
            const t = performance.now();
            await client.query("select app_private.route_lead($1, $2, 'manual')", [tenantId, takeLead()]);
            times.push(performance.now() - t);
          }
        } finally {
          client.release();
        }
        rows.find((r) => r.team === team && r.agents === agents && r.connections === 8)!.p50 = percentile(times, 0.5);

        if (team === "all_eligible" && (process.env.BENCH_STRATEGY ?? "weighted_round_robin") === "weighted_round_robin") {
          // Round-robin fairness under concurrency: each agent's share of the leads assigned against its share of the weights.
          const { rows: shareRows } = await root.query<{ share: number; expected: number }>(
            `with picks as (select chosen_agent_id as agent_id, count(*) as n from app_public.lead_routing_history
                             where id > $1::bigint and outcome = 'assigned' and tenant_id = $2 and reason <> 'write floor' group by 1)
             select coalesce(p.n, 0)::float / sum(coalesce(p.n, 0)) over () as share,
                    a.routing_weight::float / sum(a.routing_weight) over () as expected
               from app_public.agents a left join picks p on p.agent_id = a.id where a.tenant_id = $2`,
            [firstHistory, tenantId],
          );
          fairness.push({ team, agents, gap: shareRows.reduce((worst, r) => Math.max(worst, Math.abs(r.share - r.expected)), 0) });
        }
      }
    }

    log("Counting invariant violations…");
    const { rows: violations } = await root.query<{ check: string; n: string }>(
      `select 'agent over capacity' as check, count(*) as n from app_public.agent_availability where current_load > max_capacity
       union all
       select 'load differs from leads owned + pending offers', count(*) from app_public.agent_availability a
        where a.current_load <> (select count(*) from app_public.leads l where l.tenant_id = a.tenant_id and l.owner_agent_id = a.agent_id)
                                + (select count(*) from app_public.routing_offers o where o.tenant_id = a.tenant_id and o.agent_id = a.agent_id and o.status = 'pending')
       union all
       select 'lead with more than one pending offer', count(*) from (select lead_id from app_public.routing_offers where status = 'pending' group by lead_id having count(*) > 1) x
       union all
       select 'lead assigned twice', count(*) from (select lead_id from app_public.lead_routing_history where outcome = 'assigned' group by lead_id having count(*) > 1) x
       union all
       select 'slot booked for two leads', count(*) from (select booked_lead_id from app_public.availability_slots where booked_lead_id is not null group by booked_lead_id having count(*) > 1) x`,
    );

    const gqlOn = graphqlTenant!;
    log(`GraphQL routeLead vs SQL route_lead (${gqlOn.team}, ${gqlOn.agents} agents), sequential, ${GRAPHQL_CALLS} calls each…`);
    const api = await startBenchApi(urls, roles, ownerPool);
    // The user owns every bench tenant; with no session yet, login lands in the oldest: the first built.
    const token = await api.login("rbench@example.com", "rbench-password-1");
    const sqlClient = await ownerPool.connect();
    const gqlTimes: number[] = [];
    const sqlTimes: number[] = [];
    for (let i = 0; i < GRAPHQL_CALLS; i++) {
      let t = performance.now();
      const answer = await api.gql(`mutation ($id: UUID!) { routeLead(input: { leadId: $id }) { result { outcome } } }`, { id: gqlOn.leads() }, token);
      if (answer.errors) throw new Error(`routeLead: ${JSON.stringify(answer.errors)}`);
      gqlTimes.push(performance.now() - t);
      t = performance.now();
      await sqlClient.query("select app_private.route_lead($1, $2, 'manual')", [gqlOn.tenantId, gqlOn.leads()]);
      sqlTimes.push(performance.now() - t);
    }
    sqlClient.release();

    const strategy = process.env.BENCH_STRATEGY ?? "weighted_round_robin";
    console.log(`\nRouting benchmark: direct assignment, ${strategy}, ${SECONDS} s per run, sequential p50 over ${SEQUENTIAL} calls`);
    console.log("| team | agents | connections | TPC-B-like tps | route_lead tps | ratio | sequential p50 (SQL) | bytes per decision | not assigned |");
    console.log("|---|---|---|---|---|---|---|---|---|");
    for (const r of rows) {
      console.log(
        `| ${r.team} | ${r.agents.toLocaleString()} | ${r.connections} | ${r.baselineTps.toFixed(0)} | ${r.routeTps.toFixed(0)} | ${(r.routeTps / r.baselineTps).toFixed(2)} | ` +
          `${r.p50 === null ? "" : `${r.p50.toFixed(1)} ms`} | ${r.bytesPerDecision.toFixed(0)} | ${r.notAssigned} |`,
      );
    }
    for (const r of rows.filter((r) => r.floorTps !== null)) {
      console.log(
        `\nThe decision's writes alone (${r.team}, ${r.agents} agents, ${r.connections} connections, no candidate read): ${r.floorTps!.toFixed(0)} tps, ` +
          `ratio ${(r.floorTps! / r.baselineTps).toFixed(2)} of TPC-B-like; route_lead reaches ${(r.routeTps / r.floorTps!).toFixed(2)} of it`,
      );
    }
    const g = percentile(gqlTimes, 0.5);
    const sq = percentile(sqlTimes, 0.5);
    console.log(`\nGraphQL routeLead p50 ${g.toFixed(2)} ms / p95 ${percentile(gqlTimes, 0.95).toFixed(2)} ms; SQL route_lead p50 ${sq.toFixed(2)} ms; overhead ${(g / sq).toFixed(2)}x`);
    for (const f of fairness) console.log(`Round-robin fairness (${f.team}, ${f.agents} agents): largest gap between an agent's share and its weight's share ${(f.gap * 100).toFixed(2)} points`);

    // The goals of issue 15, each against figures of this run.
    const at = (team: Team, agents: number, connections = 8) => rows.find((r) => r.team === team && r.agents === agents && r.connections === connections);
    const goals: Array<[string, boolean | null]> = [];
    for (const team of TEAMS) {
      const small = at(team, SIZES[0]!);
      const small32 = at(team, SIZES[0]!, 32);
      const thousand = at(team, 1000);
      const biggest = at(team, 5000);
      goals.push([`${team}: ratio at ${SIZES[0]} agents, 8 connections >= 0.5`, small ? small.routeTps / small.baselineTps >= 0.5 : null]);
      goals.push([`${team}: ratio at ${SIZES[0]} agents, 32 connections >= 0.35`, small32 ? small32.routeTps / small32.baselineTps >= 0.35 : null]);
      goals.push([`${team}: tps at 1,000 agents >= 0.8 x tps at ${SIZES[0]}`, small && thousand ? thousand.routeTps / small.routeTps >= 0.8 : null]);
      goals.push([`${team}: sequential p50 at 5,000 agents <= 2 x p50 at ${SIZES[0]}`, small?.p50 && biggest?.p50 ? biggest.p50 <= 2 * small.p50 : null]);
      goals.push([`${team}: bytes per decision at 5,000 agents < 4,096`, biggest ? biggest.bytesPerDecision < 4096 : null]);
    }
    goals.push(["GraphQL overhead <= 1.5x", g / sq <= 1.5]);
    const totalViolations = violations.reduce((sum, v) => sum + Number(v.n), 0);
    goals.push(["0 invariant violations", totalViolations === 0]);
    console.log("\nGoals (issue 15):");
    for (const [goal, met] of goals) console.log(`  ${met === null ? "not measured" : met ? "met    " : "NOT met"}  ${goal}`);
    console.log("Invariant violations after the runs:");
    for (const v of violations) console.log(`  ${v.check}: ${v.n}`);
    if (totalViolations > 0) process.exitCode = 1;

    await api.close();
    await ownerPool.end();
    await root.end();
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  } finally {
    await bench.close();
  }
}

void main();
