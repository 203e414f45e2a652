/**
 * Nurture benchmark: nurture steps executed per second by graphile-worker with the local providers,
 * against a baseline measured in the same process: the same graphile-worker (same pool, concurrency
 * and options as src/worker/start.ts) running a no-op task. Rounds alternate (baseline, nurture, baseline,
 * nurture, …, baseline) so a noisy machine hits both; each nurture phase is compared with the mean of
 * the baselines just before and after it, and the table shows the median over rounds.
 *
 *   npm run bench:nurture
 *   BENCH_ENROLLMENTS=5000 BENCH_CONCURRENCY=4 BENCH_ROUNDS=3 npm run bench:nurture
 *   BENCH_CHANNELS=sms npm run bench:nurture      (a 1-step SMS sequence; default: an SMS step, then an email step)
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:nurture
 *
 * Each phase starts from a filled queue, a stopped worker and a vacuumed database; the clock runs from
 * starting the worker until the work is done and the queue of its tasks is empty.
 *   baseline: BENCH_ENROLLMENTS × (2 × steps) no-op jobs (as many jobs as the nurture phase runs),
 *             added by one statement (graphile_worker.add_jobs) before the worker starts.
 *   nurture:  BENCH_ENROLLMENTS fresh leads enrolled in a fresh sequence beforehand (app_private.enroll_lead,
 *             not timed), the tenant clock on a Tuesday noon in the leads' time zone so every step is
 *             due at once and inside the legal texting hours; then a worker with nurture__run_step,
 *             sms__send and email__send runs until every enrollment is completed and every text and
 *             email of it is sent. A step end to end = its nurture__run_step job (app_private.run_nurture_step)
 *             + its sms__send or email__send job (claim, local provider, record as sent): two jobs.
 * graphile-worker's one log line per successful job is turned off (NO_LOG_SUCCESS) in both phases:
 * it would measure the terminal, not the queue.
 */
import "../src/env.ts";
import { readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { resolve } from "node:path";
import { performance } from "node:perf_hooks";
import type { Runner } from "graphile-worker";
import pg from "pg";
import { projectRoot } from "../src/config.ts";
import { makePool } from "../src/db/pools.ts";
import { LocalAiResponder } from "../src/providers/aiLocal.ts";
import { LocalEmailProvider } from "../src/providers/emailLocal.ts";
import { LocalNumberProvisioner } from "../src/providers/numbersLocal.ts";
import { LocalSmsProvider } from "../src/providers/smsLocal.ts";
import { setServices } from "../src/worker/services.ts";

// graphile-worker reads NO_LOG_SUCCESS when it is loaded, so it and every module importing it are
// loaded after this line. Its remaining info lines (worker started/stopped) go to stderr with the
// progress, keeping stdout for the results.
process.env.NO_LOG_SUCCESS ??= "1";
console.info = (...args: unknown[]) => console.error(...args);
const { run } = await import("graphile-worker");
const { startWorker } = await import("../src/worker/start.ts");
const { openBenchDatabase } = await import("./database.ts");

const ENROLLMENTS = Number(process.env.BENCH_ENROLLMENTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const CHANNELS = (process.env.BENCH_CHANNELS ?? "sms,email").split(",").map((c) => c.trim());
const TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_SECONDS ?? 600) * 1000;
const NURTURE_TASKS = ["nurture__run_step", "sms__send", "email__send"];
const NOOP_TASK = "bench__noop";
const roles = { owner: "switchboard_nbench_owner", authenticator: "switchboard_nbench_authenticator", visitor: "switchboard_nbench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface Phase {
  seconds: number;
  jobs: number;
}

/**
 * Starts a worker (timer on), counts its successful jobs, and stops the timer when `done` holds: checked
 * as soon as `expectedJobs` jobs have succeeded (then every 5 ms), and every second before that.
 */
async function measure(label: string, start: () => Promise<Runner>, expectedJobs: number, done: () => Promise<boolean>, state: () => Promise<string>): Promise<Phase> {
  let jobs = 0;
  let errors = 0;
  let wake: (() => void) | null = null;
  const t0 = performance.now();
  const runner = await start();
  runner.events.on("job:success", () => {
    jobs++;
    if (jobs >= expectedJobs) wake?.();
  });
  runner.events.on("job:error", ({ job, error }) => {
    if (errors++ < 5) log(`  ${label}: job ${job.task_identifier} failed: ${(error as Error).message}`);
  });
  try {
    for (;;) {
      if (jobs < expectedJobs) {
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 1000);
        });
      }
      wake = null;
      if (await done()) break;
      if (performance.now() - t0 > TIMEOUT_MS) throw new Error(`${label} not done after ${TIMEOUT_MS / 1000} s (${jobs} jobs succeeded, ${errors} failed): ${await state()}`);
      if (jobs >= expectedJobs) await sleep(5);
    }
    return { seconds: (performance.now() - t0) / 1000, jobs };
  } finally {
    await runner.stop();
  }
}

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_nbench", roles, log);
  const root = new pg.Client({ connectionString: bench.rootUrl });
  root.on("error", (error) => log(`root connection: ${error.message}`));
  const ownerPool = makePool(bench.urls.ownerUrl, CONCURRENCY + 4, "owner");
  const emailProvider = new LocalEmailProvider(ownerPool);
  try {
    await root.connect();
    for (const channel of CHANNELS) if (channel !== "sms" && channel !== "email") throw new Error(`BENCH_CHANNELS: unknown channel '${channel}' (sms, email)`);
    // Loaded before any timing, so that the first nurture phase does not pay for loading them.
    for (const name of NURTURE_TASKS) await import(resolve(projectRoot, "tasks", `${name}.ts`));
    setServices({
      sms: new LocalSmsProvider(ownerPool, "unused", -1),
      ai: new LocalAiResponder(),
      numbers: new LocalNumberProvisioner(),
      email: emailProvider,
      emailFrom: { name: "Switchboard", address: "news@mail.example.com" },
      publicUrl: () => "http://127.0.0.1:9",
    });

    log("Setting up: 1 tenant with a texting number, its clock on the coming Tuesday (1 to 8 days ahead), 12:00 in New York…");
    const { rows: user } = await root.query<{ id: string }>("select (app_private.create_user('nbench@example.com', 'nbench-password-1')).id");
    const { rows: tenant } = await root.query<{ id: string }>("select (app_private.create_tenant('Nurture Bench Plumbing', $1)).id", [user[0]!.id]);
    const tenantId = tenant[0]!.id;
    await root.query(
      `insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned, capabilities)
       values ($1, '+17865550100', 'PN' || md5(random()::text), '786', 'active', now(), '{voice,sms}')`,
      [tenantId],
    );
    // Texts are held to the legal hours where the lead lives (8:00-21:00): the steps are due at a weekday noon there, whatever the real hour.
    const { rows: clock } = await root.query<{ local: string }>(
      `select to_char(app_private.advance_clock_to($1, (date_trunc('week', now() at time zone 'America/New_York') + interval '8 days 12 hours') at time zone 'America/New_York')
                      at time zone 'America/New_York', 'Dy YYYY-MM-DD HH24:MI') as local`,
      [tenantId],
    );
    log(`  tenant clock: ${clock[0]!.local} in New York`);
    const steps = CHANNELS.map((channel, i) =>
      channel === "sms"
        ? { channel, template: `Hi {{lead.first_name}}, it is {{tenant.business_name}} (${i + 1})` }
        : { channel, subject: `News for {{lead.first_name}} (${i + 1})`, template: 'Hello {{lead.full_name | default: "friend"}}, from {{tenant.business_name}}' },
    );
    const smsSteps = CHANNELS.filter((c) => c === "sms").length;
    const emailSteps = CHANNELS.length - smsSteps;
    const jobsPerRound = ENROLLMENTS * CHANNELS.length * 2;

    /** Leaves in the queue only the jobs of `keep`: the leads' scoring, routing and segment jobs, the tenant's setup. */
    const clearOtherJobs = (keep: string[]) =>
      root.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs where task_identifier <> all ($1::text[])))", [keep]);
    /** Both phases start from a vacuumed, analyzed database: no autovacuum of the previous phase's dead jobs in the timing. */
    const settle = () => root.query("vacuum (analyze)");
    const queued = async (tasks: string[]) =>
      (await root.query<{ n: number }>("select count(*)::int as n from graphile_worker.jobs where task_identifier = any ($1::text[])", [tasks])).rows[0]!.n;

    /** The baseline: as many no-op jobs as a nurture phase runs, added in one statement, then drained. */
    const runBaseline = async (label: string): Promise<number> => {
      await clearOtherJobs([]);
      const t = performance.now();
      await root.query(
        "select count(*) from graphile_worker.add_jobs(array(select row($1, json_build_object('n', g), null, null, null, null, null, null)::graphile_worker.job_spec from generate_series(1, $2) g))",
        [NOOP_TASK, jobsPerRound],
      );
      log(`${label}: baseline, ${jobsPerRound} no-op jobs (added in ${((performance.now() - t) / 1000).toFixed(2)} s, not timed), concurrency ${CONCURRENCY}…`);
      await settle();
      const b = await measure(
        "baseline",
        // The options of src/worker/start.ts's startWorker, with a task list of one no-op task.
        () => run({ pgPool: ownerPool, concurrency: CONCURRENCY, noHandleSignals: true, pollInterval: 1000, taskList: { [NOOP_TASK]: async () => {} } }),
        jobsPerRound,
        async () => (await queued([NOOP_TASK])) === 0,
        async () => `${await queued([NOOP_TASK])} no-op jobs left`,
      );
      log(`  baseline: ${b.jobs} jobs in ${b.seconds.toFixed(2)} s = ${(b.jobs / b.seconds).toFixed(0)} jobs/s`);
      return b.jobs / b.seconds;
    };

    // baseline, nurture, baseline, nurture, …, baseline: each nurture phase is compared with the
    // mean of the baselines run just before and just after it.
    const baseline: number[] = [];
    const stepRates: number[] = [];
    const jobRates: number[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      baseline.push(await runBaseline(`Round ${round}/${ROUNDS}`));

      // Nurture: fresh leads in a fresh sequence, enrolled before the worker starts.
      const t = performance.now();
      const { rows: seq } = await root.query<{ id: string }>(
        "insert into app_public.nurture_sequences (tenant_id, name, steps) values ($1, $2, $3) returning id",
        [tenantId, `Bench round ${round}`, JSON.stringify(steps)],
      );
      const sequenceId = seq[0]!.id;
      await root.query(
        `insert into app_public.leads (tenant_id, first_name, last_name, phone, email, timezone, region, source)
         select $1, 'Dana', 'Lead ' || g, '+1212' || lpad(($2 * 100000 + g)::text, 7, '0'), 'nbench-' || $2 || '-' || g || '@example.com',
                'America/New_York', 'NY', 'nbench-' || $2
           from generate_series(1, $3) g`,
        [tenantId, round, ENROLLMENTS],
      );
      // Each consented to marketing texts (a nurture text needs it: issue 17).
      await root.query(
        `insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, given_at, evidence_hash)
         select l.tenant_id, l.id, 'sms', l.phone, 'marketing', 'api', 'I agree to receive marketing texts from this business. Reply STOP to stop.', now(), repeat('0', 64)
           from app_public.leads l where l.tenant_id = $1 and l.source = 'nbench-' || $2`,
        [tenantId, round],
      );
      // Enrolled on CONCURRENCY connections at once (app_private.enroll_lead, one lead at a time, as the API does).
      const { rows: leadRows } = await root.query<{ id: string }>("select id from app_public.leads where tenant_id = $1 and source = 'nbench-' || $2", [tenantId, round]);
      const chunks = Array.from({ length: CONCURRENCY }, (_, i) => leadRows.filter((_, j) => j % CONCURRENCY === i).map((r) => r.id));
      const counts = await Promise.all(
        chunks.map(async (ids) =>
          (
            await ownerPool.query<{ n: number }>(
              "select count(*)::int as n from unnest($3::uuid[]) l(id), lateral app_private.enroll_lead($1, $2, l.id, 'manual') e where e.id is not null",
              [tenantId, sequenceId, ids],
            )
          ).rows[0]!.n,
        ),
      );
      const enrolled = counts.reduce((a, b) => a + b, 0);
      await clearOtherJobs(NURTURE_TASKS);
      await settle();
      const due = await queued(NURTURE_TASKS);
      log(
        `Round ${round}/${ROUNDS}: nurture, ${enrolled} enrollments in a ${CHANNELS.join(" + ")} sequence, ${due} step jobs queued ` +
          `(leads and enrollments made in ${((performance.now() - t) / 1000).toFixed(1)} s, not timed), concurrency ${CONCURRENCY}…`,
      );
      if (enrolled !== ENROLLMENTS || due !== ENROLLMENTS) throw new Error(`expected ${ENROLLMENTS} enrollments with a due step job, got ${enrolled} and ${due} jobs`);
      const progress = async () =>
        (
          await ownerPool.query<{ completed: number; texts: number; emails: number; jobs: number }>(
            `select (select count(*)::int from app_public.lead_sequence_enrollments e where e.tenant_id = $1 and e.sequence_id = $2 and e.status = 'completed') as completed,
                    (select count(*)::int from app_public.messages m join app_public.lead_sequence_enrollments e on e.id = m.nurture_enrollment_id
                      where m.tenant_id = $1 and e.sequence_id = $2 and m.status in ('sent', 'delivered')) as texts,
                    (select count(*)::int from app_public.email_messages m join app_public.lead_sequence_enrollments e on e.id = m.nurture_enrollment_id
                      where m.tenant_id = $1 and e.sequence_id = $2 and m.status in ('sent', 'delivered')) as emails,
                    (select count(*)::int from graphile_worker.jobs where task_identifier = any ($3::text[])) as jobs`,
            [tenantId, sequenceId, NURTURE_TASKS],
          )
        ).rows[0]!;
      const n = await measure(
        "nurture",
        () => startWorker(ownerPool, CONCURRENCY, { only: NURTURE_TASKS }),
        jobsPerRound,
        async () => {
          const p = await progress();
          return p.completed === ENROLLMENTS && p.texts === ENROLLMENTS * smsSteps && p.emails === ENROLLMENTS * emailSteps && p.jobs === 0;
        },
        async () => JSON.stringify(await progress()),
      );
      const { rows: outcomes } = await root.query<{ outcome: string; n: number }>(
        "select outcome, count(*)::int as n from app_public.nurture_step_runs where tenant_id = $1 and sequence_id = $2 group by 1 order by 1",
        [tenantId, sequenceId],
      );
      const stepsRun = ENROLLMENTS * CHANNELS.length;
      stepRates.push(stepsRun / n.seconds);
      jobRates.push(n.jobs / n.seconds);
      log(
        `  nurture: ${stepsRun} steps (${outcomes.map((o) => `${o.n} ${o.outcome}`).join(", ")}), ${n.jobs} jobs in ${n.seconds.toFixed(2)} s = ` +
          `${(stepsRun / n.seconds).toFixed(0)} steps/s, ${(n.jobs / n.seconds).toFixed(0)} jobs/s`,
      );
    }
    baseline.push(await runBaseline("Closing"));
    const around = (round: number) => (baseline[round]! + baseline[round + 1]!) / 2;
    const stepRatios = stepRates.map((x, i) => x / around(i));
    const jobRatios = jobRates.map((x, i) => x / around(i));
    stepRatios.forEach((r, i) => log(`Round ${i + 1}: nurture ÷ mean of the baselines around it = ${r.toFixed(3)} (steps), ${jobRatios[i]!.toFixed(3)} (jobs)`));

    const { rows: server } = await root.query<{ version: string }>("select current_setting('server_version') as version");
    const workerVersion = (JSON.parse(readFileSync(resolve(projectRoot, "node_modules/graphile-worker/package.json"), "utf8")) as { version: string }).version;
    const base = median(baseline);
    console.log(
      `\nNurture benchmark — ${ENROLLMENTS} enrollments per round in a ${CHANNELS.length}-step sequence (${CHANNELS.join(" then ")}, no delays), ` +
        `local providers, worker concurrency ${CONCURRENCY}, ${ROUNDS} rounds. Rates are medians; ratio is the median over rounds of ` +
        `nurture ÷ the mean of the baselines run just before and after it.`,
    );
    console.log(`\n| measure | baseline no-op jobs/s | nurture | ratio |\n|---|---|---|---|`);
    console.log(`| nurture steps per second (run_nurture_step + provider send, 2 jobs per step) | ${base.toFixed(0)} | ${median(stepRates).toFixed(0)} | ${median(stepRatios).toFixed(3)} |`);
    console.log(`| jobs per second (nurture__run_step, sms__send, email__send) | ${base.toFixed(0)} | ${median(jobRates).toFixed(0)} | ${median(jobRatios).toFixed(3)} |`);
    console.log(
      `\nMachine: ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; PostgreSQL ${server[0]!.version} ` +
        `(${process.env.BENCH_DATABASE_URL ? "BENCH_DATABASE_URL" : "embedded, same machine"}); Node ${process.version}; graphile-worker ${workerVersion}.`,
    );
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  } finally {
    setServices(null);
    await emailProvider.close();
    await ownerPool.end();
    await root.end().catch(() => {});
    await bench.close();
  }
}

await main();
