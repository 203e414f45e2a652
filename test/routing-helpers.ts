/**
 * Shared setup for routing tests: agents with availability, specializations, service areas, calendar
 * slots and performance metrics; leads; tenant routing settings; committed tenants for parallel tests.
 * Everything is written as root (call becomeRoot first, or use a root pool client).
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { addMember, becomeRoot, db, poolFor, registerUser, rootPool, type RegisteredUser } from "./helpers.ts";

export interface SpecializationSpec {
  service_line: string;
  customer_segment?: string;
  proficiency?: number;
  languages?: string[];
  territories?: string[];
}

export interface AreaSpec {
  kind: "region" | "city" | "postal_code" | "radius";
  region?: string;
  city?: string;
  postal_code?: string;
  center_latitude?: number;
  center_longitude?: number;
  radius_miles?: number;
}

export interface AgentSpec {
  name: string;
  userId?: string | null;
  weight?: number;
  languages?: string[];
  isActive?: boolean;
  /** Availability row; null: none at all. */
  status?: "available" | "in_call" | "break" | "training" | "offline" | null;
  load?: number;
  capacity?: number;
  /** Default: one 'auto' specialization for any segment. */
  specializations?: SpecializationSpec[];
  areas?: AreaSpec[];
  slots?: { date: string; start?: string; end?: string; status?: "free" | "booked" | "blocked" }[];
  /** Latest month's conversion rates by tier. */
  metrics?: { hot?: number; warm?: number; cold?: number };
}

export async function createAgent(client: pg.ClientBase, tenantId: string, spec: AgentSpec): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    `insert into app_public.agents (tenant_id, user_id, display_name, routing_weight, languages, is_active)
     values ($1, $2, $3, $4, $5, $6) returning id`,
    [tenantId, spec.userId ?? null, spec.name, spec.weight ?? 1, spec.languages ?? ["en", "es"], spec.isActive ?? true],
  );
  const id = rows[0]!.id;
  if (spec.status !== null) {
    await client.query(
      "insert into app_public.agent_availability (tenant_id, agent_id, status, current_load, max_capacity) values ($1, $2, $3, $4, $5)",
      [tenantId, id, spec.status ?? "available", spec.load ?? 0, spec.capacity ?? 5],
    );
  }
  for (const s of spec.specializations ?? [{ service_line: "auto" }]) {
    await client.query(
      `insert into app_public.agent_specializations (tenant_id, agent_id, service_line, customer_segment, proficiency, languages, territories)
       values ($1, $2, $3, $4, $5, $6, $7)`,
      [tenantId, id, s.service_line, s.customer_segment ?? "any", s.proficiency ?? 3, s.languages ?? [], s.territories ?? []],
    );
  }
  for (const a of spec.areas ?? []) {
    await client.query(
      `insert into app_public.agent_service_areas (tenant_id, agent_id, kind, region, city, postal_code, center_latitude, center_longitude, radius_miles)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [tenantId, id, a.kind, a.region ?? null, a.city ?? null, a.postal_code ?? null, a.center_latitude ?? null, a.center_longitude ?? null, a.radius_miles ?? null],
    );
  }
  for (const s of spec.slots ?? []) {
    await client.query(
      "insert into app_public.availability_slots (tenant_id, agent_id, slot_date, start_time, end_time, status) values ($1, $2, $3, $4, $5, $6)",
      [tenantId, id, s.date, s.start ?? "00:00", s.end ?? "23:59", s.status ?? "free"],
    );
  }
  if (spec.metrics) {
    await client.query(
      `insert into app_public.agent_performance_metrics (tenant_id, agent_id, period, period_start, conversion_rate_hot, conversion_rate_warm, conversion_rate_cold)
       values ($1, $2, 'month', date_trunc('month', now()), $3, $4, $5)`,
      [tenantId, id, spec.metrics.hot ?? null, spec.metrics.warm ?? null, spec.metrics.cold ?? null],
    );
  }
  return id;
}

export interface LeadSpec {
  first_name?: string;
  phone?: string | null;
  email?: string | null;
  service_line?: string | null;
  customer_segment?: string | null;
  language?: string;
  city?: string | null;
  region?: string | null;
  postal_code?: string | null;
  event_date?: string | null;
  tags?: string[];
  status?: string;
  attributes?: Record<string, unknown>;
  lead_score?: number;
}

export async function createLead(client: pg.ClientBase, tenantId: string, spec: LeadSpec = {}): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    `insert into app_public.leads (tenant_id, first_name, phone, email, service_line, customer_segment, language, city, region, postal_code,
                                   event_date, tags, status, attributes)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) returning id`,
    [
      tenantId,
      spec.first_name ?? "Lead",
      spec.phone ?? null,
      spec.email === undefined ? `lead-${randomUUID().slice(0, 12)}@example.test` : spec.email,
      spec.service_line === undefined ? "auto" : spec.service_line,
      spec.customer_segment ?? null,
      spec.language ?? "en",
      spec.city ?? null,
      spec.region ?? null,
      spec.postal_code ?? null,
      spec.event_date ?? null,
      spec.tags ?? [],
      spec.status ?? "new",
      JSON.stringify(spec.attributes ?? {}),
    ],
  );
  if (spec.lead_score !== undefined) {
    await client.query("update app_public.leads set lead_score = $2 where id = $1", [rows[0]!.id, spec.lead_score]);
  }
  return rows[0]!.id;
}

/** Sets a tenant's system_config value (JSON text such as 'true', '60', '"least_loaded"'). */
export async function setRoutingConfig(client: pg.ClientBase, tenantId: string, key: string, json: string): Promise<void> {
  const value = JSON.parse(json) as unknown;
  const type = typeof value === "object" ? "json" : typeof value;
  await client.query(
    `insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, $2, $3::jsonb, $4)
     on conflict (tenant_id, key) do update set value = excluded.value, value_type = excluded.value_type`,
    [tenantId, key, json, type],
  );
}

export interface HistoryRow {
  id: string;
  outcome: string;
  reason: string | null;
  strategy: string | null;
  rule_id: string | null;
  experiment_id: string | null;
  variant_id: string | null;
  chosen_agent_id: string | null;
  candidates: Candidate[];
}

export interface Candidate {
  agent_id: string;
  name: string;
  checks: Record<string, boolean>;
  reasons: Record<string, string>;
  eligible: boolean;
  score: number | null;
  rank: number | null;
  /** Weighted round robin: the virtual time of the agent's next lead (lower goes first). */
  pass?: number;
  lock?: string;
}

/** app_private.route_lead as root; returns the history row. */
export async function routeAsSystem(client: pg.ClientBase, tenantId: string, leadId: string, trigger = "new_lead"): Promise<HistoryRow> {
  const { rows: ids } = await client.query<{ id: string }>("select app_private.route_lead($1, $2, $3) as id", [tenantId, leadId, trigger]);
  const { rows } = await client.query<HistoryRow>("select h.* from app_public.lead_routing_history h where h.id = $1", [ids[0]!.id]);
  return rows[0]!;
}

/** Deletes a committed test tenant with its users and the jobs its routing enqueued. */
export async function dropCommittedTenant(tenantId: string, userIds: string[]): Promise<void> {
  const client = await rootPool().connect();
  try {
    await client.query(
      `delete from graphile_worker._private_jobs j
        where j.payload->>'offer_id' in (select o.id::text from app_public.routing_offers o where o.tenant_id = $1)
           or j.payload->>'lead_id' in (select l.id::text from app_public.leads l where l.tenant_id = $1)
           or j.payload->>'tenant_id' = $1::text`,
      [tenantId],
    );
    // availability_slots' lead foreign keys set the lead to null on delete, which their own checks refuse
    // (a lock needs a lead, a booking names its lead): release them first.
    await client.query(
      "update app_public.availability_slots set locked_until = null, locked_by_lead_id = null, booked_lead_id = null, status = case when status = 'booked' then 'free' else status end where tenant_id = $1",
      [tenantId],
    );
    await client.query("delete from app_public.tenants where id = $1", [tenantId]);
    await client.query("delete from app_public.users where id = any($1)", [userIds]);
  } finally {
    client.release();
  }
}

/** A committed tenant (owner, manager, agents) for tests that route from parallel connections; drop it with dropCommittedTenant. */
export async function committedTenant(label: string, agents: (i: number) => Parameters<typeof createAgent>[2], count: number) {
  const root = await rootPool().connect();
  try {
    const owner = await registerUser(root, { businessName: label });
    const manager = await addMember(root, owner.tenant_id!, "manager");
    await becomeRoot(root);
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push(await createAgent(root, owner.tenant_id!, agents(i)));
    return { owner, manager, tenantId: owner.tenant_id!, agents: ids };
  } finally {
    root.release();
  }
}

/** Runs fn on `connections` API connections as the manager, each call in its own transaction, all starting together. */
export async function inParallel<T>(manager: RegisteredUser, connections: number, fn: (client: pg.PoolClient, worker: number) => Promise<T>): Promise<T[]> {
  const pool = poolFor(db.authUrl, 40);
  const clients = await Promise.all(Array.from({ length: connections }, () => pool.connect()));
  try {
    return await Promise.all(clients.map((client, w) => fn(client, w)));
  } finally {
    clients.forEach((c) => c.release());
  }
}

/** Routes a lead as the manager through app_public.route_lead, in a transaction of its own on this connection. */
export async function routeInTransaction(client: pg.ClientBase, manager: RegisteredUser, leadId: string): Promise<{ outcome: string; reason: string }> {
  await client.query("begin");
  try {
    await client.query(`set local role ${pg.escapeIdentifier(db.roles.visitor)}`);
    await client.query(
      "select set_config('app.current_user_id', $1, true), set_config('app.current_tenant_id', $2, true), set_config('app.current_session_id', $3, true)",
      [manager.user_id, manager.tenant_id, manager.session_id],
    );
    const { rows } = await client.query("select outcome, reason from app_public.route_lead($1)", [leadId]);
    await client.query("commit");
    return rows[0];
  } catch (error) {
    await client.query("rollback");
    throw error;
  }
}

/** n leads of a spec, committed. */
export async function createLeads(tenantId: string, n: number, spec: Parameters<typeof createLead>[2] = {}): Promise<string[]> {
  const root = await rootPool().connect();
  try {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) ids.push(await createLead(root, tenantId, spec));
    return ids;
  } finally {
    root.release();
  }
}
