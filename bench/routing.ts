/**
 * Routing benchmark: route_lead throughput at 8 and 32 connections against a TPC-B-like baseline
 * (pgbench's default transaction: update an account, read its balance, update a teller and a branch,
 * insert a history row) run by the same script, on the same server, with the same connection counts.
 * The embedded PostgreSQL ships no pgbench binary, so the baseline is pgbench's transaction run as an
 * equivalent raw-SQL loop. Afterwards the routing invariants are counted (must be 0). Also measures
 * routeLead through GraphQL against route_lead through SQL, sequentially, as an overhead ratio.
 *
 *   npm run bench:routing
 *   BENCH_SECONDS=10 BENCH_AGENTS=20 npm run bench:routing
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:routing
 *   BENCH_STRATEGY=least_loaded npm run bench:routing   (the tenant's default strategy; weighted round robin otherwise)
 */
import "../src/env.ts";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { openBenchDatabase } from "./database.ts";
import { startBenchApi } from "./api.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const AGENTS = Number(process.env.BENCH_AGENTS ?? 10);
const LEADS = Number(process.env.BENCH_ROUTING_LEADS ?? 60_000);
const GRAPHQL_CALLS = Number(process.env.BENCH_GRAPHQL_CALLS ?? 200);
const CONNECTIONS = (process.env.BENCH_CONNECTIONS ?? "8,32").split(",").map(Number);
const roles = { owner: "switchboard_rbench_owner", authenticator: "switchboard_rbench_authenticator", visitor: "switchboard_rbench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);

interface Run {
  transactions: number;
  seconds: number;
  latencies: number[];
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

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_rbench", roles, log);
  const { urls } = bench;
  try {
    const root = new pg.Client({ connectionString: bench.rootUrl });
    root.on("error", (error) => log(`root connection: ${error.message}`));
    await root.connect();

    log(`Setting up: 1 tenant, ${AGENTS} available agents, ${LEADS.toLocaleString()} unrouted leads, TPC-B-like tables…`);
    const { rows: userRows } = await root.query<{ id: string }>("select (app_private.create_user('rbench@example.com', 'rbench-password-1')).id");
    const { rows: tenantRows } = await root.query<{ id: string }>(
      "select (app_private.create_tenant('Routing Bench Co', $1)).id",
      [userRows[0]!.id],
    );
    const tenantId = tenantRows[0]!.id;
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
    await root.query(
      `with a as (insert into app_public.agents (tenant_id, display_name, routing_weight)
                  select $1, 'Agent ' || i, 1 + i % 3 from generate_series(1, $2) i returning id)
       insert into app_public.agent_availability (tenant_id, agent_id, status, max_capacity) select $1, id, 'available', 100000 from a`,
      [tenantId, AGENTS],
    );
    await root.query("set session_replication_role = replica");
    await root.query(
      `insert into app_public.leads (tenant_id, first_name, phone, source, timezone)
       select $1, 'Lead ' || g, '+1' || (3000000000 + g)::text, 'bench', 'America/New_York' from generate_series(1, $2) g`,
      [tenantId, LEADS],
    );
    await root.query("set session_replication_role = origin");
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
      reset role;
      analyze;`);
    const { rows: leadRows } = await root.query<{ id: string }>("select id from app_public.leads where tenant_id = $1 order by id", [tenantId]);
    const leadIds = leadRows.map((r) => r.id);
    let nextLead = 0;
    const takeLead = () => {
      const id = leadIds[nextLead++];
      if (!id) throw new Error(`ran out of leads (${leadIds.length}); raise BENCH_ROUTING_LEADS`);
      return id;
    };

    const ownerPool = new pg.Pool({ connectionString: urls.ownerUrl, max: 40 });
    ownerPool.on("error", (error) => log(`owner pool: ${error.message}`));
    const results: string[] = [];
    const firstHistory = (await root.query<{ id: string | null }>("select max(id)::text as id from app_public.lead_routing_history")).rows[0]!.id ?? "0";
    for (const connections of CONNECTIONS) {
      log(`TPC-B-like baseline, ${connections} connections, ${SECONDS} s…`);
      const baseline = await drive(ownerPool, connections, async (client) => {
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
      });
      log(`route_lead, ${connections} connections, ${SECONDS} s…`);
      const before = (await root.query<{ id: string | null }>("select max(id)::text as id from app_public.lead_routing_history")).rows[0]!.id ?? "0";
      const routing = await drive(ownerPool, connections, async (client) => {
        await client.query("select app_private.route_lead($1, $2, 'manual')", [tenantId, takeLead()]);
      });
      // Outcomes are read afterwards (the history row a call inserts is not visible to that call's own statement).
      const { rows: outcomeRows } = await root.query<{ outcome: string; reason: string | null; n: string }>(
        "select outcome, reason, count(*) as n from app_public.lead_routing_history where id > $1::bigint group by 1, 2 order by 3 desc",
        [before],
      );
      const notAssigned = outcomeRows.filter((r) => r.outcome !== "assigned").reduce((sum, r) => sum + Number(r.n), 0);
      for (const r of outcomeRows.filter((r) => r.outcome !== "assigned").slice(0, 3)) log(`  not assigned (${r.n}): ${r.outcome}: ${r.reason ?? ""}`);
      const tpsBase = baseline.transactions / baseline.seconds;
      const tpsRoute = routing.transactions / routing.seconds;
      results.push(
        `${String(connections).padStart(2)} connections   TPC-B-like ${tpsBase.toFixed(0).padStart(6)} tps (p50 ${percentile(baseline.latencies, 0.5).toFixed(2)} / p95 ${percentile(baseline.latencies, 0.95).toFixed(2)} ms)` +
          `   route_lead ${tpsRoute.toFixed(0).padStart(6)} tps (p50 ${percentile(routing.latencies, 0.5).toFixed(2)} / p95 ${percentile(routing.latencies, 0.95).toFixed(2)} ms)` +
          `   ratio ${(tpsRoute / tpsBase).toFixed(2)}   not assigned: ${notAssigned}`,
      );
    }

    // Round-robin fairness under concurrency: each agent's share of the leads assigned in the
    // parallel runs against its share of the weights.
    const { rows: shareRows } = await root.query<{ name: string; weight: number; share: number; expected: number }>(
      `with picks as (select chosen_agent_id as agent_id, count(*) as n from app_public.lead_routing_history
                       where id > $1::bigint and outcome = 'assigned' group by 1)
       select a.display_name as name, a.routing_weight as weight,
              coalesce(p.n, 0)::float / sum(coalesce(p.n, 0)) over () as share,
              a.routing_weight::float / sum(a.routing_weight) over () as expected
         from app_public.agents a left join picks p on p.agent_id = a.id where a.tenant_id = $2`,
      [firstHistory, tenantId],
    );
    const worstShare = shareRows.reduce((worst, r) => Math.max(worst, Math.abs(r.share - r.expected)), 0);

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
       select 'lead assigned twice', count(*) from (select lead_id from app_public.lead_routing_history where outcome = 'assigned' group by lead_id having count(*) > 1) x`,
    );

    log(`GraphQL routeLead vs SQL route_lead, sequential, ${GRAPHQL_CALLS} calls each…`);
    await root.query("select app_private.add_member($1, $2, 'manager')", [tenantId, userRows[0]!.id]).catch(() => {});
    const api = await startBenchApi(urls, roles, ownerPool);
    const gql = api.gql;
    const token = await api.login("rbench@example.com", "rbench-password-1");
    const sqlClient = await ownerPool.connect();
    const gqlTimes: number[] = [];
    const sqlTimes: number[] = [];
    for (let i = 0; i < GRAPHQL_CALLS; i++) {
      let t = performance.now();
      await gql(`mutation ($id: UUID!) { routeLead(input: { leadId: $id }) { result { outcome } } }`, { id: takeLead() }, token);
      gqlTimes.push(performance.now() - t);
      t = performance.now();
      await sqlClient.query("select app_private.route_lead($1, $2, 'manual')", [tenantId, takeLead()]);
      sqlTimes.push(performance.now() - t);
    }
    sqlClient.release();

    console.log(`\nRouting benchmark — ${AGENTS} agents, direct assignment, ${process.env.BENCH_STRATEGY ?? "weighted_round_robin"}, ${SECONDS} s per run`);
    for (const line of results) console.log(line);
    if (process.env.BENCH_STRATEGY === undefined || process.env.BENCH_STRATEGY === "weighted_round_robin") {
      console.log(`Round-robin fairness in the parallel runs: largest gap between an agent's share and its weight's share ${(worstShare * 100).toFixed(2)} percentage points`);
    }
    console.log("Invariant violations after the runs:");
    for (const v of violations) console.log(`  ${v.check}: ${v.n}`);
    const g = percentile(gqlTimes, 0.5);
    const s = percentile(sqlTimes, 0.5);
    console.log(`GraphQL routeLead p50 ${g.toFixed(2)} ms / p95 ${percentile(gqlTimes, 0.95).toFixed(2)} ms; SQL route_lead p50 ${s.toFixed(2)} ms / p95 ${percentile(sqlTimes, 0.95).toFixed(2)} ms; overhead ratio ${(g / s).toFixed(2)}x`);
    const totalViolations = violations.reduce((sum, v) => sum + Number(v.n), 0);
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
