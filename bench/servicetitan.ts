/**
 * ServiceTitan sync benchmark: a full sync of BENCH_JOBS jobs (default 100,000) from the fake
 * ServiceTitan on loopback into raw.st_jobs, in records per second, against a baseline measured in
 * the same process and database: the same JSON pages bulk-inserted into a bare table. Runs alternate
 * (baseline, sync, baseline, sync, …) so a noisy machine hits both; the table shows each run, the
 * best and the median. One untimed baseline run comes first (BENCH_WARMUP=0: none): a fresh server's
 * first hundred megabytes of writes also create its WAL files, which would otherwise be charged to
 * whichever run comes first.
 *
 *   npm run bench:servicetitan
 *   BENCH_JOBS=10000 BENCH_ROUNDS=3 npm run bench:servicetitan
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:servicetitan
 *
 *   baseline: the job pages, fetched once from the fake beforehand (not timed) and kept in memory,
 *             each sent as one statement: JSON.stringify of the page, then
 *             insert into bench_jobs_baseline (tenant_id, id, full_data) select $1, (r->>'id')::bigint, r
 *               from jsonb_array_elements($2::jsonb) r
 *             into a plain table with a primary key (tenant_id, id), emptied before each run (not
 *             timed): the least it costs to get the same pages into PostgreSQL, JSON transfer and
 *             parsing included.
 *   sync:     what tasks/servicetitan__sync.ts does, timed end to end: app_private.st_begin_sync, then
 *             per page ServiceTitanClient.exportPage over HTTP (rate limit slots in PostgreSQL, as
 *             the worker keeps them; JSON parsing) and
 *             select app_private.st_apply_page($1, $2::jsonb, $3, $4) with JSON.stringify of the page,
 *             until hasMore is false. The first sync fills an empty cache (inserts); later ones are
 *             full syncs over a filled cache after BENCH_CHANGED_PERCENT (default 5) percent of the
 *             jobs were changed at the fake (not timed): those rows are rewritten, the others only
 *             compared and remembered as seen. One client is reused throughout, as
 *             the worker's clientForTenant does, so the token is already cached.
 * Both run as the database owner (the worker's role), one autocommit statement per page, on one
 * connection. Before each run: vacuum (analyze) and a checkpoint, not timed. "st_apply_page alone"
 * is the time of the st_apply_page statements with their JSON.stringify: the same work the baseline
 * times, on the same pages, so its ratio is the cost of the typed upsert, the indexes and sync_state.
 */
import "../src/env.ts";
import { cpus, totalmem } from "node:os";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { ServiceTitanClient } from "../src/providers/serviceTitan.ts";
import { pgRequestLimiters } from "../src/providers/serviceTitanPgLimiter.ts";
import { startFakeServiceTitan } from "../test/fakeServiceTitan.ts";
import { openBenchDatabase } from "./database.ts";

const JOBS = Number(process.env.BENCH_JOBS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const PAGE_SIZE = Number(process.env.BENCH_PAGE_SIZE ?? 5000);
const WARMUP = process.env.BENCH_WARMUP !== "0";
/** Percent of the jobs changed at the fake before each re-sync (a night's worth of edits); default 5. */
const CHANGED_PERCENT = Number(process.env.BENCH_CHANGED_PERCENT ?? 5);
const roles = { owner: "switchboard_stbench_owner", authenticator: "switchboard_stbench_authenticator", visitor: "switchboard_stbench_visitor" };
const credentials = { clientId: "bench-client", clientSecret: "bench-secret", appKey: "bench-app-key", tenantId: "987654" };
const log = (line: string) => process.stderr.write(`${line}\n`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });

interface SyncRun {
  /** st_begin_sync to the last st_apply_page, HTTP included. */
  seconds: number;
  /** In ServiceTitanClient.exportPage (HTTP, JSON parsing, rate limiter). */
  fetchSeconds: number;
  /** In st_apply_page statements, with their JSON.stringify. */
  applySeconds: number;
  records: number;
  pages: number;
}

async function main(): Promise<void> {
  if (!Number.isInteger(JOBS) || JOBS < 1) throw new Error(`BENCH_JOBS must be a whole number of at least 1 (got ${process.env.BENCH_JOBS})`);
  if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`BENCH_ROUNDS must be a whole number of at least 1 (got ${process.env.BENCH_ROUNDS})`);
  const bench = await openBenchDatabase("switchboard_stbench", roles, log);
  const root = new pg.Client({ connectionString: bench.rootUrl });
  const owner = new pg.Client({ connectionString: bench.urls.ownerUrl });
  const limiterPool = new pg.Pool({ connectionString: bench.urls.ownerUrl, max: 2 });
  limiterPool.on("error", (error) => log(`limiter pool: ${error.message}`));
  root.on("error", (error) => log(`root connection: ${error.message}`));
  owner.on("error", (error) => log(`owner connection: ${error.message}`));
  let fake: Awaited<ReturnType<typeof startFakeServiceTitan>> | null = null;
  let client: ServiceTitanClient | null = null;
  try {
    await root.connect();
    await owner.connect();

    let t = performance.now();
    fake = await startFakeServiceTitan({
      ...credentials,
      counts: { jobs: JOBS, locations: 0, appointments: 0, technicians: 0, "appointment-assignments": 0 },
      exportPageSize: PAGE_SIZE,
    });
    log(`Fake ServiceTitan on ${fake.apiUrl} with ${fmt(JOBS)} jobs, export pages of ${PAGE_SIZE} (generated in ${((performance.now() - t) / 1000).toFixed(2)} s)`);
    // As the worker does: the rate limit's slots are kept in PostgreSQL (two statements per request).
    client = new ServiceTitanClient(
      { ...credentials, environment: "integration", authBaseUrl: fake.authUrl, apiBaseUrl: fake.apiUrl },
      { limiter: pgRequestLimiters(limiterPool) },
    );

    const { rows: user } = await root.query<{ id: string }>("select (app_private.create_user('stbench@example.com', 'stbench-password-1')).id");
    const { rows: tenant } = await root.query<{ id: string }>("select (app_private.create_tenant('ServiceTitan Bench HVAC', $1)).id", [user[0]!.id]);
    const tenantId = tenant[0]!.id;
    await owner.query("create table bench_jobs_baseline (tenant_id uuid not null, id bigint not null, full_data jsonb not null, primary key (tenant_id, id))");

    // The baseline's pages: the same export, fetched once and kept in memory.
    t = performance.now();
    const pages: unknown[][] = [];
    let cursor: string | null = null;
    for (;;) {
      const page = await client.exportPage("jobs", cursor, { includeRecentChanges: true });
      pages.push(page.data);
      cursor = page.continueFrom;
      if (!page.hasMore) break;
    }
    const fetched = pages.reduce((n, p) => n + p.length, 0);
    const bytes = pages.reduce((n, p) => n + Buffer.byteLength(JSON.stringify(p)), 0);
    log(`Fetched ${fmt(fetched)} jobs in ${pages.length} pages (${(bytes / 2 ** 20).toFixed(1)} MiB of JSON) in ${((performance.now() - t) / 1000).toFixed(2)} s, not timed`);
    if (fetched !== JOBS) throw new Error(`the fake's export returned ${fetched} jobs, expected ${JOBS}`);

    /** Every run starts from a vacuumed, analyzed, checkpointed database. */
    const settle = async () => {
      await root.query("vacuum (analyze) raw.st_jobs, raw.sync_state, bench_jobs_baseline");
      await root.query("checkpoint");
    };

    const runBaseline = async (label: string): Promise<number> => {
      await owner.query("truncate bench_jobs_baseline");
      await settle();
      log(`${label}: baseline, ${fmt(JOBS)} jobs in ${pages.length} batched inserts…`);
      const start = performance.now();
      for (const page of pages) {
        await owner.query(
          "insert into bench_jobs_baseline (tenant_id, id, full_data) select $1, (r->>'id')::bigint, r from jsonb_array_elements($2::jsonb) r",
          [tenantId, JSON.stringify(page)],
        );
      }
      const seconds = (performance.now() - start) / 1000;
      log(`  baseline: ${fmt(JOBS)} rows in ${seconds.toFixed(2)} s = ${fmt(JOBS / seconds)} records/s`);
      return JOBS / seconds;
    };

    const runSync = async (label: string): Promise<SyncRun> => {
      const { rows: before } = await root.query<{ n: number }>("select count(*)::int as n from raw.st_jobs where tenant_id = $1", [tenantId]);
      await settle();
      log(`${label}: full sync over HTTP, cache holding ${fmt(before[0]!.n)} jobs (${before[0]!.n === 0 ? "inserts" : "changed records rewritten, the rest compared"})…`);
      let fetchSeconds = 0;
      let applySeconds = 0;
      let records = 0;
      let pageCount = 0;
      const start = performance.now();
      const { rows } = await owner.query<{ run_id: string; from_cursor: string | null; resumed: boolean }>(
        "select * from app_private.st_begin_sync($1, 'st_jobs', 'full')",
        [tenantId],
      );
      const run = rows[0]!;
      if (run.resumed) throw new Error("st_begin_sync resumed an interrupted run; expected a new full run");
      let from = run.from_cursor;
      for (;;) {
        let s = performance.now();
        const page = await client!.exportPage("jobs", from, { includeRecentChanges: true });
        fetchSeconds += (performance.now() - s) / 1000;
        if (page.hasMore && !page.continueFrom) throw new Error("the export said hasMore without a continueFrom token");
        s = performance.now();
        await owner.query("select app_private.st_apply_page($1, $2::jsonb, $3, $4)", [run.run_id, JSON.stringify(page.data), page.continueFrom, page.hasMore]);
        applySeconds += (performance.now() - s) / 1000;
        records += page.data.length;
        pageCount += 1;
        from = page.continueFrom ?? from;
        if (!page.hasMore) break;
      }
      const seconds = (performance.now() - start) / 1000;
      log(
        `  sync: ${fmt(records)} records in ${pageCount} pages in ${seconds.toFixed(2)} s = ${fmt(records / seconds)} records/s ` +
          `(HTTP ${fetchSeconds.toFixed(2)} s, st_apply_page ${applySeconds.toFixed(2)} s = ${fmt(records / applySeconds)} records/s)`,
      );
      return { seconds, fetchSeconds, applySeconds, records, pages: pageCount };
    };

    if (WARMUP) await runBaseline("Warm-up (not counted)");
    const baseline: number[] = [];
    const syncs: SyncRun[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      baseline.push(await runBaseline(`Round ${round}/${ROUNDS}`));
      if (round > 1) {
        // A night's edits: every (100 / CHANGED_PERCENT)-th job gets a new status and modifiedOn.
        const every = CHANGED_PERCENT > 0 ? Math.max(1, Math.round(100 / CHANGED_PERCENT)) : 0;
        const jobs = every > 0 ? fake!.records("jobs").filter((_, i) => (i + round) % every === 0) : [];
        for (const job of jobs) fake!.modify("jobs", job.id, { jobStatus: round % 2 === 0 ? "Completed" : "InProgress" });
        log(`  changed ${fmt(jobs.length)} jobs at the fake (${CHANGED_PERCENT}%), not timed`);
      }
      syncs.push(await runSync(`Round ${round}/${ROUNDS}`));
    }

    // The cache and its sync state after the last run.
    const { rows: check } = await root.query<{ total: number; deleted: number; records_synced: string | null; last_full_sync: Date | null; run_id: string | null; baseline: number }>(
      `select (select count(*)::int from raw.st_jobs where tenant_id = $1) as total,
              (select count(*)::int from raw.st_jobs where tenant_id = $1 and deleted_at is not null) as deleted,
              s.records_synced, s.last_full_sync, s.run_id,
              (select count(*)::int from bench_jobs_baseline where tenant_id = $1) as baseline
         from raw.sync_state s where s.tenant_id = $1 and s.table_name = 'st_jobs'`,
      [tenantId],
    );
    const state = check[0];
    const problems: string[] = [];
    if (!state) problems.push("raw.sync_state has no st_jobs row for the tenant");
    else {
      if (state.total !== JOBS) problems.push(`raw.st_jobs holds ${state.total} jobs of the tenant, expected ${JOBS}`);
      if (state.deleted !== 0) problems.push(`${state.deleted} jobs are marked deleted`);
      if (Number(state.records_synced) !== JOBS) problems.push(`sync_state.records_synced = ${state.records_synced}, expected ${JOBS}`);
      if (state.last_full_sync === null) problems.push("sync_state.last_full_sync is not set");
      if (state.run_id !== null) problems.push("sync_state still holds a run");
      if (state.baseline !== JOBS) problems.push(`bench_jobs_baseline holds ${state.baseline} rows, expected ${JOBS}`);
    }
    if (problems.length > 0) throw new Error(`Verification failed: ${problems.join("; ")}`);
    log(`Verified: raw.st_jobs holds ${fmt(state!.total)} jobs of the tenant, none deleted; sync_state records_synced = ${state!.records_synced}, last_full_sync ${state!.last_full_sync!.toISOString()}`);

    const syncRates = syncs.map((s) => s.records / s.seconds);
    const applyRates = syncs.map((s) => s.records / s.applySeconds);
    const fetchRates = syncs.map((s) => s.records / s.fetchSeconds);
    const best = (xs: number[]) => Math.max(...xs);
    const runHeads = syncs.map((_, i) => `run ${i + 1}${i === 0 ? " (empty cache: inserts)" : ` (filled cache, ${CHANGED_PERCENT}% changed)`}`);
    const row = (label: string, xs: number[]) => `| ${label} | ${xs.map((x) => fmt(x)).join(" | ")} | ${fmt(best(xs))} | ${fmt(median(xs))} |`;
    /** Per round: the rate ÷ that round's baseline; best ÷ best baseline; median ÷ median baseline. */
    const ratioRow = (label: string, xs: number[]) =>
      `| ${label} | ${xs.map((x, i) => fmt(x / baseline[i]!, 3)).join(" | ")} | ${fmt(best(xs) / best(baseline), 3)} | ${fmt(median(xs) / median(baseline), 3)} |`;

    const { rows: server } = await root.query<{ version: string }>("select current_setting('server_version') as version");
    console.log(
      `\nServiceTitan sync benchmark — a full sync of ${fmt(JOBS)} jobs (${syncs[0]!.pages} export pages of ${PAGE_SIZE}, ${(bytes / 2 ** 20).toFixed(1)} MiB of JSON) ` +
        `from the fake ServiceTitan on loopback into raw.st_jobs, against the same pages bulk-inserted into a bare table (baseline), ` +
        `${ROUNDS} rounds alternating baseline and sync${WARMUP ? " after one untimed warm-up baseline" : ""}. A ratio is records/s ÷ baseline records/s: ` +
        `per round against that round's baseline, then best ÷ best and median ÷ median.`,
    );
    console.log(`\n| records per second | ${runHeads.join(" | ")} | best | median |\n|---|${runHeads.map(() => "---|").join("")}---|---|`);
    console.log(row("baseline: batched insert of the JSON pages", baseline));
    console.log(row("sync end to end (st_begin_sync, HTTP export pages, st_apply_page)", syncRates));
    console.log(row("st_apply_page alone (with JSON.stringify)", applyRates));
    console.log(row("HTTP export pages alone (ServiceTitanClient.exportPage)", fetchRates));
    console.log(ratioRow("ratio sync ÷ baseline", syncRates));
    console.log(ratioRow("ratio st_apply_page ÷ baseline", applyRates));
    console.log(
      `\nSeconds per sync run: ${syncs.map((s, i) => `run ${i + 1} ${s.seconds.toFixed(2)} s (HTTP ${s.fetchSeconds.toFixed(2)}, st_apply_page ${s.applySeconds.toFixed(2)}, other ${(s.seconds - s.fetchSeconds - s.applySeconds).toFixed(2)})`).join("; ")}.`,
    );
    console.log(
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; PostgreSQL ${server[0]!.version} ` +
        `(${process.env.BENCH_DATABASE_URL ? "BENCH_DATABASE_URL" : "embedded, same machine"}); Node ${process.version}.`,
    );
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  } finally {
    client?.close();
    await fake?.close();
    await owner.end().catch(() => {});
    await limiterPool.end().catch(() => {});
    await root.end().catch(() => {});
    await bench.close();
  }
}

await main();
