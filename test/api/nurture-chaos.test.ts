/**
 * Chaos test of nurture sequences (the issue's words): 5,000 enrollments, two worker processes, one
 * killed with SIGKILL and restarted midway — every due step sent once, none twice, none to opted-out
 * leads. The workers are child processes (test/fixtures/nurtureWorker.ts) with the local SMS provider
 * and the local email catcher, so what left is read back from app_private.local_provider_messages and
 * app_private.local_provider_emails and held against the outboxes. A second test leaves texts and
 * emails in the states a crash or a quick opt-out leaves them in, on purpose, and checks none of them
 * reaches a lead who opted out.
 *
 * It runs in a database of its own, created and migrated here and dropped at the end: the worker
 * processes take every job of their tasks from the queue they poll, and in the shared test database
 * they would take the sms__send and email__send jobs of other test files running at the same time
 * (and those files' workers would take ours).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot, withDatabase } from "../../src/config.ts";
import { dropDatabase, runAfterReset } from "../../src/db/bootstrap.ts";
import { migrateDatabase } from "../../src/db/migrate.ts";
import { db, registerUser, waitFor } from "../helpers.ts";

const LEADS = 5_000;
const KILL_AFTER_SENT = 1_500;
const OPT_OUTS = 50;
/** A weekday noon in New York on the tenant clock: every text is inside the legal hours whenever the test runs. */
const NOON = "2031-03-04 12:00 America/New_York";
const PUBLIC_URL = "http://127.0.0.1:9";
const TASKS = ["nurture__run_step", "sms__send", "sms__reconcile", "email__send", "email__reconcile"];

const databaseName = `switchboard_chaos_${randomBytes(4).toString("hex")}`;
const ownerUrl = withDatabase(db.ownerUrl, databaseName);
let root: pg.Pool;
/** Set when the test ends early: the enrolling loop stops at its next batch. */
let stopEnrolling = false;
let enrolling: Promise<number> | null = null;

interface WorkerProcess {
  child: ChildProcess;
  exited: Promise<unknown>;
}

const children = new Set<ChildProcess>();
/** Message-IDs a worker handed to the catcher although the catcher already had them (see the fixture). */
const repeatedEmails: string[] = [];
/** What graphile-worker said about failed jobs (a deadlock, an error in SQL). */
const failedJobs: string[] = [];

async function startWorkerProcess(): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [resolve(projectRoot, "test/fixtures/nurtureWorker.ts")], {
    env: { ...process.env, OWNER_URL: ownerUrl, PUBLIC_URL, CONCURRENCY: "8" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const exited = new Promise((r) => child.once("exit", r)).then(() => children.delete(child));
  createInterface({ input: child.stderr! }).on("line", (line) => {
    if (/Failed task|deadlock/i.test(line)) failedJobs.push(line);
    if (!line.includes("doesn't have all of the error handlers")) process.stderr.write(`[nurtureWorker ${child.pid}] ${line}\n`);
  });
  await new Promise<void>((resolveReady, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line === "ready") resolveReady();
      const repeat = /^repeat (.+)$/.exec(line);
      if (repeat) repeatedEmails.push(repeat[1]!);
    });
    child.once("exit", (code, signal) => reject(new Error(`the worker process exited (${code ?? signal}) before it was ready`)));
  });
  return { child, exited };
}

async function kill(worker: WorkerProcess): Promise<void> {
  worker.child.kill("SIGKILL");
  await worker.exited;
}

const serverNow = async (): Promise<Date> => (await root.query("select clock_timestamp() as t")).rows[0].t;

interface Tenant {
  tenant: string;
  business: string;
  sequence: string;
}

/** A tenant with a texting number, its clock at a weekday noon, and a sequence: a text, then an email right after. */
async function tenantWithSequence(): Promise<Tenant> {
  const client = await root.connect();
  try {
    const owner = await registerUser(client, { businessName: "Chaos Plumbing" });
    const tenant = owner.tenant_id!;
    const business = `+1786${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`;
    await client.query(
      `insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned, capabilities)
       values ($1, $2, 'PN' || md5(random()::text), '786', 'active', now(), '{voice,sms}')`,
      [tenant, business],
    );
    await client.query("select app_private.advance_clock_to($1, $2)", [tenant, NOON]);
    const steps = [
      { channel: "sms", template: "Hi {{lead.first_name}}, spring tune-ups at {{tenant.business_name}} this week. Reply to book." },
      { channel: "email", subject: "Your spring tune-up, {{lead.first_name}}", template: "Hi {{lead.first_name}}, a slot is waiting for you." },
    ];
    const { rows } = await client.query("insert into app_public.nurture_sequences (tenant_id, name, steps) values ($1, 'Spring tune-up', $2::jsonb) returning id", [
      tenant,
      JSON.stringify(steps),
    ]);
    return { tenant, business, sequence: rows[0].id };
  } finally {
    client.release();
  }
}

interface Lead {
  id: string;
  phone: string;
  email: string;
}

// Phone numbers are handed out in consecutive blocks, so two calls in this file never give two leads
// the same number: the provider's tables hold the texts of every test of the file, and a number
// shared with an earlier test's lead would count that test's text as reaching this one.
let nextPhoneBlock = 2_000_000 + Math.floor(Math.random() * 1_000_000);

/**
 * n leads in New York with unique phones and emails, in one statement. Inserting leads enqueues jobs
 * for tasks no process runs here (scoring, routing, segment counts): every job fetch of the workers
 * would step over them, so they are removed.
 */
async function newLeads(t: Tenant, n: number): Promise<Lead[]> {
  const base = nextPhoneBlock;
  nextPhoneBlock += n;
  const { rows } = await root.query<Lead>(
    `insert into app_public.leads (tenant_id, first_name, phone, email, timezone, region, source)
     select $1, 'Lead' || i, '+1212' || lpad((($2::int + i) % 10000000)::text, 7, '0'), $3 || '-' || i || '@example.test', 'America/New_York', 'NY', 'web'
       from generate_series(1, $4::int) i
     returning id, phone, email::text`,
    [t.tenant, base, `lead-${randomBytes(3).toString("hex")}`, n],
  );
  // Each consented to marketing texts (a nurture text needs it).
  await root.query(
    `insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, given_at, evidence_hash)
     select $1, l.id, 'sms', l.phone, 'marketing', 'api', 'I agree to receive marketing texts from this business. Reply STOP to stop.', now(), repeat('0', 64)
       from unnest($2::uuid[], $3::text[]) l(id, phone)`,
    [t.tenant, rows.map((r) => r.id), rows.map((r) => r.phone)],
  );
  await root.query(
    `delete from graphile_worker._private_jobs j using graphile_worker._private_tasks k
      where k.id = j.task_id and k.identifier <> all ($1::text[])`,
    [TASKS],
  );
  return rows;
}

/** Enrolls the leads in the sequence, 100 to a transaction, on two connections at once; returns how many were enrolled. */
async function enroll(t: Tenant, leads: Lead[]): Promise<number> {
  const batches: string[][] = [];
  for (let i = 0; i < leads.length; i += 100) batches.push(leads.slice(i, i + 100).map((l) => l.id));
  let enrolled = 0;
  const lane = async () => {
    for (let batch = batches.shift(); batch && !stopEnrolling; batch = batches.shift()) {
      const { rows } = await root.query<{ n: number }>(
        "select count(app_private.enroll_lead($1, $2, lead_id, 'manual'))::int as n from unnest($3::uuid[]) lead_id",
        [t.tenant, t.sequence, batch],
      );
      enrolled += rows[0]!.n;
    }
  };
  await Promise.all([lane(), lane()]);
  return enrolled;
}

/** Counts of enrollments, texts and emails of the tenant by status: {"enrollment active": 12, "text sent": 40, ...}. */
async function states(tenant: string): Promise<Record<string, number>> {
  const { rows } = await root.query<{ what: string; n: number }>(
    `select 'enrollment ' || status as what, count(*)::int as n from app_public.lead_sequence_enrollments where tenant_id = $1 group by status
     union all select 'text ' || status, count(*)::int from app_public.messages where tenant_id = $1 group by status
     union all select 'email ' || status, count(*)::int from app_public.email_messages where tenant_id = $1 group by status
     order by 1`,
    [tenant],
  );
  return Object.fromEntries(rows.map((r) => [r.what, r.n]));
}

const unsettled = async (tenant: string) =>
  (
    await root.query<{ n: number }>(
      `select ((select count(*) from app_public.lead_sequence_enrollments where tenant_id = $1 and status = 'active')
            + (select count(*) from app_public.messages where tenant_id = $1 and status in ('queued', 'sending'))
            + (select count(*) from app_public.email_messages where tenant_id = $1 and status in ('queued', 'sending')))::int as n`,
      [tenant],
    )
  ).rows[0]!.n;

/**
 * The sweeps a restarted system runs, for rows left behind before `cutoff`: steps overdue (their job
 * was held by the dead worker), texts and emails left queued, and those left in sending (reconciled:
 * the provider is asked before anything goes again). The grace is the time since the cutoff, so a
 * send that a live worker started after it is never taken for a lost one.
 */
const sweepLeftBefore = (cutoff: Date) =>
  root.query(
    `select app_private.sweep_nurture(now() - $1::timestamptz) as steps,
            (select row(s.*)::text from app_private.sweep_outbox(now() - $1::timestamptz) s) as "texts (requeued, to_reconcile)",
            (select row(s.*)::text from app_private.sweep_email_outbox(now() - $1::timestamptz) s) as "emails (requeued, to_settle)"`,
    [cutoff],
  );

beforeAll(async () => {
  const server = new pg.Client({ connectionString: db.serverRootUrl });
  await server.connect();
  try {
    await server.query(
      `create database ${pg.escapeIdentifier(databaseName)} owner ${pg.escapeIdentifier(db.roles.owner)} encoding 'UTF8' template template0`,
    );
  } finally {
    await server.end();
  }
  await runAfterReset(withDatabase(db.serverRootUrl, databaseName), databaseName, db.roles);
  await migrateDatabase({ ownerUrl, rootUrl: withDatabase(db.serverRootUrl, "template1"), databaseName, roles: db.roles, includeCurrent: true });
  root = new pg.Pool({ connectionString: withDatabase(db.serverRootUrl, databaseName), max: 4 });
}, 120_000);

afterAll(async () => {
  stopEnrolling = true;
  for (const child of children) child.kill("SIGKILL");
  await enrolling?.catch(() => undefined);
  await root?.end();
  await dropDatabase(db.serverRootUrl, databaseName);
});

describe("nurture under chaos", () => {
  it("5,000 enrollments, two worker processes, one killed and restarted midway: every due step sent once, none twice, none to opted-out leads", async () => {
    const t = await tenantWithSequence();
    const leads = await newLeads(t, LEADS);
    const started = Date.now();

    // The workers start first and the leads are enrolled while they run, so that steps, texts and
    // emails of earlier leads are in flight together with the first steps of later ones.
    const a = await startWorkerProcess();
    const b = await startWorkerProcess();
    enrolling = enroll(t, leads);
    enrolling.catch(() => undefined); // awaited below; this only keeps an early failure from counting as unhandled
    const sent = async () => {
      const s = await states(t.tenant);
      return (s["text sent"] ?? 0) + (s["email sent"] ?? 0);
    };
    await waitFor(`${KILL_AFTER_SENT} texts and emails sent`, async () => (await sent()) >= KILL_AFTER_SENT, 120_000, 200);
    await kill(a);
    const killedLocally = Date.now();
    // Everything worker a claimed, it claimed before this (sending_at is the start of its statement).
    const killedAt = await serverNow();
    const atKill = await states(t.tenant);
    // Killed midway: steps still to run, texts and emails still to go.
    expect(atKill["enrollment active"] ?? 0, JSON.stringify(atKill)).toBeGreaterThan(OPT_OUTS);
    expect(atKill["text queued"] ?? 0, JSON.stringify(atKill)).toBeGreaterThan(0);

    // While worker b goes on, 50 enrolled leads opt out, alternately by texting STOP (the do-not-contact
    // list) and by unsubscribing from email: first leads whose text went but whose email has not
    // (its step still to run, or queued), then leads with nothing handed over yet.
    const { rows: candidates } = await root.query<Lead & { text_sent: boolean }>(
      `with c as (
         select l.id, l.phone, l.email::text as email, e.status,
                exists (select 1 from app_public.messages m where m.tenant_id = e.tenant_id and m.nurture_enrollment_id = e.id and m.status = 'sent') as text_sent,
                exists (select 1 from app_public.messages m where m.tenant_id = e.tenant_id and m.nurture_enrollment_id = e.id and m.status = 'sending') as text_sending
           from app_public.lead_sequence_enrollments e
           join app_public.leads l on l.tenant_id = e.tenant_id and l.id = e.lead_id
          where e.tenant_id = $1
            and not exists (select 1 from app_public.email_messages em where em.tenant_id = e.tenant_id and em.nurture_enrollment_id = e.id and em.status <> 'queued')
       )
       (select id, phone, email, text_sent from c where text_sent order by random() limit $2 / 2)
       union all
       (select id, phone, email, text_sent from c where status = 'active' and not text_sent and not text_sending order by random() limit $2)`,
      [t.tenant, OPT_OUTS],
    );
    const chosen = candidates.slice(0, OPT_OUTS);
    expect(chosen).toHaveLength(OPT_OUTS);
    expect(chosen.filter((l) => l.text_sent).length).toBeGreaterThan(0);
    const stop = chosen.filter((_, i) => i % 2 === 0);
    const unsubscribe = chosen.filter((_, i) => i % 2 === 1);
    await root.query("insert into app_public.dnc_list (tenant_id, phone, source) select $1, phone, 'sms_opt_out' from unnest($2::text[]) phone", [
      t.tenant,
      stop.map((c) => c.phone),
    ]);
    // Committed: a claim that starts after this sees the opt-out.
    const stoppedAt = await serverNow();
    await root.query("insert into app_public.email_suppressions (tenant_id, email, source) select $1, email, 'manual' from unnest($2::text[]) email", [
      t.tenant,
      unsubscribe.map((c) => c.email),
    ]);
    const unsubscribedAt = await serverNow();

    const c = await startWorkerProcess();
    expect(await enrolling).toBe(LEADS);
    // The first sweep comes 5 s after the kill: a send worker b claimed just before it is long done by then.
    await new Promise((r) => setTimeout(r, Math.max(0, killedLocally + 5_000 - Date.now())));
    let lastSweep = 0;
    let firstSweep: Record<string, unknown> | null = null;
    await waitFor(
      "every enrollment finished and every text and email settled",
      async () => {
        if (Date.now() - lastSweep > 30_000) {
          const { rows } = await sweepLeftBefore(killedAt);
          firstSweep ??= rows[0];
          lastSweep = Date.now();
        }
        return (await unsettled(t.tenant)) === 0;
      },
      180_000,
      500,
    );
    const ranMs = Date.now() - started;
    await kill(b);
    await kill(c);

    // Every enrollment finished: completed, or stopped by the opt-out (one that completed before it stays completed).
    const { rows: enrollments } = await root.query<{ id: string; lead_id: string; status: string; stop_reason: string | null }>(
      "select id, lead_id, status, stop_reason from app_public.lead_sequence_enrollments where tenant_id = $1",
      [t.tenant],
    );
    expect(enrollments).toHaveLength(LEADS);
    const optedOut = new Map<string, { reason: string; at: Date }>([
      ...stop.map((s) => [s.id, { reason: "opted_out", at: stoppedAt }] as const),
      ...unsubscribe.map((u) => [u.id, { reason: "unsubscribed", at: unsubscribedAt }] as const),
    ]);
    const unfinished = enrollments.filter((e) => {
      const out = optedOut.get(e.lead_id);
      return out ? !(e.status === "completed" || (e.status === "stopped" && e.stop_reason === out.reason)) : e.status !== "completed";
    });
    expect(unfinished).toEqual([]);
    const stoppedCount = enrollments.filter((e) => e.status === "stopped").length;
    expect(stoppedCount).toBeGreaterThan(0);

    // Each step ran at most once; a completed enrollment ran both, and each queued its text or email.
    const { rows: badRuns } = await root.query(
      `select e.id, e.status, count(r.id)::int as runs
         from app_public.lead_sequence_enrollments e
         left join app_public.nurture_step_runs r on r.tenant_id = e.tenant_id and r.enrollment_id = e.id
        where e.tenant_id = $1
        group by e.id, e.status
       having count(r.id) <> count(distinct r.step_number) or count(r.id) > 2
           or (e.status = 'completed' and (count(r.id) <> 2 or count(*) filter (where r.outcome = 'queued') <> 2))`,
      [t.tenant],
    );
    expect(badRuns).toEqual([]);

    // Our records: a lead that did not opt out has exactly one text (step 1) and one email (step 2),
    // both sent; one that opted out has at most those, each sent (before the opt-out) or canceled.
    const { rows: outboxes } = await root.query<{ lead_id: string; status: string; texts: string[]; emails: string[] }>(
      `select e.lead_id, e.status,
              (select coalesce(array_agg(m.nurture_step || ':' || m.status order by m.nurture_step), '{}') from app_public.messages m
                where m.tenant_id = e.tenant_id and m.nurture_enrollment_id = e.id) as texts,
              (select coalesce(array_agg(em.nurture_step || ':' || em.status order by em.nurture_step), '{}') from app_public.email_messages em
                where em.tenant_id = e.tenant_id and em.nurture_enrollment_id = e.id) as emails
         from app_public.lead_sequence_enrollments e where e.tenant_id = $1`,
      [t.tenant],
    );
    expect(outboxes.filter((o) => !optedOut.has(o.lead_id) && (o.texts.join() !== "1:sent" || o.emails.join() !== "2:sent"))).toEqual([]);
    expect(
      outboxes.filter((o) => optedOut.has(o.lead_id) && !(/^(1:(sent|canceled))?$/.test(o.texts.join()) && /^(2:(sent|canceled))?$/.test(o.emails.join()))),
    ).toEqual([]);
    const final = await states(t.tenant);
    console.info(
      `nurture chaos: ${LEADS} enrolled and settled in ${Math.round(ranMs / 1000)} s; at the kill ${JSON.stringify(atKill)}; ` +
        `first sweep after it ${JSON.stringify(firstSweep)}; at the end ${JSON.stringify(final)}`,
    );
    // Nothing failed, and no email is uncertain: the local catcher can be asked, so every email was settled.
    expect(Object.keys(final).filter((k) => !/^(enrollment (completed|stopped)|(text|email) (sent|canceled))$/.test(k))).toEqual([]);

    // The provider's records: each text it took is one of our sent texts, under the id we recorded,
    // to the number and with the body we queued; no number got two; every sent text is there.
    const { rows: texts } = await root.query(
      `select p.sid, p.to_phone, m.id as message_id, m.status, m.to_phone = p.to_phone and m.body = p.body as same
         from app_private.local_provider_messages p
         left join app_public.messages m on m.tenant_id = $1 and m.message_sid = p.sid
        where p.from_phone = $2 or p.to_phone in (select phone from app_public.leads where tenant_id = $1)`,
      [t.tenant, t.business],
    );
    expect(texts.filter((p) => p.message_id === null || p.status !== "sent" || !p.same)).toEqual([]);
    expect(new Set(texts.map((p) => p.to_phone)).size).toBe(texts.length);
    expect(texts).toHaveLength(final["text sent"]!);
    // The catcher's records: each email it took is one of our sent nurture emails, to the address we
    // queued; no address got two; every sent email is there; no Message-ID was handed over twice.
    const { rows: emails } = await root.query(
      `select p.message_id, p.to_email, em.id as email_id, em.status, em.purpose, em.to_email::text = p.to_email as same
         from app_private.local_provider_emails p
         left join app_public.email_messages em on em.tenant_id = $1 and em.message_id_header = p.message_id
        where p.to_email in (select email::text from app_public.leads where tenant_id = $1)`,
      [t.tenant],
    );
    expect(emails.filter((p) => p.email_id === null || p.status !== "sent" || p.purpose !== "nurture" || !p.same)).toEqual([]);
    expect(new Set(emails.map((p) => p.to_email)).size).toBe(emails.length);
    expect(emails).toHaveLength(final["email sent"]!);
    expect(repeatedEmails).toEqual([]);

    // None to an opted-out lead after its opt-out: what the provider has for such a lead was claimed
    // (handed over) before the opt-out was committed; a lead with nothing claimed by then got nothing.
    const { rows: toOptedOut } = await root.query<{ lead_id: string; kind: string; sending_at: Date }>(
      `select m.lead_id, 'text' as kind, m.sending_at
         from app_private.local_provider_messages p
         join app_public.messages m on m.tenant_id = $1 and m.message_sid = p.sid
        where m.lead_id = any ($2::uuid[])
       union all
       select em.lead_id, 'email', em.sending_at
         from app_private.local_provider_emails p
         join app_public.email_messages em on em.tenant_id = $1 and em.message_id_header = p.message_id
        where em.lead_id = any ($2::uuid[])`,
      [t.tenant, [...optedOut.keys()]],
    );
    const afterOptOut = toOptedOut
      .filter((p) => !(p.sending_at < optedOut.get(p.lead_id)!.at))
      .map((p) => ({ lead: p.lead_id, sent: p.kind, optedOutBy: optedOut.get(p.lead_id)!.reason }));
    expect(afterOptOut).toEqual([]);
    const reached = new Set(toOptedOut.map((p) => p.lead_id));
    expect(chosen.filter((l) => !l.text_sent && !reached.has(l.id)).length).toBeGreaterThan(0);

    expect(failedJobs).toEqual([]);
    const { rows: failing } = await root.query("select task_identifier, last_error from graphile_worker.jobs where last_error is not null");
    expect(failing).toEqual([]);
  }, 300_000);

  it("a text or email that a crash or a quick opt-out left waiting does not reach a lead after a STOP or an unsubscribe", async () => {
    const t = await tenantWithSequence();
    const [stopAfterLast, unsubscribeWhileSending, stopWhileSending, control] = await newLeads(t, 4);
    const enrollment: Record<string, string> = {};
    for (const lead of [stopAfterLast!, unsubscribeWhileSending!, stopWhileSending!, control!]) {
      const { rows } = await root.query("select id from app_private.enroll_lead($1, $2, $3, 'manual')", [t.tenant, t.sequence, lead.id]);
      enrollment[lead.id] = rows[0].id;
      // Step 1 runs as its job would: the text is queued.
      expect((await root.query("select app_private.run_nurture_step($1, 1) as o", [rows[0].id])).rows[0].o).toBe("queued");
    }
    const text = async (lead: Lead) =>
      (await root.query("select id, status from app_public.messages where nurture_enrollment_id = $1", [enrollment[lead.id]])).rows[0];
    const email = async (lead: Lead) =>
      (await root.query("select id, status from app_public.email_messages where nurture_enrollment_id = $1", [enrollment[lead.id]])).rows[0];
    const runStep2 = async (lead: Lead) => (await root.query("select app_private.run_nurture_step($1, 2) as o", [enrollment[lead.id]])).rows[0].o;
    // What a worker does before it calls the provider; this one dies right after.
    const claimText = async (lead: Lead) => (await root.query("select id from app_private.claim_outbound_message($1)", [(await text(lead)).id])).rows[0].id;
    const claimEmail = async (lead: Lead) =>
      (await root.query("select id from app_private.claim_outbound_email($1, $2, 'switchboard.localhost')", [(await email(lead)).id, PUBLIC_URL])).rows[0]?.id;
    const stop = (lead: Lead) => root.query("insert into app_public.dnc_list (tenant_id, phone, source) values ($1, $2, 'sms_opt_out')", [t.tenant, lead.phone]);
    const unsubscribe = (lead: Lead) =>
      root.query("insert into app_public.email_suppressions (tenant_id, email, source) values ($1, $2, 'manual')", [t.tenant, lead.email]);

    // 1. The last step (the email) was queued, so the enrollment is completed; the lead texts STOP
    //    before the email went.
    expect(await runStep2(stopAfterLast!)).toBe("queued");
    await stop(stopAfterLast!);
    // 2. A worker claimed the text and died before the provider had it; the lead then unsubscribes.
    expect(await claimText(unsubscribeWhileSending!)).not.toBeNull();
    await unsubscribe(unsubscribeWhileSending!);
    // 3. A worker claimed the email and died before the catcher had it; the lead then texts STOP.
    expect(await runStep2(stopWhileSending!)).toBe("queued");
    expect(await claimEmail(stopWhileSending!)).toBeDefined();
    await stop(stopWhileSending!);
    // 4. The same on one channel (this one holds): a worker claimed the text and died; the lead then texts STOP.
    expect(await claimText(control!)).not.toBeNull();
    await stop(control!);

    // What the dead worker left in sending is reconciled (sweeps before any worker runs: nothing is under way).
    await sweepLeftBefore(await serverNow());
    const worker = await startWorkerProcess();
    await waitFor("every text and email settled", async () => (await unsettled(t.tenant)) === 0, 30_000);
    await kill(worker);

    const { rows: provider } = await root.query<{ texted: string[]; emailed: string[] }>(
      `select array(select to_phone from app_private.local_provider_messages) as texted,
              array(select to_email from app_private.local_provider_emails) as emailed`,
    );
    const texted = (lead: Lead) => provider[0]!.texted.includes(lead.phone);
    const emailed = (lead: Lead) => provider[0]!.emailed.includes(lead.email);
    expect({
      "email after STOP, enrollment completed": { status: (await email(stopAfterLast!)).status, reached: emailed(stopAfterLast!) },
      "text after unsubscribe, left sending": { status: (await text(unsubscribeWhileSending!)).status, reached: texted(unsubscribeWhileSending!) },
      "email after STOP, left sending": { status: (await email(stopWhileSending!)).status, reached: emailed(stopWhileSending!) },
      "text after STOP, left sending": { status: (await text(control!)).status, reached: texted(control!) },
    }).toEqual({
      "email after STOP, enrollment completed": { status: "canceled", reached: false },
      "text after unsubscribe, left sending": { status: "canceled", reached: false },
      "email after STOP, left sending": { status: "canceled", reached: false },
      "text after STOP, left sending": { status: "canceled", reached: false },
    });
  }, 60_000);
});
