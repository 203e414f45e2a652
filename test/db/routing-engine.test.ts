/**
 * Routing engine core (migrations/fixtures/routing/route_lead.sql, first created in
 * migrations/committed/000004-routing-engine-agents-skills-areas-availability-slots-rules-.sql):
 * candidate checks recorded per agent,
 * leads that must not be routed, each strategy, rules, experiment override, direct assignment,
 * queueing, bad input, explain_routing, the assignment history of agents; and the guarantees with
 * real parallel connections on committed data: one offer (or owner) per lead, nobody over capacity,
 * no false "no agent available" on a hot tenant, one slot per lead.
 * Weighted round-robin fairness over 10,000 decisions is in routing-fairness.test.ts (a load test).
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import {
  addMember,
  becomeRoot,
  becomeUser,
  db,
  expectSqlError,
  poolFor,
  registerUser,
  rootPool,
  withRootDb,
  type RegisteredUser,
} from "../helpers.ts";
import {
  committedTenant,
  createAgent,
  createLead,
  createLeads,
  dropCommittedTenant,
  inParallel,
  routeAsSystem,
  routeInTransaction,
  setRoutingConfig,
  type Candidate,
  type HistoryRow,
} from "../routing-helpers.ts";

const MIAMI = { latitude: 25.7617, longitude: -80.1918 };
const TOMORROW = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);

const byName = (h: HistoryRow) => Object.fromEntries(h.candidates.map((c) => [c.name, c])) as Record<string, Candidate>;

async function routeAsManager(client: pg.ClientBase, manager: RegisteredUser, leadId: string): Promise<HistoryRow> {
  await becomeUser(client, manager);
  const { rows } = await client.query<HistoryRow>("select * from app_public.route_lead($1)", [leadId]);
  await becomeRoot(client);
  return rows[0]!;
}

describe("candidate checks", () => {
  it("records every check per agent, passes or fails, with reasons", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const manager = await addMember(client, t, "manager");
      await becomeRoot(client);
      const ana = await createAgent(client, t, { name: "Ana", areas: [{ kind: "region", region: "FL" }], slots: [{ date: TOMORROW }] });
      await createAgent(client, t, { name: "Bob", specializations: [{ service_line: "home" }] });
      await createAgent(client, t, { name: "Cy", languages: ["fr"] });
      await createAgent(client, t, { name: "Di", areas: [{ kind: "city", city: "Tampa" }] });
      const eve = await createAgent(client, t, { name: "Eve", areas: [{ kind: "radius", center_latitude: 25.77, center_longitude: -80.2, radius_miles: 10 }] });
      await createAgent(client, t, { name: "Fay", status: "break" });
      await createAgent(client, t, { name: "Gus", load: 2, capacity: 2 });
      await createAgent(client, t, { name: "Hal", specializations: [{ service_line: "auto", customer_segment: "commercial" }] });
      await createAgent(client, t, { name: "Ivy", specializations: [{ service_line: "auto", territories: ["TX"] }] });
      await createAgent(client, t, { name: "Jo", areas: [{ kind: "postal_code", postal_code: "33101" }] });
      await createAgent(client, t, { name: "Inactive", isActive: false });

      const lead = await createLead(client, t, {
        customer_segment: "residential", language: "es-MX", city: "miami", region: "FL", postal_code: "33101", attributes: MIAMI,
      });
      const h = await routeAsManager(client, manager, lead);
      const c = byName(h);
      expect(Object.keys(c).sort()).toEqual(["Ana", "Bob", "Cy", "Di", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo"]);
      expect(c.Ana!.eligible && c.Eve!.eligible && c.Jo!.eligible).toBe(true);
      expect(c.Bob!.checks.skill).toBe(false);
      expect(c.Bob!.reasons.skill).toMatch(/no specialization in auto for segment residential/);
      expect(c.Cy!.checks.language).toBe(false);
      expect(c.Cy!.reasons.language).toBe("does not speak es-MX");
      expect(c.Di!.checks.area).toBe(false);
      expect(c.Eve!.checks.area).toBe(true);
      expect(c.Fay!.checks.availability).toBe(false);
      expect(c.Fay!.reasons.availability).toBe("status is break");
      expect(c.Gus!.checks.capacity).toBe(false);
      expect(c.Gus!.reasons.capacity).toBe("at capacity (2 of 2)");
      expect(c.Hal!.checks.skill).toBe(false);
      expect(c.Ivy!.checks.skill).toBe(false);
      // A failing agent fails only its own check.
      expect(Object.entries(c.Bob!.checks).filter(([, v]) => !v).map(([k]) => k)).toEqual(["skill"]);
      expect(h.outcome).toBe("offered");
      expect(h.candidates.find((x) => x.agent_id === h.chosen_agent_id)?.rank).toBe(1);
      expect(h.candidates.filter((x) => x.eligible).map((x) => x.agent_id)).toContain(eve);

      // Radius without coordinates: unknown location. Event lead: only agents with a free slot.
      const noCoords = await createLead(client, t, { region: "FL", city: "Miami", event_date: TOMORROW });
      const h2 = await routeAsManager(client, manager, noCoords);
      const c2 = byName(h2);
      expect(c2.Eve!.checks.area).toBe(false);
      expect(c2.Eve!.reasons.area).toBe("unknown location");
      expect(c2.Jo!.checks.slot).toBe(false);
      expect(c2.Jo!.reasons.slot).toBe(`no free slot on ${TOMORROW}`);
      expect(h2.chosen_agent_id).toBe(ana);
      const { rows: slot } = await client.query("select locked_by_lead_id, locked_until is not null as locked from app_public.availability_slots where agent_id = $1", [ana]);
      expect(slot).toEqual([{ locked_by_lead_id: noCoords, locked: true }]);
      const { rows: offer } = await client.query("select slot_id is not null as has_slot from app_public.routing_offers where lead_id = $1", [noCoords]);
      expect(offer).toEqual([{ has_slot: true }]);
      // A second event lead on that date finds the slot held.
      const other = await createLead(client, t, { region: "FL", event_date: TOMORROW });
      const h3 = await routeAsManager(client, manager, other);
      expect(byName(h3).Ana!.checks.slot).toBe(false);
      expect(h3.outcome).toBe("queued");

      // Previous rejecters are left out.
      const rejected = await createLead(client, t, { region: "FL", city: "Miami", postal_code: "33101", attributes: MIAMI });
      await client.query(
        "insert into app_public.routing_offers (tenant_id, lead_id, agent_id, status, expires_at) values ($1, $2, $3, 'rejected', now() + interval '1 minute')",
        [t, rejected, ana],
      );
      const h4 = await routeAsManager(client, manager, rejected);
      expect(byName(h4).Ana!.checks.not_rejected).toBe(false);
      expect(byName(h4).Ana!.reasons.not_rejected).toMatch(/rejected/);
      expect(h4.chosen_agent_id).not.toBe(ana);

      // A lead without a service line matches every agent's skills.
      const anyLine = await createLead(client, t, { service_line: null, region: "FL" });
      const h5 = await routeAsManager(client, manager, anyLine);
      expect(h5.candidates.every((x) => x.checks.skill)).toBe(true);
    });
  });

  it("does not route deleted leads, numbers on the DNC list, closed leads, or leads already offered or assigned", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const agent = await createAgent(client, t, { name: "Ana" });
      const dnc = await createLead(client, t, { phone: "+13055550101" });
      await client.query("insert into app_public.dnc_list (tenant_id, phone, reason) values ($1, '+13055550101', 'asked')", [t]);
      const deleted = await createLead(client, t);
      await client.query("update app_public.leads set deleted_at = now() where id = $1", [deleted]);
      const lost = await createLead(client, t, { status: "lost" });
      const offered = await createLead(client, t);
      const owned = await createLead(client, t);
      await client.query("update app_public.leads set owner_agent_id = $2 where id = $1", [owned, agent]);

      const cases: [string, RegExp][] = [
        [dnc, /\+13055550101 is on the do-not-contact list/],
        [deleted, /deleted/],
        [lost, /closed \(status lost\)/],
        [owned, /already assigned to agent Ana/],
      ];
      for (const [lead, reason] of cases) {
        const h = await routeAsSystem(client, t, lead);
        expect(h.outcome).toBe("not_routed");
        expect(h.reason).toMatch(reason);
      }
      expect((await routeAsSystem(client, t, offered)).outcome).toBe("offered");
      const again = await routeAsSystem(client, t, offered);
      expect(again.outcome).toBe("not_routed");
      expect(again.reason).toMatch(/already has a pending offer/);
      const { rows } = await client.query("select count(*)::int as n from app_public.routing_offers where tenant_id = $1", [t]);
      expect(rows[0].n).toBe(1);
      const { rows: events } = await client.query("select count(*)::int as n from app_public.routing_events where tenant_id = $1 and event_type = 'not_routed'", [t]);
      expect(events[0].n).toBe(5);
      await expectSqlError(client, "22023", () => client.query("select app_private.route_lead($1, $2, 'whenever')", [t, offered]));
    });
  });
});

describe("strategies, rules, experiments, modes", () => {
  it("weighted round robin follows the weights; least loaded, best match and score tiered pick what they should", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const a = await createAgent(client, t, { name: "A", weight: 1, capacity: 100, load: 50, metrics: { hot: 0.9, cold: 0.1 }, specializations: [{ service_line: "auto", proficiency: 2 }] });
      const b = await createAgent(client, t, { name: "B", weight: 2, capacity: 100, load: 10, metrics: { hot: 0.3, cold: 0.6 }, specializations: [{ service_line: "auto", proficiency: 5 }] });
      const c = await createAgent(client, t, { name: "C", weight: 3, capacity: 100, load: 20, specializations: [{ service_line: "auto", proficiency: 4 }] });
      const names = { [a]: "A", [b]: "B", [c]: "C" } as Record<string, string>;

      const picks: string[] = [];
      for (let i = 0; i < 6; i++) picks.push(names[(await routeAsSystem(client, t, await createLead(client, t))).chosen_agent_id!]!);
      expect(picks.sort().join("")).toBe("ABBCCC");
      // Stride scheduling: each lead moves only its agent's pass, by 1 / weight (C, B, C, C, B, A).
      const { rows: passes } = await client.query(
        "select a.display_name as name, round(c.pass, 4)::float as pass from app_public.agent_routing_credits c join app_public.agents a on a.id = c.agent_id where c.tenant_id = $1 order by 1",
        [t],
      );
      expect(passes).toEqual([{ name: "A", pass: 2 }, { name: "B", pass: 1.5 }, { name: "C", pass: 1.3333 }]);

      await setRoutingConfig(client, t, "routing.default_strategy", '"least_loaded"');
      // Loads now: A 51/100, B 12/100, C 23/100.
      const ll = await routeAsSystem(client, t, await createLead(client, t));
      expect([ll.strategy, names[ll.chosen_agent_id!]]).toEqual(["least_loaded", "B"]);
      expect(byName(ll).B!.score).toBeCloseTo(0.12);

      await setRoutingConfig(client, t, "routing.default_strategy", '"best_match"');
      // Cold lead: A 2 x 0.1, B 5 x 0.6, C 4 x 0.5 (no metrics) -> B.
      const bm = await routeAsSystem(client, t, await createLead(client, t, { lead_score: 10 }));
      expect(names[bm.chosen_agent_id!]).toBe("B");
      expect(byName(bm).C!.score).toBeCloseTo(4 * 0.5 * 0.6);
      // Hot lead: A 2 x 0.9 = 1.8, B 5 x 0.3 = 1.5, C 4 x 0.5 = 2.0 -> C.
      const bmHot = await routeAsSystem(client, t, await createLead(client, t, { lead_score: 85 }));
      expect(names[bmHot.chosen_agent_id!]).toBe("C");

      await setRoutingConfig(client, t, "routing.default_strategy", '"score_tiered"');
      const hot = await routeAsSystem(client, t, await createLead(client, t, { lead_score: 90 }));
      expect([hot.strategy, names[hot.chosen_agent_id!]]).toEqual(["score_tiered", "A"]);
      const cold = await routeAsSystem(client, t, await createLead(client, t, { lead_score: 20 }));
      expect(cold.reason).toMatch(/score tiered: cold lead/);
      // Ranked by round-robin pass: the next agent in turn scores 0, the others how far behind they are.
      const coldRanks = Object.values(byName(cold)).filter((c) => c.eligible);
      expect(coldRanks.find((c) => c.rank === 1)!.score).toBe(0);
      for (const c of coldRanks) expect(c.pass).toBeGreaterThan(0);
    });
  });

  it("direct to owner prefers the previous owner agent, else falls back to weighted round robin", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const a = await createAgent(client, t, { name: "A", weight: 1 });
      const b = await createAgent(client, t, { name: "B", weight: 50 });
      await setRoutingConfig(client, t, "routing.default_strategy", '"direct_to_owner"');
      const lead = await createLead(client, t);
      await client.query("update app_public.leads set owner_agent_id = $2 where id = $1", [lead, a]);
      await client.query("update app_public.leads set owner_agent_id = null where id = $1", [lead]);
      const h = await routeAsSystem(client, t, lead);
      expect([h.strategy, h.chosen_agent_id]).toEqual(["direct_to_owner", a]);
      expect(h.reason).toMatch(/the previous owner/);
      // A returning customer (a new lead with the same email) goes to the owner of the earlier lead.
      const { rows } = await client.query("select email from app_public.leads where id = $1", [lead]);
      await client.query("update app_public.leads set owner_agent_id = $2 where id = $1", [lead, a]);
      const returning = await createLead(client, t, { email: rows[0].email });
      expect((await routeAsSystem(client, t, returning)).chosen_agent_id).toBe(a);
      // Owner offline: weighted round robin.
      await client.query("update app_public.agent_availability set status = 'offline' where agent_id = $1", [a]);
      const again = await createLead(client, t, { email: rows[0].email });
      const h2 = await routeAsSystem(client, t, again);
      expect(h2.chosen_agent_id).toBe(b);
      expect(h2.reason).toMatch(/previous owner is not eligible/);
    });
  });

  it("rules pick the strategy, restrict the agents or send to a queue; an experiment variant overrides the strategy", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const manager = await addMember(client, t, "manager");
      await becomeRoot(client);
      const a = await createAgent(client, t, { name: "A", load: 4, capacity: 5 });
      const b = await createAgent(client, t, { name: "B", load: 0, capacity: 5 });
      await client.query(
        `insert into app_public.routing_rules (tenant_id, name, priority, conditions, action, strategy, agent_ids, queue_type, is_active) values
           ($1, 'vip least loaded', 10, '{"tags_any": ["vip"]}', 'use_strategy', 'least_loaded', '{}', null, true),
           ($1, 'only A', 20, '{"tags_any": ["a-only"]}', 'route_to_agents', null, array[$2::uuid], null, true),
           ($1, 'nurture queue', 30, '{"status": "nurturing"}', 'route_to_queue', null, '{}', 'nurture', true),
           ($1, 'inactive catch-all', 1, '{}', 'route_to_queue', null, '{}', 'waiting', false)`,
        [t, a],
      );
      const { rows: rules } = await client.query<{ id: string; name: string }>("select id, name from app_public.routing_rules where tenant_id = $1", [t]);
      const rule = Object.fromEntries(rules.map((r) => [r.name, r.id]));

      const vip = await createLead(client, t, { tags: ["vip"] });
      const { rows: match } = await client.query("select (app_private.matching_routing_rule($1, $2)).name", [t, vip]);
      expect(match[0].name).toBe("vip least loaded");
      const h1 = await routeAsManager(client, manager, vip);
      expect([h1.strategy, h1.rule_id, h1.chosen_agent_id]).toEqual(["least_loaded", rule["vip least loaded"], b]);

      const onlyA = await createLead(client, t, { tags: ["a-only"] });
      const h2 = await routeAsManager(client, manager, onlyA);
      expect(h2.candidates.map((x) => x.name)).toEqual(["A"]);
      expect(h2.chosen_agent_id).toBe(a);
      const { rows: none } = await client.query("select (app_private.matching_routing_rule($1, $2)).id", [t, await createLead(client, t)]);
      expect(none[0].id).toBeNull();

      const nurture = await createLead(client, t, { status: "nurturing" });
      const h3 = await routeAsManager(client, manager, nurture);
      expect([h3.outcome, h3.rule_id]).toEqual(["queued", rule["nurture queue"]]);
      const { rows: q } = await client.query("select queue_type, round(extract(epoch from sla_expires_at - enqueued_at))::int as sla from app_public.assignment_queue where lead_id = $1", [nurture]);
      expect(q).toEqual([{ queue_type: "nurture", sla: 86400 }]);

      // Escalation widens: the rule's agent list no longer limits the candidates.
      const escalated = await createLead(client, t, { tags: ["a-only"] });
      const he = await routeAsSystem(client, t, escalated, "escalation");
      expect(he.candidates.map((x) => x.name).sort()).toEqual(["A", "B"]);

      // Experiment override: a running experiment's variant strategy wins over the rule's
      // (app_private.experiment_variant_for_lead puts the lead in the only arm).
      const { rows: exp } = await client.query<{ id: string }>("insert into app_public.routing_experiments (tenant_id, name) values ($1, 'x') returning id", [t]);
      const { rows: variant } = await client.query<{ id: string }>(
        "insert into app_public.routing_experiment_variants (tenant_id, experiment_id, name, strategy, traffic_allocation, is_control) values ($1, $2, 'least loaded arm', 'least_loaded', 100, true) returning id",
        [t, exp[0]!.id],
      );
      await client.query("update app_public.routing_experiments set status = 'running', started_at = now() where id = $1", [exp[0]!.id]);
      const h4 = await routeAsSystem(client, t, await createLead(client, t));
      expect([h4.strategy, h4.experiment_id, h4.variant_id, h4.chosen_agent_id]).toEqual(["least_loaded", exp[0]!.id, variant[0]!.id, b]);
    });
  });

  it("direct assignment sets the owner agent (and member), records it, books the slot; no candidate queues with the SLA", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const member = await addMember(client, t, "agent");
      await becomeRoot(client);
      const a = await createAgent(client, t, { name: "A", userId: member.user_id, slots: [{ date: TOMORROW }] });
      await setRoutingConfig(client, t, "routing.direct_assignment", "true");
      const lead = await createLead(client, t, { event_date: TOMORROW });
      const h = await routeAsSystem(client, t, lead);
      expect([h.outcome, h.chosen_agent_id]).toEqual(["assigned", a]);
      const { rows: l } = await client.query("select owner_agent_id, owner_user_id from app_public.leads where id = $1", [lead]);
      expect(l).toEqual([{ owner_agent_id: a, owner_user_id: member.user_id }]);
      const { rows: asg } = await client.query("select from_agent_id, to_agent_id, to_user_id, strategy from app_public.lead_assignments where lead_id = $1", [lead]);
      expect(asg).toEqual([{ from_agent_id: null, to_agent_id: a, to_user_id: member.user_id, strategy: "weighted_round_robin" }]);
      const { rows: av } = await client.query("select current_load from app_public.agent_availability where agent_id = $1", [a]);
      expect(av[0].current_load).toBe(1);
      const { rows: slot } = await client.query("select status, booked_lead_id from app_public.availability_slots where agent_id = $1", [a]);
      expect(slot).toEqual([{ status: "booked", booked_lead_id: lead }]);
      const { rows: offers } = await client.query("select count(*)::int as n from app_public.routing_offers where lead_id = $1", [lead]);
      expect(offers[0].n).toBe(0);
      const { rows: setting } = await client.query("select current_setting('app.assignment_strategy', true) as s");
      expect(setting[0].s ?? "").toBe("");

      // Nobody available: queued, with the SLA of the queue (tenant setting or default).
      await client.query("update app_public.agent_availability set status = 'offline' where agent_id = $1", [a]);
      await setRoutingConfig(client, t, "routing.sla_seconds.active", "60");
      const waiting = await createLead(client, t);
      const hq = await routeAsSystem(client, t, waiting);
      expect(hq.outcome).toBe("queued");
      expect(hq.reason).toMatch(/No eligible agent among 1 considered \(failed checks: 1 availability\); queued in active/);
      const hot = await createLead(client, t, { lead_score: 95 });
      await routeAsSystem(client, t, hot);
      const { rows: q } = await client.query(
        "select lead_id, queue_type, priority, round(extract(epoch from sla_expires_at - enqueued_at))::int as sla from app_public.assignment_queue where tenant_id = $1 order by priority",
        [t],
      );
      expect(q).toEqual([
        { lead_id: waiting, queue_type: "active", priority: 100, sla: 60 },
        { lead_id: hot, queue_type: "hot", priority: 200, sla: 300 },
      ]);
      // Routing again keeps its place in the queue; once routed, it leaves the queue.
      await routeAsSystem(client, t, waiting, "requeue");
      await client.query("update app_public.agent_availability set status = 'available' where agent_id = $1", [a]);
      await routeAsSystem(client, t, waiting, "agent_available");
      const { rows: q2 } = await client.query("select dequeue_reason from app_public.assignment_queue where lead_id = $1", [waiting]);
      expect(q2).toEqual([{ dequeue_reason: "routed" }]);
    });
  });

  it("offers expire through a job, and the offer reserves the agent's capacity", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const a = await createAgent(client, t, { name: "A", capacity: 1 });
      await setRoutingConfig(client, t, "routing.offer_timeout_seconds", "30");
      const lead = await createLead(client, t);
      await routeAsSystem(client, t, lead);
      const { rows: offer } = await client.query<{ id: string; secs: number }>(
        "select id, round(extract(epoch from expires_at - offered_at))::int as secs from app_public.routing_offers where lead_id = $1",
        [lead],
      );
      expect(offer[0]!.secs).toBe(30);
      const { rows: jobs } = await client.query(
        `select t.identifier, j.payload->>'offer_id' as offer_id from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
          where j.key = $1`,
        [`routing_offer:${offer[0]!.id}`],
      );
      expect(jobs).toEqual([{ identifier: "routing__expire_offer", offer_id: offer[0]!.id }]);
      const { rows: av } = await client.query("select current_load from app_public.agent_availability where agent_id = $1", [a]);
      expect(av[0].current_load).toBe(1);
      const second = await routeAsSystem(client, t, await createLead(client, t));
      expect(second.outcome).toBe("queued");
      expect(byName(second).A!.reasons.capacity).toBe("at capacity (1 of 1)");
    });
  });

  it("refuses unknown leads, other tenants' leads and agents; explain_routing reads the decisions in words", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const manager = await addMember(client, t, "manager");
      const agentMember = await addMember(client, t, "agent");
      const other = await registerUser(client);
      await becomeRoot(client);
      await createAgent(client, t, { name: "Ana" });
      await createAgent(client, t, { name: "Bob", specializations: [{ service_line: "home" }] });
      const lead = await createLead(client, t);
      const foreign = await createLead(client, other.tenant_id!);

      await becomeUser(client, manager);
      await expectSqlError(client, "P0002", () => client.query("select app_public.route_lead($1)", ["00000000-0000-0000-0000-000000000000"]));
      await expectSqlError(client, "P0002", () => client.query("select app_public.route_lead($1)", [foreign]));
      await expectSqlError(client, "P0002", () => client.query("select * from app_public.explain_routing($1)", [foreign]));
      await becomeUser(client, agentMember);
      await expectSqlError(client, "42501", () => client.query("select app_public.route_lead($1)", [lead]));
      await becomeRoot(client);
      const { rows: nothing } = await client.query("select count(*)::int as n from app_public.lead_routing_history where lead_id = any($1)", [[lead, foreign]]);
      expect(nothing[0].n).toBe(0);
      await expectSqlError(client, "P0002", () => client.query("select app_private.route_lead($1, $2, 'manual')", [t, foreign]));

      await routeAsManager(client, manager, lead);
      await routeAsManager(client, manager, lead);
      await becomeUser(client, agentMember); // any member may read the explanation
      const { rows } = await client.query("select * from app_public.explain_routing($1)", [lead]);
      expect(rows).toHaveLength(2);
      expect(rows[0].outcome).toBe("offered");
      expect(rows[0].summary).toMatch(/^Offered to Ana: Ana chosen by weighted round robin; offer expires in 120 s\. 1 of 2 agents were eligible\.$/);
      expect(rows[0].candidate_lines).toEqual([
        "Ana: eligible (rank 1, score 0), chosen",
        "Bob: not eligible, failed skill (no specialization in auto)",
      ]);
      expect(rows[1].summary).toMatch(/^Not routed: The lead already has a pending offer/);
      await becomeRoot(client);
    });
  });
});

/** A committed tenant with a manager session and agents, for parallel connections. */
describe("guarantees under parallel connections (committed data)", () => {
  it("the same lead routed from 20 connections ends with exactly one pending offer, and in direct mode one owner", { timeout: 60_000 }, async () => {
    const s = await committedTenant("Same lead", (i) => ({ name: `Agent ${i}`, capacity: 10 }), 5);
    try {
      const [lead] = await createLeads(s.tenantId, 1);
      const results = await inParallel(s.manager, 20, (c) => routeInTransaction(c, s.manager, lead!));
      expect(results.filter((r) => r.outcome === "offered")).toHaveLength(1);
      expect(results.filter((r) => r.outcome === "not_routed" && /pending offer/.test(r.reason))).toHaveLength(19);
      const { rows } = await rootPool().query(
        `select (select count(*)::int from app_public.routing_offers where lead_id = $1) as offers,
                (select sum(current_load)::int from app_public.agent_availability where tenant_id = $2) as load`,
        [lead, s.tenantId],
      );
      expect(rows[0]).toEqual({ offers: 1, load: 1 });

      await setRoutingConfig(rootPool() as unknown as pg.ClientBase, s.tenantId, "routing.direct_assignment", "true");
      const [direct] = await createLeads(s.tenantId, 1);
      const results2 = await inParallel(s.manager, 20, (c) => routeInTransaction(c, s.manager, direct!));
      expect(results2.filter((r) => r.outcome === "assigned")).toHaveLength(1);
      expect(results2.filter((r) => r.outcome === "not_routed" && /already assigned/.test(r.reason))).toHaveLength(19);
      const { rows: asg } = await rootPool().query("select count(*)::int as n from app_public.lead_assignments where lead_id = $1 and to_agent_id is not null", [direct]);
      expect(asg[0].n).toBe(1);
    } finally {
      await dropCommittedTenant(s.tenantId, [s.owner.user_id, s.manager.user_id]);
    }
  });

  it("32 connections routing into 10 agents with free capacity: < 1% 'no agent available', nobody over capacity", { timeout: 60_000 }, async () => {
    const s = await committedTenant("Hot tenant", (i) => ({ name: `Agent ${i}`, capacity: 1000, weight: 1 + (i % 3) }), 10);
    try {
      // Half the leads go through least loaded (everyone wants the same agent), half through weighted round robin.
      const root = rootPool();
      await root.query(
        `insert into app_public.routing_rules (tenant_id, name, priority, conditions, action, strategy) values ($1, 'll', 1, '{"tags_any": ["ll"]}', 'use_strategy', 'least_loaded')`,
        [s.tenantId],
      );
      const perConnection = 12;
      const leads = [
        ...(await createLeads(s.tenantId, 16 * perConnection, { tags: ["ll"] })),
        ...(await createLeads(s.tenantId, 16 * perConnection)),
      ];
      const results = await inParallel(s.manager, 32, async (c, w) => {
        const out = [];
        for (let i = 0; i < perConnection; i++) out.push(await routeInTransaction(c, s.manager, leads[w * perConnection + i]!));
        return out;
      });
      const all = results.flat();
      const noAgent = all.filter((r) => r.outcome === "queued").length;
      expect(all).toHaveLength(32 * perConnection);
      expect(noAgent / all.length).toBeLessThan(0.01);
      const { rows } = await root.query(
        `select a.agent_id, a.current_load, a.max_capacity,
                (select count(*)::int from app_public.routing_offers o where o.agent_id = a.agent_id and o.status = 'pending') as pending
           from app_public.agent_availability a where a.tenant_id = $1`,
        [s.tenantId],
      );
      expect(rows.every((r) => r.current_load <= r.max_capacity && r.current_load === r.pending)).toBe(true);
      expect(rows.reduce((n, r) => n + r.pending, 0)).toBe(all.length - noAgent);
    } finally {
      await dropCommittedTenant(s.tenantId, [s.owner.user_id, s.manager.user_id]);
    }
  });

  it("tight capacity and one slot: exactly the free capacity is offered, and a slot is held by one lead", { timeout: 60_000 }, async () => {
    const s = await committedTenant("Tight", (i) => ({ name: `Agent ${i}`, capacity: 2, slots: i === 0 ? [{ date: TOMORROW }] : [] }), 10);
    try {
      const leads = await createLeads(s.tenantId, 32);
      const results = await inParallel(s.manager, 32, (c, w) => routeInTransaction(c, s.manager, leads[w]!));
      expect(results.filter((r) => r.outcome === "offered")).toHaveLength(20);
      expect(results.filter((r) => r.outcome === "queued")).toHaveLength(12);
      const { rows } = await rootPool().query("select max(current_load)::int as max, sum(current_load)::int as sum from app_public.agent_availability where tenant_id = $1", [s.tenantId]);
      expect(rows[0]).toEqual({ max: 2, sum: 20 });

      await rootPool().query("update app_public.agent_availability set current_load = 0, max_capacity = 100 where tenant_id = $1", [s.tenantId]);
      const events = await createLeads(s.tenantId, 16, { event_date: TOMORROW });
      const results2 = await inParallel(s.manager, 16, (c, w) => routeInTransaction(c, s.manager, events[w]!));
      expect(results2.filter((r) => r.outcome === "offered")).toHaveLength(1);
      const { rows: held } = await rootPool().query(
        "select count(*)::int as offers_with_slot from app_public.routing_offers where tenant_id = $1 and slot_id is not null",
        [s.tenantId],
      );
      expect(held[0].offers_with_slot).toBe(1);
    } finally {
      await dropCommittedTenant(s.tenantId, [s.owner.user_id, s.manager.user_id]);
    }
  });
});
