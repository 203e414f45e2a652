-- Issue 15, point 1: the pool of ready agents. Routing in teams of more than 10 agents reads its
-- candidates from app_private.routing_pool, in the strategy's order, through indexes, and checks only
-- the few it reads (batches of 10); the pool is kept by triggers on everything it copies.

create table if not exists app_private.routing_pool (
  tenant_id uuid not null,
  agent_id uuid not null,
  line text not null,
  area_key text not null,
  state text not null,
  pass numeric not null,
  weight integer not null,
  load_ratio numeric not null,
  proficiency integer not null,
  conv_hot numeric not null,
  conv_warm numeric not null,
  conv_cold numeric not null,
  multi_kind boolean not null default false,
  constraint routing_pool_pkey primary key (tenant_id, line, area_key, agent_id),
  constraint routing_pool_agent_must_exist foreign key (agent_id) references app_public.agents (id) on delete cascade,
  constraint routing_pool_state_must_be_known check (state in ('ready', 'unavailable', 'off_duty', 'at_capacity', 'at_cap'))
);
comment on table app_private.routing_pool is 'The routing pool: one row per active agent, service line it can take (the empty line: leads without one, which every agent can take) and area key it serves (app_hidden.routing_area_keys; * for an agent without service areas, - for one whose areas match no lead), with the agent''s readiness and what the strategies order by. Kept by triggers on agents, agent_specializations, agent_service_areas (rows rebuilt: app_private.routing_pool_build) and on agent_availability, agent_routing_credits, agent_performance_metrics, agent_working_hours, agent_time_off, holidays and business_settings (state refreshed: app_private.routing_pool_sync); states that change with the clock (working hours, caps of a new day or week) are refreshed every minute by routing__duty_drain. A pre-filter only: route_lead still checks every agent it reads in full.';
comment on column app_private.routing_pool.tenant_id is 'The agent''s tenant.';
comment on column app_private.routing_pool.agent_id is 'The agent.';
comment on column app_private.routing_pool.line is 'A service line the agent has a specialization in, or the empty string: the row for leads without a service line.';
comment on column app_private.routing_pool.area_key is 'An area key the agent serves (r:<country>:<REGION>, c:<city>, p:<POSTAL CODE>, g:<lat cell>:<lon cell> for the half-degree cells a radius covers, g:* for a radius too wide for cells), * for an agent without service areas, or - for one whose areas match no lead.';
comment on column app_private.routing_pool.state is 'ready (available, under capacity, under its caps, on duty), unavailable (status not available, or no availability row), off_duty (working hours, time off, a holiday), at_capacity or at_cap (its daily or weekly cap reached): the first that applies, in the order of the routing checks.';
comment on column app_private.routing_pool.pass is 'The agent''s round-robin pass (agent_routing_credits.pass, or one stride for an agent without a ledger row).';
comment on column app_private.routing_pool.weight is 'The agent''s routing_weight (round-robin ties go to the heavier agent).';
comment on column app_private.routing_pool.load_ratio is 'current_load / max_capacity (least_loaded).';
comment on column app_private.routing_pool.proficiency is 'The agent''s best proficiency in the line (for the empty line: in any line, 3 without specializations) (best_match).';
comment on column app_private.routing_pool.conv_hot is 'The agent''s latest conversion rate of hot leads, 0.5 when unknown (best_match, score_tiered).';
comment on column app_private.routing_pool.conv_warm is 'The agent''s latest conversion rate of warm leads, 0.5 when unknown (best_match).';
comment on column app_private.routing_pool.conv_cold is 'The agent''s latest conversion rate of cold leads, 0.5 when unknown (best_match).';
comment on column app_private.routing_pool.multi_kind is 'Whether the agent''s area keys are of more than one kind (region, city, postal code, cell, wide radius): only such an agent can serve a lead under two of its keys, so only these are read to count agents once.';

create table if not exists app_private.routing_pool_tally (
  tenant_id uuid not null,
  line text not null,
  area_key text not null,
  agents integer not null,
  constraint routing_pool_tally_pkey primary key (tenant_id, line, area_key),
  constraint routing_pool_tally_agents_must_not_be_negative check (agents >= 0)
);
comment on table app_private.routing_pool_tally is 'How many active agents of a tenant can take each line (area_key empty; the empty line: every active agent), and how many of those serve each area key of the routing pool, kept by app_private.routing_pool_build. Lets a routing decision count the agents that fail the skill and area checks without reading the team. Changes only when agents, their specializations or their areas change, never on a routing decision; a tally that falls to 0 is deleted (so a deleted tenant, whose agents go first, leaves none).';
comment on column app_private.routing_pool_tally.tenant_id is 'The tenant.';
comment on column app_private.routing_pool_tally.line is 'A service line, or the empty string: every active agent.';
comment on column app_private.routing_pool_tally.area_key is 'An area key of the routing pool, or the empty string: every agent with the line, whatever its areas.';
comment on column app_private.routing_pool_tally.agents is 'How many agents.';
alter table app_private.routing_pool_tally enable row level security;
alter table app_private.routing_pool_tally force row level security;
drop policy if exists owner_all on app_private.routing_pool_tally;
create policy owner_all on app_private.routing_pool_tally for all to :DATABASE_OWNER using (true) with check (true);

create index if not exists routing_pool_agent_idx on app_private.routing_pool (agent_id);
create index if not exists routing_pool_round_robin_order on app_private.routing_pool (tenant_id, line, area_key, pass, weight desc, agent_id) where state = 'ready';
create index if not exists routing_pool_least_loaded_order on app_private.routing_pool (tenant_id, line, area_key, load_ratio, pass, agent_id) where state = 'ready';
create index if not exists routing_pool_multi_kind on app_private.routing_pool (tenant_id, line, area_key, agent_id) where multi_kind;
comment on index app_private.routing_pool_multi_kind is 'The agents of a line and area key whose areas are of several kinds: those a count of agents per area key would count twice.';
create index if not exists routing_pool_not_ready on app_private.routing_pool (tenant_id, line, area_key, state, agent_id) where state <> 'ready';
comment on index app_private.routing_pool_not_ready is 'The agents of a line and area key that are not ready: what a routing decision counts per failing check.';
comment on index app_private.routing_pool_round_robin_order is 'The ready agents of a line and area key in round-robin order (lowest pass first, then the heavier, then by id): the next candidates of weighted_round_robin in one index range.';
comment on index app_private.routing_pool_least_loaded_order is 'The ready agents of a line and area key, least loaded first: the next candidates of least_loaded in one index range.';

alter table app_private.routing_pool enable row level security;
alter table app_private.routing_pool force row level security;
drop policy if exists owner_all on app_private.routing_pool;
create policy owner_all on app_private.routing_pool for all to :DATABASE_OWNER using (true) with check (true);

--!include routing/tenant_has_schedules.sql
--!include routing/routing_area_keys.sql
--!include routing/routing_lead_area_keys.sql
--!include routing/routing_pool_state.sql
--!include routing/routing_pool_tally_add.sql
--!include routing/routing_pool_build.sql
--!include routing/routing_pool_sync.sql
--!include routing/tg_routing_pool__build.sql
--!include routing/tg_routing_pool__sync.sql
--!include routing/tg_routing_pool__pass.sql
--!include routing/tg_routing_pool__sync_tenant.sql

drop trigger if exists _500_routing_pool on app_public.agents;
create trigger _500_routing_pool after insert or update of is_active on app_public.agents
  for each row execute function app_private.tg_routing_pool__build();
drop trigger if exists _500_routing_pool_before_delete on app_public.agents;
create trigger _500_routing_pool_before_delete before delete on app_public.agents
  for each row execute function app_private.tg_routing_pool__build();
drop trigger if exists _510_routing_pool_state on app_public.agents;
create trigger _510_routing_pool_state after update of routing_weight, daily_cap, weekly_cap, timezone on app_public.agents
  for each row execute function app_private.tg_routing_pool__sync();
drop trigger if exists _500_routing_pool on app_public.agent_specializations;
create trigger _500_routing_pool after insert or update or delete on app_public.agent_specializations
  for each row execute function app_private.tg_routing_pool__build();
drop trigger if exists _500_routing_pool on app_public.agent_service_areas;
create trigger _500_routing_pool after insert or update or delete on app_public.agent_service_areas
  for each row execute function app_private.tg_routing_pool__build();
drop trigger if exists _500_routing_pool on app_public.agent_availability;
create trigger _500_routing_pool after insert or update or delete on app_public.agent_availability
  for each row execute function app_private.tg_routing_pool__sync();
drop trigger if exists _500_routing_pool on app_public.agent_routing_credits;
create trigger _500_routing_pool after insert or update of pass or delete on app_public.agent_routing_credits
  for each row execute function app_private.tg_routing_pool__pass();
drop trigger if exists _500_routing_pool on app_public.agent_performance_metrics;
create trigger _500_routing_pool after insert or update or delete on app_public.agent_performance_metrics
  for each row execute function app_private.tg_routing_pool__sync();
drop trigger if exists _500_routing_pool on app_public.agent_working_hours;
create trigger _500_routing_pool after insert or update or delete on app_public.agent_working_hours
  for each row execute function app_private.tg_routing_pool__sync();
drop trigger if exists _500_routing_pool on app_public.agent_time_off;
create trigger _500_routing_pool after insert or update or delete on app_public.agent_time_off
  for each row execute function app_private.tg_routing_pool__sync();
drop trigger if exists _500_routing_pool on app_public.holidays;
create trigger _500_routing_pool after insert or update or delete on app_public.holidays
  for each row execute function app_private.tg_routing_pool__sync_tenant();
drop trigger if exists _500_routing_pool on app_public.business_settings;
create trigger _500_routing_pool after update of timezone on app_public.business_settings
  for each row execute function app_private.tg_routing_pool__sync_tenant();

-- Every active agent of every tenant, once.
select pg_catalog.count(app_private.routing_pool_build(a.tenant_id, a.id)) from app_public.agents a
 where not exists (select 1 from app_private.routing_pool p where p.agent_id = a.id);

-- Routing reads large teams from the pool.
drop function if exists app_private.routing_claim(app_private.routing_context, uuid[]);
drop function if exists app_private.routing_record(app_private.routing_context, jsonb, jsonb, uuid, uuid, text, text, uuid, timestamptz, text);
--!include routing/routing_try_agent.sql
--!include routing/routing_claim.sql
--!include routing/routing_record.sql
--!include routing/routing_candidates.sql
--!include routing/agent_timezone.sql
--!include routing/routing_pool_next.sql
--!include routing/routing_pool_counts.sql
--!include routing/routing_search.sql
--!include routing/route_lead.sql
--!include routing/explain_routing.sql
--!include routing/routing_pool_refresh_timed.sql
--!include routing/drain_queues_coming_on_duty.sql
