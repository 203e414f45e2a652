/**
 * The demo tenant (src/db/demo.sql, loaded by `npm start -- --seed` and `npm run seed`): loaded twice
 * as the owner role, the way seed() in src/main.ts does, it must hold a demo a newcomer can explore
 * (agents with skills, areas and availability; 20+ leads across the statuses with their history; a
 * routing rule, a routed lead with its reasons, a pending offer, a queued lead; a missed call turned
 * into a conversation; a nurture sequence with enrollments; do-not-contact entries, a segment, source
 * costs), seen as the demo owner through the request role under row-level security, and the second load
 * must change nothing. Then the same over HTTP: log in as the demo owner and count leads and agents.
 *
 * The demo commits its rows and enqueues worker jobs (texts, nurture steps, offer expiry), so this file
 * runs in a database of its own: no other file's worker takes those jobs, and no count elsewhere moves.
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { projectRoot } from "../../src/config.ts";
import { becomeUser, ownerPool, rootPool, useOwnDatabase, withRootDb, type Session } from "../helpers.ts";
import { startTestServer } from "../server.ts";
import type pg from "pg";

useOwnDatabase("demo");

const OWNER_EMAIL = "owner@demo.switchboard.test";
const PASSWORD = "demo-password-1";
const lead = (n: number) => `00000000-de00-4000-8000-0000000010${String(n).padStart(2, "0")}`;

/** Loads demo.sql on one owner connection, as seed() does (the script has its own begin/commit). */
async function loadDemo(): Promise<void> {
  const sql = await readFile(resolve(projectRoot, "src/db/demo.sql"), "utf8");
  const client = await ownerPool().connect();
  try {
    await client.query(sql);
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** Runs fn as the demo owner (the visitor role, a real session in the demo tenant), rolled back. */
async function asDemoOwner<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withRootDb(async (client) => {
    const { rows } = await client.query<Session>(
      `select s.user_id, s.tenant_id, s.id as session_id
       from app_public.users u
       join app_public.memberships m on m.user_id = u.id and m.role = 'owner'
       join app_public.tenants t on t.id = m.tenant_id and t.business_name = 'Demo Plumbing Co',
       lateral app_private.create_session(u.id, t.id) s
       where u.email = $1`,
      [OWNER_EMAIL],
    );
    expect(rows).toHaveLength(1);
    await becomeUser(client, rows[0]!);
    return fn(client);
  });
}

/** Row counts of everything the demo writes, as the demo owner sees them (RLS scopes them to the tenant). */
const COUNTED = [
  "leads", "agents", "agent_specializations", "agent_service_areas", "agent_availability",
  "lead_audit_log", "lead_status_history", "lead_score_history", "lead_assignments",
  "routing_rules", "lead_routing_history", "routing_offers", "assignment_queue", "routing_events",
  "phone_numbers", "calls", "conversations", "messages", "sms_consent_events",
  "nurture_sequences", "nurture_sequence_versions", "lead_sequence_enrollments",
  "dnc_list", "dnc_audit_log", "segments", "lead_source_costs", "system_config", "memberships",
];

async function counts(): Promise<Record<string, number>> {
  const result = await asDemoOwner(async (client) => {
    const { rows } = await client.query<Record<string, number>>(
      `select ${COUNTED.map((t) => `(select count(*)::int from app_public.${t}) as ${t}`).join(", ")}`,
    );
    return rows[0]!;
  });
  // Outside the tenant's tables: the jobs it enqueued and the sessions it acted with (none left).
  const { rows } = await rootPool().query<{ jobs: number; sessions: number }>(
    `select (select count(*)::int from graphile_worker.jobs) as jobs,
            (select count(*)::int from app_public.user_sessions where user_agent = 'src/db/demo.sql') as sessions`,
  );
  return { ...result, ...rows[0]! };
}

let afterFirst: Record<string, number>;
let afterSecond: Record<string, number>;

beforeAll(async () => {
  await loadDemo();
  afterFirst = await counts();
  await loadDemo();
  afterSecond = await counts();
}, 120_000);

describe("the demo data (src/db/demo.sql)", () => {
  it("loads twice without failing, and the second load changes nothing", () => {
    expect(afterFirst.leads).toBeGreaterThan(0);
    expect(afterSecond).toEqual(afterFirst);
    expect(afterFirst.sessions, "the sessions the script acted with are deleted").toBe(0);
  });

  it("has agents with skills, service areas and availability", async () => {
    await asDemoOwner(async (client) => {
      const { rows } = await client.query(
        `select a.display_name,
                (select count(*)::int from app_public.agent_specializations s where s.agent_id = a.id) as skills,
                (select count(*)::int from app_public.agent_service_areas z where z.agent_id = a.id) as areas,
                av.status, av.max_capacity
         from app_public.agents a left join app_public.agent_availability av on av.agent_id = a.id
         order by a.display_name`,
      );
      expect(rows.length).toBeGreaterThanOrEqual(4);
      for (const agent of rows) {
        expect(agent.skills, agent.display_name).toBeGreaterThan(0);
        expect(agent.areas, agent.display_name).toBeGreaterThan(0);
        expect(agent.max_capacity, agent.display_name).toBeGreaterThan(0);
      }
      expect(new Set(rows.map((a) => a.status))).toEqual(new Set(["available", "in_call", "offline"]));
      const { rows: langs } = await client.query(`select count(*)::int as n from app_public.agents where 'es' = any (languages)`);
      expect(langs[0].n).toBeGreaterThan(0);
    });
  });

  it("has 20+ leads across the statuses, with the history the triggers wrote", async () => {
    await asDemoOwner(async (client) => {
      const { rows: byStatus } = await client.query<{ status: string; n: number }>(
        "select status, count(*)::int as n from app_public.leads group by status",
      );
      const total = byStatus.reduce((sum, r) => sum + r.n, 0);
      expect(total).toBeGreaterThanOrEqual(20);
      expect(byStatus.map((r) => r.status).sort()).toEqual(
        ["cold", "contacted", "dnc", "hot", "lost", "new", "nurturing", "qualified", "won"],
      );
      const { rows } = await client.query(
        `select
           (select count(*)::int from app_public.lead_status_history where from_status is not null) as status_changes,
           (select count(*)::int from app_public.lead_status_history where changed_by_user_id is not null) as status_changes_by_people,
           (select count(*)::int from app_public.lead_score_history) as scores,
           (select count(distinct lead_id)::int from app_public.lead_score_history) as scored_leads,
           (select count(*)::int from app_public.lead_audit_log where field_name = '*created*') as created,
           (select count(*)::int from app_public.lead_audit_log where field_name <> '*created*') as field_changes,
           (select count(*)::int from app_public.lead_assignments) as assignments,
           (select count(*)::int from app_public.leads where lead_score = 0) as unscored`,
      );
      const h = rows[0];
      expect(h.created).toBe(total);
      expect(h.status_changes).toBeGreaterThanOrEqual(20);
      expect(h.status_changes_by_people).toBeGreaterThanOrEqual(20);
      expect(h.scored_leads).toBe(total);
      expect(h.scores).toBeGreaterThan(total);
      expect(h.field_changes).toBeGreaterThan(h.status_changes);
      expect(h.assignments).toBeGreaterThanOrEqual(10);
      expect(h.unscored).toBe(0);
      // The story of one lead, in words.
      const { rows: timeline } = await client.query("select event_type, summary from app_public.lead_timeline($1)", [lead(5)]);
      expect(timeline.map((e) => e.event_type)).toEqual(expect.arrayContaining(["created", "assigned", "status_changed", "score_changed"]));
    });
  });

  it("has a routing rule, a routed lead with its reasons, a pending offer and a queued lead", async () => {
    await asDemoOwner(async (client) => {
      const { rows: rules } = await client.query("select name, action from app_public.routing_rules where is_active");
      expect(rules.length).toBeGreaterThanOrEqual(1);

      // Dana Whitfield: offered by the emergency rule's best match, accepted by Avery.
      const { rows: routed } = await client.query(
        `select h.outcome, h.strategy, h.reason, h.candidates, r.name as rule, a.display_name as chosen, l.owner_agent_id = h.chosen_agent_id as owned
         from app_public.lead_routing_history h
         join app_public.leads l on l.id = h.lead_id
         left join app_public.routing_rules r on r.id = h.rule_id
         left join app_public.agents a on a.id = h.chosen_agent_id
         where h.lead_id = $1`,
        [lead(1)],
      );
      expect(routed).toHaveLength(1);
      expect(routed[0]).toMatchObject({ outcome: "offered", strategy: "best_match", rule: "Emergencies: best match", chosen: "Avery Adams", owned: true });
      expect(routed[0].reason).toMatch(/^Avery Adams chosen by best match/);
      expect(routed[0].candidates.length).toBeGreaterThanOrEqual(4);
      expect(routed[0].candidates.some((c: any) => c.eligible === false && c.checks.availability === false)).toBe(true);
      const { rows: explained } = await client.query("select outcome, summary, candidate_lines from app_public.explain_routing($1)", [lead(1)]);
      expect(explained[0].summary).toContain("Avery Adams");
      expect(explained[0].candidate_lines.length).toBeGreaterThanOrEqual(4);

      // Kenji Tanaka: a pending offer to Avery, open long enough to accept by hand.
      const { rows: pending } = await client.query(
        `select a.display_name, o.expires_at > now() + interval '1 day' as open
         from app_public.routing_offers o join app_public.agents a on a.id = o.agent_id where o.status = 'pending'`,
      );
      expect(pending).toEqual([{ display_name: "Avery Adams", open: true }]);

      // Rosa Delgado (nobody does irrigation) and Tom Becker (turned down, the other agent busy) wait.
      const { rows: queued } = await client.query(
        `select l.full_name, q.queue_type, h.reason
         from app_public.assignment_queue q join app_public.leads l on l.id = q.lead_id,
         lateral (select h.reason from app_public.lead_routing_history h where h.lead_id = q.lead_id order by h.id desc limit 1) h
         where q.dequeued_at is null order by l.full_name`,
      );
      expect(queued.map((q) => [q.full_name, q.queue_type])).toEqual([["Rosa Delgado", "active"], ["Tom Becker", "reassignment"]]);
      expect(queued[0].reason).toMatch(/No eligible agent among 4 considered \(failed checks: 4 skill/);
      const { rows: rejected } = await client.query("select decline_reason from app_public.routing_offers where status = 'rejected'");
      expect(rejected).toEqual([{ decline_reason: "On a job in Queens until 4 pm" }]);
    });
  });

  it("has a missed call that became a lead and a conversation with messages", async () => {
    await asDemoOwner(async (client) => {
      const { rows: numbers } = await client.query("select phone_number, status from app_public.phone_numbers");
      expect(numbers).toEqual([{ phone_number: "+12125550123", status: "active" }]);
      const { rows: calls } = await client.query(
        `select c.missed, c.processed, c.lead_created, c.sms_triggered, l.source, l.full_name, l.status,
                (select count(*)::int from app_public.messages m where m.conversation_id = v.id and m.direction = 'inbound') as inbound,
                (select count(*)::int from app_public.messages m where m.conversation_id = v.id and m.direction = 'outbound') as outbound,
                v.message_count, v.human_active, v.ai_active
         from app_public.calls c
         join app_public.conversations v on v.id = c.conversation_id
         join app_public.leads l on l.id = c.lead_id`,
      );
      expect(calls).toEqual([
        {
          missed: true, processed: true, lead_created: true, sms_triggered: true, source: "missed_call", full_name: "Jordan Blake",
          status: "contacted", inbound: 2, outbound: 2, message_count: 4, human_active: true, ai_active: false,
        },
      ]);
    });
  });

  it("has a nurture sequence with enrollments, and texts nobody on the do-not-contact list", async () => {
    await asDemoOwner(async (client) => {
      const { rows: sequences } = await client.query(
        `select s.name, s.current_version,
                (select count(*)::int from app_public.lead_sequence_enrollments e where e.sequence_id = s.id and e.status = 'active') as active,
                (select count(*)::int from app_public.lead_sequence_enrollments e where e.sequence_id = s.id and e.status = 'stopped') as stopped
         from app_public.nurture_sequences s`,
      );
      expect(sequences).toEqual([{ name: "Quote follow-up", current_version: 1, active: 2, stopped: 1 }]);

      const { rows: dnc } = await client.query("select phone, source from app_public.dnc_list order by phone");
      expect(dnc.length).toBeGreaterThanOrEqual(3);
      expect(dnc.map((d) => d.source)).toEqual(expect.arrayContaining(["manual", "lead_status"]));
      const { rows: leaks } = await client.query(
        `select
           (select count(*)::int from app_public.messages m join app_public.dnc_list d on d.phone = m.to_phone where m.direction = 'outbound') as texts,
           (select count(*)::int from app_public.lead_sequence_enrollments e join app_public.leads l on l.id = e.lead_id
              join app_public.dnc_list d on d.phone = l.phone where e.status = 'active') as enrollments`,
      );
      expect(leaks).toEqual([{ texts: 0, enrollments: 0 }]);
    });
  });

  it("has its history as numbered events, and a webhook endpoint turned off until it points somewhere", async () => {
    await asDemoOwner(async (client) => {
      const { rows: [feed] } = await client.query<{ n: number; first: string; last: string; types: string[] }>(
        "select count(*)::int as n, min(seq)::text as first, max(seq)::text as last, array_agg(distinct type order by type) as types from app_public.events_after(0, 1000)",
      );
      expect(feed!.n).toBeGreaterThan(20);
      expect(Number(feed!.last) - Number(feed!.first) + 1).toBe(feed!.n);
      expect(feed!.types).toEqual(expect.arrayContaining(["lead.created", "lead.status_changed", "message.received", "offer.created", "nurture.enrolled", "lead.queued"]));
      const { rows: endpoints } = await client.query("select url, enabled, event_types from app_public.webhook_endpoints");
      expect(endpoints).toEqual([
        { url: "https://hooks.acme-plumbing.example/switchboard", enabled: false, event_types: ["lead.created", "lead.status_changed", "message.received"] },
      ]);
    });
  });

  it("has segments and lead source costs", async () => {
    await asDemoOwner(async (client) => {
      const { rows: segments } = await client.query("select name, lead_count from app_public.segments order by name");
      expect(segments).toEqual([
        { name: "Emergencies", lead_count: 2 },
        { name: "Hot and qualified", lead_count: 4 },
      ]);
      const { rows: costs } = await client.query("select source, cost::float8 as cost from app_public.lead_source_costs order by source");
      expect(costs.length).toBeGreaterThanOrEqual(4);
      const { rows: roi } = await client.query(
        `select source, leads::int, cost::float8 as cost from app_public.lead_source_roi(current_date - 62, current_date + 1) where source = 'google_ads'`,
      );
      expect(roi).toEqual([{ source: "google_ads", leads: 7, cost: 1200 }]);
    });
  });

  it("is what a newcomer sees over GraphQL: log in as the demo owner, count leads and agents", async () => {
    const server = await startTestServer();
    try {
      const login = await server.gql<{ login: { result: string } }>(
        `mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`,
        { email: OWNER_EMAIL, password: PASSWORD },
      );
      expect(login.errors).toBeUndefined();
      const token = login.data!.login.result;
      const answer = await server.gql(
        `query ($lead: UUID!) {
           allLeads { totalCount }
           allAgents { totalCount }
           explainRouting(leadId: $lead) { nodes { outcome summary } }
         }`,
        { lead: lead(2) },
        token,
      );
      expect(answer.errors).toBeUndefined();
      expect(answer.data.allLeads.totalCount).toBe(afterSecond.leads);
      expect(answer.data.allLeads.totalCount).toBeGreaterThanOrEqual(20);
      expect(answer.data.allAgents.totalCount).toBe(4);
      expect(answer.data.explainRouting.nodes).toEqual([
        { outcome: "offered", summary: expect.stringContaining("Avery Adams") },
      ]);
    } finally {
      await server.close();
    }
  });

  // Last: it changes the demo, then loads it again.
  it("a later load keeps what people changed since: the tenant, presence, preferences and business settings", async () => {
    const root = rootPool();
    const tenant = (await root.query<{ id: string }>("select id from app_public.tenants where business_name = 'Demo Plumbing Co'")).rows[0]!.id;
    const user = async (email: string) => (await root.query<{ id: string }>("select id from app_public.users where email = $1", [email])).rows[0]!.id;
    const [owner, agent] = [await user(OWNER_EMAIL), await user("agent@demo.switchboard.test")];
    const snapshot = async () =>
      (
        await root.query(
          `select (select service_area_radius from app_public.tenants where id = $1) as radius,
                  (select status from app_public.user_status where user_id = $3) as agent_status,
                  (select ai_takeover_delay from app_public.user_preferences where user_id = $2) as owner_delay,
                  (select auto_response_message from app_public.business_settings where tenant_id = $1) as auto_reply,
                  (select status from app_public.leads where id = $4) as lead_status`,
          [tenant, owner, agent, lead(5)],
        )
      ).rows[0];
    await root.query("update app_public.tenants set service_area_radius = 10 where id = $1", [tenant]);
    await root.query("update app_public.user_status set status = 'away', is_online = false where user_id = $1", [agent]);
    await root.query("update app_public.user_preferences set ai_takeover_delay = 5 where user_id = $1", [owner]);
    await root.query("update app_public.business_settings set auto_response_message = 'Back soon.' where tenant_id = $1", [tenant]);
    const changed = await snapshot();
    expect(changed).toMatchObject({ radius: 10, agent_status: "away", owner_delay: 5, auto_reply: "Back soon." });
    await loadDemo();
    expect(await snapshot()).toEqual(changed);
  });
});
