/**
 * Technicians from ServiceTitan under concurrent routing: many service leads for the same hour routed
 * at once on parallel connections never give one technician two overlapping jobs, and a technician
 * on a ServiceTitan appointment gets none of them (route_lead's "free" check, re-checked after the
 * agent row is locked). The caches are filled the way a sync fills them: st_begin_sync + st_apply_page.
 * Skill mappings written in bulk re-derive the technicians' specializations once per statement.
 */
import type pg from "pg";
import { beforeAll, describe, expect, it } from "vitest";
import { registerUser, rootPool, useOwnDatabase, type RegisteredUser } from "../helpers.ts";

useOwnDatabase("technician_routing");

const stamp = "2026-01-05T10:00:00Z";
const HOUR = 3_600_000;
/** Tomorrow 14:00 UTC: the busy technician's ServiceTitan appointment runs 14:00–16:00. */
const appointmentStart = new Date(Date.now() + 86_400_000);
appointmentStart.setUTCHours(14, 0, 0, 0);

let owner: RegisteredUser;
const agentOf = new Map<number, string>();

async function applyFullPage(tenant: string, table: string, records: unknown[]): Promise<void> {
  const { rows } = await rootPool().query<{ run_id: string }>("select run_id from app_private.st_begin_sync($1, $2, 'full')", [tenant, table]);
  await rootPool().query("select app_private.st_apply_page($1, $2::jsonb, 'token', false)", [rows[0]!.run_id, JSON.stringify(records)]);
}

async function newLead(at: Date, n: number): Promise<string> {
  const { rows } = await rootPool().query(
    "insert into app_public.leads (tenant_id, first_name, phone, service_line, appointment_at) values ($1, 'Pat', $2, 'plumbing', $3) returning id",
    [owner.tenant_id, `+1602555${String(1000 + n).padStart(4, "0")}`, at],
  );
  return rows[0].id;
}

/** Routes every lead at once, each on its own connection; returns the pending offers they made. */
async function routeConcurrently(leads: string[]): Promise<Array<{ lead_id: string; agent_id: string }>> {
  const clients = await Promise.all(leads.map(() => rootPool().connect()));
  try {
    await Promise.all(leads.map((id, i) => clients[i]!.query("select app_private.route_lead($1, $2, 'manual')", [owner.tenant_id, id])));
  } finally {
    for (const c of clients) c.release();
  }
  const { rows } = await rootPool().query("select lead_id, agent_id from app_public.routing_offers where lead_id = any ($1) and status = 'pending'", [leads]);
  return rows;
}

beforeAll(async () => {
  const root = await rootPool().connect();
  try {
    owner = await registerUser(root, { businessName: "Concurrent Plumbing" });
  } finally {
    root.release();
  }
  const t = owner.tenant_id!;
  await rootPool().query("insert into app_public.service_titan_skill_lines (tenant_id, skill_name, service_line) values ($1, 'Plumbing Service', 'plumbing')", [t]);
  const plumbing = [{ id: 302, name: "Plumbing Service" }, { id: 310, name: "Drain Cleaning" }, { id: 305, name: "EPA 608 Certified" }];
  await applyFullPage(t, "st_technicians", [1, 2, 3].map((id) => ({ id, name: `Tech ${id}`, active: true, modifiedOn: stamp, skills: plumbing })));
  const end = new Date(appointmentStart.getTime() + 2 * HOUR);
  await applyFullPage(t, "st_appointments", [{ id: 900, jobId: 800, start: appointmentStart.toISOString(), end: end.toISOString(), status: "Scheduled", active: true, modifiedOn: stamp }]);
  await applyFullPage(t, "st_appointment_assignments", [{ id: 700, appointmentId: 900, technicianId: 1, jobId: 800, active: true, modifiedOn: stamp }]);
  const { rows } = await rootPool().query("select id, external_id from app_public.agents where tenant_id = $1 and external_source = 'servicetitan'", [t]);
  for (const r of rows) agentOf.set(Number(r.external_id), r.id);
  expect(agentOf.size).toBe(3);
});

describe("technicians under concurrent routing", () => {
  it("eight leads for the same hour routed at once: each free technician gets exactly one, the technician on an appointment none", async () => {
    const at = new Date(appointmentStart.getTime() + HOUR); // 15:00, inside technician 1's appointment
    const leads = await Promise.all(Array.from({ length: 8 }, (_, i) => newLead(new Date(at.getTime() + i * 60_000), i)));
    const offers = await routeConcurrently(leads);
    const agents = offers.map((o) => o.agent_id).sort();
    expect(agents).toEqual([agentOf.get(2)!, agentOf.get(3)!].sort());
    // Each lead got at most one offer, and the other six were routed without one (queued or unassigned, with reasons).
    expect(new Set(offers.map((o) => o.lead_id)).size).toBe(2);
    const { rows } = await rootPool().query(
      "select distinct on (lead_id) lead_id, outcome from app_public.lead_routing_history where lead_id = any ($1) order by lead_id, id desc",
      [leads],
    );
    expect(rows).toHaveLength(8);
    expect(rows.filter((r) => r.outcome === "offered")).toHaveLength(2);
  });

  it("eight leads at hours that do not overlap, routed at once, are all offered, none to a technician twice at one time", async () => {
    // From 20:00 on, three hours apart: appointments of 120 minutes never overlap, and nobody is on ServiceTitan then.
    const first = appointmentStart.getTime() + 6 * HOUR;
    const leads = await Promise.all(Array.from({ length: 8 }, (_, i) => newLead(new Date(first + i * 3 * HOUR), 100 + i)));
    const offers = await routeConcurrently(leads);
    expect(offers).toHaveLength(8);
    expect(new Set(offers.map((o) => o.lead_id)).size).toBe(8);
    const { rows: overlapping } = await rootPool().query(
      `select count(*)::int as n
         from app_public.routing_offers o1
         join app_public.leads l1 on l1.id = o1.lead_id
         join app_public.routing_offers o2 on o2.agent_id = o1.agent_id and o2.id < o1.id and o2.status = 'pending'
         join app_public.leads l2 on l2.id = o2.lead_id
        where o1.tenant_id = $1 and o1.status = 'pending' and abs(extract(epoch from l1.appointment_at - l2.appointment_at)) < 7200`,
      [owner.tenant_id],
    );
    expect(overlapping[0].n).toBe(0);
  });
});

describe("skill mappings", () => {
  async function lines(client: pg.ClientBase, technician: number): Promise<string[]> {
    const { rows } = await client.query(
      "select array_agg(service_line::text order by service_line) as l from app_public.agent_specializations where agent_id = $1 and source = 'servicetitan'",
      [agentOf.get(technician)],
    );
    return rows[0].l;
  }
  async function rederivations(client: pg.ClientBase): Promise<number> {
    const { rows } = await client.query("select pg_stat_get_xact_function_calls('app_private.st_sync_technician_agents'::regproc)::int as n");
    return rows[0].n;
  }

  it("inserting, changing and deleting several mappings in one statement re-derives the technicians once per statement", async () => {
    const client = await rootPool().connect();
    try {
      await client.query("begin");
      await client.query("set local track_functions = 'pl'");
      // Unmapped skills are their own lines, named after the skill.
      expect(await lines(client, 2)).toEqual(["drain_cleaning", "epa_608_certified", "plumbing"]);

      await client.query(
        "insert into app_public.service_titan_skill_lines (tenant_id, skill_name, service_line) values ($1, 'Drain Cleaning', 'drains'), ($1, 'EPA 608 Certified', 'hvac')",
        [owner.tenant_id],
      );
      expect(await rederivations(client)).toBe(1);
      expect(await lines(client, 2)).toEqual(["drains", "hvac", "plumbing"]);

      await client.query("update app_public.service_titan_skill_lines set service_line = 'sewer' where tenant_id = $1 and skill_name in ('Drain Cleaning', 'EPA 608 Certified')", [owner.tenant_id]);
      expect(await rederivations(client)).toBe(2);
      expect(await lines(client, 2)).toEqual(["plumbing", "sewer"]);

      await client.query("delete from app_public.service_titan_skill_lines where tenant_id = $1 and skill_name in ('Drain Cleaning', 'EPA 608 Certified')", [owner.tenant_id]);
      expect(await rederivations(client)).toBe(3);
      expect(await lines(client, 2)).toEqual(["drain_cleaning", "epa_608_certified", "plumbing"]);

      // A statement that changes no row still runs the trigger, and re-derives nobody.
      await client.query("delete from app_public.service_titan_skill_lines where tenant_id = $1 and skill_name = 'No Such Skill'", [owner.tenant_id]);
      expect(await rederivations(client)).toBe(3);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});
