--! Previous: sha1:e28474644808ef445fa1fc5b748b9fa217c7b812
--! Hash: sha1:d6deb1828f3c9d48193fd11f5d249eab368da6a3
--! Message: Routing at real size: the routing pool. Teams of more than 10 agents read their candidates from app_private.routing_pool (ready agents by service line and area key, kept by triggers, refreshed every minute for the clock) in the strategy's order, 10 at a time, checked in full; the others are counted from tallies. A candidate turned down under its lock is released.

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
  constraint routing_pool_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
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

--! Included routing/tenant_has_schedules.sql
create or replace function app_hidden.tenant_has_schedules(tenant_id uuid) returns boolean
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- PL/pgSQL rather than SQL: its plan is kept for the session (routing calls this on every decision).
  return exists (select 1 from app_public.agent_working_hours w where w.tenant_id = tenant_has_schedules.tenant_id)
      or exists (select 1 from app_public.agent_time_off t
                  where t.tenant_id = tenant_has_schedules.tenant_id and t.starts_at <= pg_catalog.now() and t.ends_at > pg_catalog.now())
      or exists (select 1 from app_public.holidays h
                  where h.tenant_id = tenant_has_schedules.tenant_id and h.day between current_date - 1 and current_date + 1);
end;
$$;

comment on function app_hidden.tenant_has_schedules(uuid) is 'Whether any agent of the tenant can be off duty now: the tenant has working hours, time off covering this moment, or a holiday within a day of today (a day either side covers every time zone). Most tenants have none, and then routing does not check schedules agent by agent.';
--! EndIncluded routing/tenant_has_schedules.sql
--! Included routing/routing_area_keys.sql
create or replace function app_hidden.routing_area_keys(kind text, country text, region text, city text, postal_code text,
  center_latitude numeric, center_longitude numeric, radius_miles numeric) returns text[]
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_dlat float8;
  v_dlon float8;
  v_lat_lo int;
  v_lat_hi int;
  v_lon_lo int;
  v_lon_hi int;
  v_keys text[] := '{}';
begin
  case kind
    when 'region' then
      if country is not null and region is not null then
        v_keys := array['r:' || country || ':' || pg_catalog.upper(region)];
      end if;
    when 'city' then
      if city is not null then
        v_keys := array['c:' || pg_catalog.lower(city)];
      end if;
    when 'postal_code' then
      if postal_code is not null then
        v_keys := array['p:' || pg_catalog.upper(pg_catalog.btrim(postal_code))];
      end if;
    when 'radius' then
      if center_latitude is null or center_longitude is null or radius_miles is null then
        return v_keys;
      end if;
      -- The half-degree cells the bounding box of the circle touches: a superset of the points within
      -- reach (a degree of latitude is at least 68.7 miles; a degree of longitude is shortest at the
      -- edge of the box nearest a pole, so the box is as wide as it must be there).
      v_dlat := radius_miles::float8 / 68.7;
      v_dlon := radius_miles::float8 / (69.2 * pg_catalog.cos(pg_catalog.radians(
                  least(89.0, pg_catalog.abs(center_latitude::float8) + v_dlat))));
      v_lat_lo := pg_catalog.floor((center_latitude::float8 - v_dlat) * 2)::int;
      v_lat_hi := pg_catalog.floor((center_latitude::float8 + v_dlat) * 2)::int;
      v_lon_lo := pg_catalog.floor((center_longitude::float8 - v_dlon) * 2)::int;
      v_lon_hi := pg_catalog.floor((center_longitude::float8 + v_dlon) * 2)::int;
      if (v_lat_hi - v_lat_lo + 1) * (v_lon_hi - v_lon_lo + 1) > 256
         or center_longitude::float8 - v_dlon < -180 or center_longitude::float8 + v_dlon >= 180
         or pg_catalog.abs(center_latitude::float8) + v_dlat >= 89 then
        -- Too wide for cells (or across the antimeridian or a pole): looked at for every lead with coordinates.
        v_keys := array['g:*'];
      else
        select pg_catalog.array_agg('g:' || i || ':' || j order by i, j) into v_keys
          from pg_catalog.generate_series(v_lat_lo, v_lat_hi) i, pg_catalog.generate_series(v_lon_lo, v_lon_hi) j;
      end if;
    else
      null;
  end case;
  return v_keys;
end;
$$;

comment on function app_hidden.routing_area_keys(text, text, text, text, text, numeric, numeric, numeric) is 'The keys under which an agent_service_areas row puts its agent in the routing pool: r:<country>:<REGION> for a region (none without a country: such an area matches no lead), c:<lower-case city> for a city (its region is checked when the agent is examined), p:<POSTAL CODE> (trimmed, upper case), and for a radius the half-degree cells g:<floor(lat*2)>:<floor(lon*2)> its bounding box touches, or g:* when that is more than 256 cells or crosses the antimeridian or a pole. A superset: route_lead checks the exact area (distance, region) of every agent it reads. app_hidden.routing_lead_area_keys gives the matching keys of a lead.';
--! EndIncluded routing/routing_area_keys.sql
--! Included routing/routing_lead_area_keys.sql
create or replace function app_hidden.routing_lead_area_keys(country text, region text, city text, postal_code text, latitude numeric, longitude numeric) returns text[]
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select array['*']
    || case when country is not null and region is not null then array['r:' || country || ':' || pg_catalog.upper(region)] else '{}'::text[] end
    || case when city is not null then array['c:' || pg_catalog.lower(city)] else '{}'::text[] end
    || case when postal_code is not null then array['p:' || pg_catalog.upper(pg_catalog.btrim(postal_code))] else '{}'::text[] end
    || case when latitude is not null and longitude is not null
            then array['g:' || pg_catalog.floor(latitude * 2)::int || ':' || pg_catalog.floor(longitude * 2)::int, 'g:*'] else '{}'::text[] end;
$$;

comment on function app_hidden.routing_lead_area_keys(text, text, text, text, numeric, numeric) is 'The routing pool area keys that can serve a lead at this place: * (agents without service areas), its region, city, postal code and, with coordinates, its half-degree cell and g:* (see app_hidden.routing_area_keys).';
--! EndIncluded routing/routing_lead_area_keys.sql
--! Included routing/routing_pool_state.sql
create or replace function app_private.routing_pool_state(tenant_id uuid, agent_id uuid,
  out state text, out pass numeric, out weight integer, out load_ratio numeric, out conv_hot numeric, out conv_warm numeric, out conv_cold numeric)
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- PL/pgSQL rather than SQL: its plan is kept for the session (called on every routing decision).
  select case
           when av.agent_id is null or av.status <> 'available' then 'unavailable'
           when app_hidden.tenant_has_schedules(a.tenant_id)
                and app_hidden.agent_off_duty_reason(a.tenant_id, a.id, z.zone, pg_catalog.now()) is not null then 'off_duty'
           when av.current_load >= av.max_capacity then 'at_capacity'
           when (a.daily_cap is not null and av.cap_day = cp.day and av.cap_day_count >= a.daily_cap)
             or (a.weekly_cap is not null and av.cap_week = cp.week and av.cap_week_count >= a.weekly_cap) then 'at_cap'
           else 'ready'
         end,
         coalesce(cr.pass, 1::numeric / a.routing_weight),
         a.routing_weight,
         case when av.max_capacity > 0 then av.current_load::numeric / av.max_capacity else 1 end,
         coalesce(pm.conversion_rate_hot, 0.5),
         coalesce(pm.conversion_rate_warm, 0.5),
         coalesce(pm.conversion_rate_cold, 0.5)
    into state, pass, weight, load_ratio, conv_hot, conv_warm, conv_cold
    from app_public.agents a
    cross join lateral (select app_hidden.agent_timezone(a.tenant_id, a.id) as zone) z
    cross join lateral app_hidden.agent_cap_period(z.zone, pg_catalog.now()) cp
    left join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
    left join app_public.agent_routing_credits cr on cr.agent_id = a.id
    left join lateral (
      select m.conversion_rate_hot, m.conversion_rate_warm, m.conversion_rate_cold
        from app_public.agent_performance_metrics m
       where m.tenant_id = a.tenant_id and m.agent_id = a.id
       order by m.period_start desc, m.computed_at desc
       limit 1
    ) pm on true
   where a.tenant_id = routing_pool_state.tenant_id and a.id = routing_pool_state.agent_id;
end;
$$;

comment on function app_private.routing_pool_state(uuid, uuid) is 'What the routing pool keeps of an agent now: its state (unavailable, off_duty, at_capacity, at_cap or ready: the first that applies, by the same rules as the checks of app_private.routing_candidates), round-robin pass, weight, load ratio and latest conversion rates per tier. All null for an unknown agent.';
--! EndIncluded routing/routing_pool_state.sql
--! Included routing/routing_pool_tally_add.sql
create or replace function app_private.routing_pool_tally_add(tenant_id uuid, agent_id uuid, delta integer) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
begin
  -- One row per line of the agent (area key empty) and per line and area key, in key order so that
  -- two builds never wait for each other in a cycle. A tally at 0 goes.
  if delta < 0 then
    update app_private.routing_pool_tally t set agents = t.agents + delta
      from (select distinct p.line, k.area_key
              from app_private.routing_pool p
              cross join lateral (values (''), (p.area_key)) k(area_key)
             where p.agent_id = routing_pool_tally_add.agent_id) x
     where t.tenant_id = routing_pool_tally_add.tenant_id and t.line = x.line and t.area_key = x.area_key;
    delete from app_private.routing_pool_tally t where t.tenant_id = routing_pool_tally_add.tenant_id and t.agents = 0;
    return;
  end if;
  insert into app_private.routing_pool_tally as t (tenant_id, line, area_key, agents)
  select routing_pool_tally_add.tenant_id, x.line, x.area_key, delta
    from (select distinct p.line, k.area_key
            from app_private.routing_pool p
            cross join lateral (values (''), (p.area_key)) k(area_key)
           where p.agent_id = routing_pool_tally_add.agent_id) x
   order by x.line, x.area_key
  on conflict on constraint routing_pool_tally_pkey do update set agents = t.agents + excluded.agents;
end;
$$;

comment on function app_private.routing_pool_tally_add(uuid, uuid, integer) is 'Adds delta (1 or -1) to the tallies of app_private.routing_pool_tally for every line of the agent''s current rows of the routing pool (area key empty) and every line and area key of them. Tallies that fall to 0 are deleted. Called by app_private.routing_pool_build around its rebuild, and before an agent is deleted.';
--! EndIncluded routing/routing_pool_tally_add.sql
--! Included routing/routing_pool_build.sql
create or replace function app_private.routing_pool_build(tenant_id uuid, agent_id uuid) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := routing_pool_build.tenant_id;
  v_agent uuid := routing_pool_build.agent_id;
  v_rows integer;
begin
  -- The tallies lose the agent's lines as they were, and gain them as they are (app_private.routing_pool_tally).
  perform app_private.routing_pool_tally_add(v_tenant, v_agent, -1);
  delete from app_private.routing_pool p where p.agent_id = v_agent;
  -- Active agents only: an inactive or deleted one has no rows.
  insert into app_private.routing_pool (tenant_id, agent_id, line, area_key, state, pass, weight, load_ratio, proficiency, conv_hot, conv_warm, conv_cold, multi_kind)
  select v_tenant, v_agent, l.line, k.area_key, s.state, s.pass, s.weight, s.load_ratio, l.proficiency, s.conv_hot, s.conv_warm, s.conv_cold,
         k.multi_kind
    from app_private.routing_pool_state(v_tenant, v_agent) s
    join app_public.agents a on a.tenant_id = v_tenant and a.id = v_agent and a.is_active
    -- The lines: every service line of a specialization, and the empty line (leads without one).
    cross join lateral (
      select '' as line, coalesce(pg_catalog.max(sp.proficiency), 3) as proficiency
        from app_public.agent_specializations sp where sp.tenant_id = v_tenant and sp.agent_id = v_agent
      union all
      select sp.service_line, pg_catalog.max(sp.proficiency)
        from app_public.agent_specializations sp where sp.tenant_id = v_tenant and sp.agent_id = v_agent
       group by sp.service_line
    ) l
    -- The area keys: * without service areas; - when the areas give no key (they match no lead);
    -- whether they are of several kinds (a lead may then be served under two of them).
    cross join lateral (
      select distinct u.area_key, ak.kinds > 1 as multi_kind
        from (select pg_catalog.count(*) as n,
                     pg_catalog.array_agg(x.area_key) filter (where x.area_key is not null) as area_keys,
                     -- Kinds of key: r, c, p, g (a cell) and w (g:*, a wide radius).
                     pg_catalog.count(distinct case when x.area_key = 'g:*' then 'w' else pg_catalog.left(x.area_key, 1) end) as kinds
                from app_public.agent_service_areas z
                left join lateral pg_catalog.unnest(app_hidden.routing_area_keys(z.kind, z.country, z.region, z.city, z.postal_code,
                            z.center_latitude, z.center_longitude, z.radius_miles)) x(area_key) on true
               where z.tenant_id = v_tenant and z.agent_id = v_agent) ak
        cross join lateral pg_catalog.unnest(case when ak.n = 0 then array['*'] else coalesce(ak.area_keys, array['-']) end) u(area_key)
    ) k;
  get diagnostics v_rows = row_count;
  perform app_private.routing_pool_tally_add(v_tenant, v_agent, 1);
  return v_rows;
end;
$$;

comment on function app_private.routing_pool_build(uuid, uuid) is 'Rebuilds an agent''s rows of app_private.routing_pool: one per line it can take (the empty line and each service line of its specializations, with its best proficiency there) and area key it serves, with its state (app_private.routing_pool_state), and the tallies of agents per line (app_private.routing_pool_tally); none for an inactive or deleted agent. Returns the number of rows. Called by the triggers on agents, agent_specializations and agent_service_areas.';
--! EndIncluded routing/routing_pool_build.sql
--! Included routing/routing_pool_sync.sql
create or replace function app_private.routing_pool_sync(tenant_id uuid, agent_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_agent uuid := routing_pool_sync.agent_id;
  v_old text;
  v_new record;
begin
  select p.state into v_old from app_private.routing_pool p where p.agent_id = v_agent limit 1;
  if v_old is null then
    return false;
  end if;
  select * into v_new from app_private.routing_pool_state(routing_pool_sync.tenant_id, v_agent);
  if v_new.state is null then
    return false;
  end if;
  update app_private.routing_pool p
     set state = v_new.state, pass = v_new.pass, weight = v_new.weight, load_ratio = v_new.load_ratio,
         conv_hot = v_new.conv_hot, conv_warm = v_new.conv_warm, conv_cold = v_new.conv_cold
   where p.agent_id = v_agent
     and (p.state, p.pass, p.weight, p.load_ratio, p.conv_hot, p.conv_warm, p.conv_cold)
         is distinct from (v_new.state, v_new.pass, v_new.weight, v_new.load_ratio, v_new.conv_hot, v_new.conv_warm, v_new.conv_cold);
  return v_old <> 'ready' and v_new.state = 'ready';
end;
$$;

comment on function app_private.routing_pool_sync(uuid, uuid) is 'Refreshes the state, round-robin pass, weight, load ratio and conversion rates of an agent''s rows of app_private.routing_pool (app_private.routing_pool_state); returns true when the agent has just become ready. Rows are only written when something changed. Called by the triggers on agent_availability, agent_routing_credits, agent_performance_metrics, agent_working_hours, agent_time_off, holidays and business_settings, and every minute for states that change with the clock (app_private.routing_pool_refresh_timed).';
--! EndIncluded routing/routing_pool_sync.sql
--! Included routing/tg_routing_pool__build.sql
create or replace function app_private.tg_routing_pool__build() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if tg_table_name = 'agents' then
    if tg_op = 'DELETE' then
      -- Before the agent goes (its rows would go with it, uncounted).
      perform app_private.routing_pool_tally_add(old.tenant_id, old.id, -1);
      delete from app_private.routing_pool p where p.agent_id = old.id;
      return old;
    end if;
    perform app_private.routing_pool_build(new.tenant_id, new.id);
    return null;
  end if;
  if tg_op in ('UPDATE', 'DELETE') then
    perform app_private.routing_pool_build(old.tenant_id, old.agent_id);
  end if;
  if tg_op = 'INSERT' or (tg_op = 'UPDATE' and new.agent_id is distinct from old.agent_id) then
    perform app_private.routing_pool_build(new.tenant_id, new.agent_id);
  end if;
  return null;
end;
$$;

comment on function app_private.tg_routing_pool__build() is 'Trigger (after each row inserted into agents or changing is_active, and after each row of agent_specializations and agent_service_areas): rebuilds the agent''s rows of the routing pool (app_private.routing_pool_build), since its lines, areas or activity may have changed; before an agent is deleted, takes its rows and tallies out.';
--! EndIncluded routing/tg_routing_pool__build.sql
--! Included routing/tg_routing_pool__sync.sql
create or replace function app_private.tg_routing_pool__sync() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if tg_table_name = 'agents' then
    perform app_private.routing_pool_sync(new.tenant_id, new.id);
    return null;
  end if;
  if tg_op in ('UPDATE', 'DELETE') then
    perform app_private.routing_pool_sync(old.tenant_id, old.agent_id);
  end if;
  if tg_op = 'INSERT' or (tg_op = 'UPDATE' and new.agent_id is distinct from old.agent_id) then
    perform app_private.routing_pool_sync(new.tenant_id, new.agent_id);
  end if;
  return null;
end;
$$;

comment on function app_private.tg_routing_pool__sync() is 'Trigger (after each row of agent_availability, agent_performance_metrics, agent_working_hours and agent_time_off, and after a change of an agent''s routing_weight, caps or time zone): refreshes the agent''s state in the routing pool (app_private.routing_pool_sync).';
--! EndIncluded routing/tg_routing_pool__sync.sql
--! Included routing/tg_routing_pool__pass.sql
create or replace function app_private.tg_routing_pool__pass() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Only the pass moves: no need to work out the whole state (this runs on every round-robin decision).
  if tg_op = 'DELETE' then
    update app_private.routing_pool p set pass = 1::numeric / p.weight
     where p.agent_id = old.agent_id and p.pass <> 1::numeric / p.weight;
  else
    update app_private.routing_pool p set pass = new.pass
     where p.agent_id = new.agent_id and p.pass <> new.pass;
  end if;
  return null;
end;
$$;

comment on function app_private.tg_routing_pool__pass() is 'Trigger (after each row of agent_routing_credits): copies the agent''s round-robin pass into its rows of the routing pool (one stride, 1 / weight, once its ledger row is gone).';
--! EndIncluded routing/tg_routing_pool__pass.sql
--! Included routing/tg_routing_pool__sync_tenant.sql
create or replace function app_private.tg_routing_pool__sync_tenant() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := case when tg_op = 'DELETE' then old.tenant_id else new.tenant_id end;
begin
  perform app_private.routing_pool_sync(v_tenant, a.id)
     from app_public.agents a where a.tenant_id = v_tenant and a.is_active;
  return null;
end;
$$;

comment on function app_private.tg_routing_pool__sync_tenant() is 'Trigger (after each row of holidays, and after a change of business_settings.timezone): refreshes the state in the routing pool of every active agent of the tenant, since who is on duty, and the day caps count in, may have changed.';
--! EndIncluded routing/tg_routing_pool__sync_tenant.sql

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
--! Included routing/routing_try_agent.sql
create or replace function app_private.routing_try_agent(tenant_id uuid, agent_id uuid, lead app_public.leads, appt_range tstzrange, wait boolean,
  out claimed boolean, out skipped boolean, out slot_id uuid, out note text)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := routing_try_agent.tenant_id;
  v_agent uuid := routing_try_agent.agent_id;
  v_lead app_public.leads := routing_try_agent.lead;
  v_av app_public.agent_availability;
begin
  claimed := false;
  skipped := false;
  -- A subtransaction: when a check fails, raising SBR01 undoes it, which releases the locks it took
  -- (a routing that moves on must not keep holding the agents it turned down: status changes of
  -- those agents would wait for it, and could deadlock with other routings).
  begin
    -- Lock the agent's availability row: without waiting on the first pass (a row another routing
    -- holds is skipped), waiting on the second.
    if not wait then
      select av.* into v_av from app_public.agent_availability av
       where av.tenant_id = v_tenant and av.agent_id = v_agent
       for update skip locked;
      if not found then
        skipped := true;
        return;
      end if;
    else
      begin
        select av.* into v_av from app_public.agent_availability av
         where av.tenant_id = v_tenant and av.agent_id = v_agent
         for update;
      exception when deadlock_detected then
        note := 'could not be locked (deadlock avoided)';
        return;
      end;
    end if;
    -- Re-check under the lock what may have changed since the candidates were read.
    if v_av.agent_id is null or v_av.status <> 'available' or v_av.current_load >= v_av.max_capacity then
      note := pg_catalog.format('changed while routing: status %s, load %s of %s', v_av.status, v_av.current_load, v_av.max_capacity);
      raise sqlstate 'SBR01';
    end if;
    -- Caps, counted under the same lock as the load, so concurrent routings can never exceed them.
    select pg_catalog.format('reached its %s cap while routing (%s of %s)', c.which, c.received, c.cap) into note
      from app_public.agents a
      cross join lateral app_hidden.agent_cap_period(app_hidden.agent_timezone(v_tenant, v_agent), pg_catalog.now()) cp
      cross join lateral (values
        ('daily', a.daily_cap, case when v_av.cap_day = cp.day then v_av.cap_day_count else 0 end),
        ('weekly', a.weekly_cap, case when v_av.cap_week = cp.week then v_av.cap_week_count else 0 end)) c(which, cap, received)
     where a.tenant_id = v_tenant and a.id = v_agent and c.cap is not null and c.received >= c.cap
     limit 1;
    if note is not null then
      raise sqlstate 'SBR01';
    end if;
    -- Still on duty (working hours may have ended, or time off begun, since the candidates were read).
    note := 'went off duty while routing: '
      || app_hidden.agent_off_duty_reason(v_tenant, v_agent, app_hidden.agent_timezone(v_tenant, v_agent), pg_catalog.now());
    if note is not null then
      raise sqlstate 'SBR01';
    end if;
    if appt_range is not null and app_hidden.agent_is_busy(v_tenant, v_agent, appt_range, v_lead.id) then
      note := 'became busy at the requested time while routing';
      raise sqlstate 'SBR01';
    end if;
    if v_lead.event_date is not null then
      select s.id into slot_id from app_public.availability_slots s
       where s.tenant_id = v_tenant and s.agent_id = v_agent and s.slot_date = v_lead.event_date and s.status = 'free'
         and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)
       order by s.start_time
       limit 1
       for update skip locked;
      if slot_id is null then
        note := 'the slot was taken while routing';
        raise sqlstate 'SBR01';
      end if;
    end if;
    claimed := true;
  exception when sqlstate 'SBR01' then
    claimed := false;
    slot_id := null;
  end;
end;
$$;

comment on function app_private.routing_try_agent(uuid, uuid, app_public.leads, tstzrange, boolean) is 'Tries to take one candidate for a lead: locks the agent''s agent_availability row (skip locked unless wait; skipped = another routing holds it), re-checks status, load, the daily and weekly caps, the schedule (working hours, time off, holidays), busy time and, for an event lead, locks a free slot on the event date (slot_id). claimed when all hold (the locks are kept); otherwise note says what changed, and the locks taken are released (a subtransaction undone), so that a routing holds only the agent it takes. The single copy of the lock-and-recheck step of route_lead (routing_claim calls it).';
--! EndIncluded routing/routing_try_agent.sql
--! Included routing/routing_claim.sql
create or replace function app_private.routing_claim(ctx app_private.routing_context, agent_order uuid[], wait boolean,
  out chosen uuid, out chosen_slot uuid, out notes jsonb, out skipped uuid[])
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := ctx.tenant_id;
  v_agent uuid;
  v_try record;
  v_skipped uuid[] := '{}';
  v_wait_from int;
begin
  notes := '{}';
  skipped := '{}';
  if agent_order is null then
    return;
  end if;
  -- Take the first candidate whose availability (and slot) can be locked and still holds.
  -- Pass 1 skips rows other routings hold; only if that finds nobody, wait for the skipped ones.
  foreach v_agent in array agent_order loop
    select * into v_try from app_private.routing_try_agent(v_tenant, v_agent, ctx.lead, ctx.appt_range, false);
    if v_try.claimed then
      chosen := v_agent;
      chosen_slot := v_try.slot_id;
      return;
    elsif v_try.skipped then
      v_skipped := v_skipped || v_agent;
    else
      notes := notes || pg_catalog.jsonb_build_object(v_agent::text, v_try.note);
    end if;
  end loop;
  skipped := v_skipped;
  if pg_catalog.cardinality(v_skipped) = 0 or not wait then
    return;
  end if;
  -- Waiters start at different agents, so a burst does not queue up behind one row: the first
  -- agent to wait for is drawn in proportion to routing_weight, which keeps round-robin
  -- shares close to the weights when most routes have to wait.
  select o.n - 1 into v_wait_from
    from (select u.n, pg_catalog.sum(a.routing_weight) over (order by u.n) as upto,
                 pg_catalog.sum(a.routing_weight) over () as total
            from pg_catalog.unnest(v_skipped) with ordinality u(agent_id, n)
            join app_public.agents a on a.tenant_id = v_tenant and a.id = u.agent_id) o
   where o.upto > pg_catalog.random() * o.total
   order by o.n
   limit 1;
  v_wait_from := coalesce(v_wait_from, 0);
  v_skipped := v_skipped[v_wait_from + 1:] || v_skipped[:v_wait_from];
  foreach v_agent in array v_skipped loop
    select * into v_try from app_private.routing_try_agent(v_tenant, v_agent, ctx.lead, ctx.appt_range, true);
    if v_try.claimed then
      chosen := v_agent;
      chosen_slot := v_try.slot_id;
      return;
    end if;
    notes := notes || pg_catalog.jsonb_build_object(v_agent::text, v_try.note);
  end loop;
end;
$$;

comment on function app_private.routing_claim(app_private.routing_context, uuid[], boolean) is 'Takes the first agent of agent_order that can be locked and still holds (app_private.routing_try_agent): a first pass skips agents other routings hold (returned in skipped); only if it finds nobody, and wait is true, does it wait for those, starting at one drawn in proportion to routing_weight, so busy tenants see no false "no agent available". Returns the agent, its locked slot for an event lead, and a note per agent that changed while routing. Part of route_lead.';
--! EndIncluded routing/routing_claim.sql
--! Included routing/routing_record.sql
create or replace function app_private.routing_record(ctx app_private.routing_context, candidates jsonb, notes jsonb, pool_counts jsonb, chosen uuid, chosen_slot uuid,
  outcome text, reason text, offer_id uuid, expires timestamptz, queue_type text) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_candidates jsonb := coalesce(routing_record.candidates, '[]'::jsonb);
  v_notes jsonb := coalesce(routing_record.notes, '{}'::jsonb);
  v_counts jsonb;
  v_history_id bigint;
  -- The order in which the first failing check of an agent is counted: the cheap, lead-wide checks first.
  v_funnel constant text[] := array['skill', 'language', 'area', 'availability', 'schedule', 'capacity', 'cap', 'slot', 'free', 'not_rejected'];
begin
  -- Lock-time notes go with their candidates.
  if v_notes <> '{}'::jsonb then
    select pg_catalog.jsonb_agg(case when v_notes ? (e ->> 'agent_id') then e || pg_catalog.jsonb_build_object('lock', v_notes ->> (e ->> 'agent_id')) else e end
             order by o.n)
      into v_candidates
      from pg_catalog.jsonb_array_elements(v_candidates) with ordinality o(e, n);
  end if;

  -- A compact record whatever the size of the team: the first 10 candidates in the order of the strategy
  -- (eligible ones by rank, then the others by name), the chosen agent and those that changed while
  -- routing, each in full; everyone else only counted, at their first failing check.
  -- The agents a large team's routing did not examine come counted from the routing pool (pool_counts).
  if pg_catalog.jsonb_array_length(v_candidates) > 10 or routing_record.pool_counts is not null then
    with c as (
      select o.e, o.n, o.n <= 10 or (o.e ->> 'agent_id')::uuid is not distinct from chosen or o.e ? 'lock' as listed
        from pg_catalog.jsonb_array_elements(v_candidates) with ordinality o(e, n)
    ),
    rest as (
      select (c.e ->> 'eligible')::boolean as eligible,
             (select f.k from pg_catalog.unnest(v_funnel) with ordinality f(k, i)
               where c.e -> 'checks' ->> f.k = 'false' order by f.i limit 1) as first_failed,
             c.e
        from c where not c.listed
    ),
    failed as (
      select r.first_failed as k, pg_catalog.count(*) as n,
             pg_catalog.mode() within group (order by r.e -> 'reasons' ->> r.first_failed) as reason
        from rest r where r.first_failed is not null
       group by r.first_failed
    ),
    failed_all as (
      select x.k, pg_catalog.sum(x.n) as n, (pg_catalog.array_agg(x.reason order by x.examined desc, x.n desc))[1] as reason
        from (select f.k, f.n, f.reason, true as examined from failed f
              union all
              select p.key, (p.value ->> 'n')::bigint, p.value ->> 'reason', false
                from pg_catalog.jsonb_each(coalesce(routing_record.pool_counts -> 'failed', '{}'::jsonb)) p) x
       group by x.k
    )
    select coalesce((select pg_catalog.jsonb_agg(c.e order by c.n) from c where c.listed), '[]'::jsonb),
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
             'considered', coalesce((routing_record.pool_counts ->> 'considered')::bigint, (select pg_catalog.count(*) from c)),
             'examined', (routing_record.pool_counts ->> 'examined')::bigint,
             'listed', (select pg_catalog.count(*) from c where c.listed),
             'eligible_not_listed', (select pg_catalog.count(*) from rest r where r.eligible),
             'ready_not_examined', (routing_record.pool_counts ->> 'ready_not_examined')::bigint,
             'failed', coalesce((select pg_catalog.jsonb_object_agg(f.k, pg_catalog.jsonb_build_object('n', f.n, 'reason', f.reason)) from failed_all f), '{}'::jsonb)))
      into v_candidates, v_counts;
  end if;

  insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, strategy, rule_id, rule_version, experiment_id, variant_id, lead_score,
    candidates, candidate_counts, chosen_agent_id, outcome, reason)
  values (ctx.tenant_id, (ctx.lead).id, ctx.trigger, ctx.strategy, (ctx.rule).id, (ctx.rule).version, ctx.experiment_id, ctx.variant_id, (ctx.lead).lead_score,
    v_candidates, v_counts, chosen, outcome, reason)
  returning id into v_history_id;
  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values (ctx.tenant_id, (ctx.lead).id, chosen, offer_id, outcome,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('history_id', v_history_id, 'strategy', ctx.strategy,
      'queue_type', queue_type, 'expires_at', expires, 'slot_id', chosen_slot, 'reason', reason)));
  return v_history_id;
end;
$$;

comment on function app_private.routing_record(app_private.routing_context, jsonb, jsonb, jsonb, uuid, uuid, text, text, uuid, timestamptz, text) is 'Writes the record of a routing decision: the lead_routing_history row (strategy, rule and its version, experiment variant, lead score, the candidates with the notes of those that changed while routing, compacted beyond 10 agents to the first 10 in the strategy''s order plus the chosen one and those with notes, the others counted per first failing check in candidate_counts, together with the agents a large team''s routing did not examine (pool_counts, from app_private.routing_pool_counts: considered, examined, ready_not_examined and their failed checks); the chosen agent, outcome and reason) and its routing_events row; returns the history id. Also records leads that were not routed (outcome not_routed, no candidates). Part of route_lead.';
--! EndIncluded routing/routing_record.sql
--! Included routing/routing_candidates.sql
create or replace function app_private.routing_candidates(ctx app_private.routing_context, out candidates jsonb, out agent_order uuid[], out pass_floor numeric)
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := ctx.tenant_id;
  v_lead app_public.leads := ctx.lead;
  v_restrict uuid[] := ctx.restrict;
  v_order_strategy text := ctx.order_strategy;
  v_tier text := ctx.tier;
  v_tier_weight numeric := ctx.tier_weight;
  v_lat numeric := ctx.lat;
  v_lon numeric := ctx.lon;
  v_appt_range tstzrange := ctx.appt_range;
  v_prev_owner uuid := ctx.prev_owner;
  -- Caps and working hours count in the agent's time zone, else the business's, else UTC (the rule
  -- of app_hidden.agent_timezone, applied set-wise here: the business's zone is read once).
  v_business_tz text := coalesce((select bs.timezone from app_public.business_settings bs where bs.tenant_id = ctx.tenant_id), 'UTC');
  -- Schedules are checked agent by agent only when the tenant has any (most have none).
  v_schedules boolean := app_hidden.tenant_has_schedules(ctx.tenant_id);
begin
  with base as materialized (
    select a.id as agent_id, a.display_name as name, a.routing_weight as weight,
           av.status, av.current_load, av.max_capacity,
           cr.pass as stored_pass,
           v_lead.service_line is null or sk.n > 0 as skill_ok,
           coalesce(sk.proficiency, 3) as proficiency,
           case when v_lead.service_line is not null and sk.n > 0 then coalesce(sk.lang_ok, false)
                else v_lead.language = any (a.languages) or app_hidden.language_matches(v_lead.language, a.languages) end as language_ok,
           ar.n = 0 or coalesce(ar.matched, false) as area_ok,
           ar.n > 0 and not coalesce(ar.matched, false) and coalesce(ar.has_radius, false) and v_lat is null as area_unknown,
           coalesce(av.status = 'available', false) as availability_ok,
           coalesce(av.current_load < av.max_capacity, false) as capacity_ok,
           v_lead.event_date is null or exists (
             select 1 from app_public.availability_slots s
              where s.tenant_id = v_tenant and s.agent_id = a.id and s.slot_date = v_lead.event_date and s.status = 'free'
                and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)) as slot_ok,
           v_appt_range is null or not app_hidden.agent_is_busy(v_tenant, a.id, v_appt_range, v_lead.id) as free_ok,
           not exists (
             select 1 from app_public.routing_offers o
              where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.agent_id = a.id and o.status in ('rejected', 'expired')) as not_rejected,
           coalesce(pm.conv, 0.5) as conversion,
           coalesce(pm.conv_hot, 0.5) as conversion_hot,
           a.daily_cap, a.weekly_cap,
           case when av.cap_day = cp.day then av.cap_day_count else 0 end as received_today,
           case when av.cap_week = cp.week then av.cap_week_count else 0 end as received_this_week,
           case when v_schedules then app_hidden.agent_off_duty_reason(v_tenant, a.id, coalesce(a.timezone, v_business_tz), pg_catalog.now()) end as off_duty
      -- Every active agent, or only those of the list (a rule's agents, or a batch read from the
      -- routing pool): two branches, so that a list is read by primary key whatever the team's size.
      from (select a0.* from app_public.agents a0
             where v_restrict is null and a0.tenant_id = v_tenant and a0.is_active
            union all
            select a0.* from app_public.agents a0
             where v_restrict is not null and a0.id = any (v_restrict) and a0.tenant_id = v_tenant and a0.is_active) a
      left join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
      -- The agent's day and week (as app_hidden.agent_cap_period computes them, written out so that
      -- no function is called per agent).
      cross join lateral (
        select (pg_catalog.now() at time zone coalesce(a.timezone, v_business_tz))::date as day,
               pg_catalog.date_trunc('week', pg_catalog.now() at time zone coalesce(a.timezone, v_business_tz))::date as week
      ) cp
      -- One probe per agent by primary key (limit 1 keeps it a probe: a join could keep a plan made
      -- while the ledger was nearly empty and scan it once per agent when it has grown).
      left join lateral (select c.pass from app_public.agent_routing_credits c where c.agent_id = a.id limit 1) cr on true
      left join lateral (
        select pg_catalog.count(*) as n, pg_catalog.max(s.proficiency) as proficiency,
               pg_catalog.bool_or(v_lead.language = any (case when pg_catalog.cardinality(s.languages) > 0 then s.languages else a.languages end)
                 or app_hidden.language_matches(v_lead.language,
                      case when pg_catalog.cardinality(s.languages) > 0 then s.languages else a.languages end)) as lang_ok
          from app_public.agent_specializations s
         where s.tenant_id = a.tenant_id and s.agent_id = a.id
           and (v_lead.service_line is null or (
                 s.service_line = v_lead.service_line
             and (s.customer_segment = 'any' or v_lead.customer_segment is null or s.customer_segment = v_lead.customer_segment)
             and (pg_catalog.cardinality(s.territories) = 0 or v_lead.region = any (s.territories))))
      ) sk on true
      left join lateral (
        select pg_catalog.count(*) as n,
               pg_catalog.bool_or(case z.kind
                 when 'region' then pg_catalog.upper(z.region) = pg_catalog.upper(v_lead.region) and z.country = v_lead.country
                 when 'city' then pg_catalog.lower(z.city) = pg_catalog.lower(v_lead.city)
                                  and (z.region is null or v_lead.region is null or pg_catalog.upper(z.region) = pg_catalog.upper(v_lead.region))
                 when 'postal_code' then pg_catalog.upper(pg_catalog.btrim(z.postal_code)) = pg_catalog.upper(pg_catalog.btrim(v_lead.postal_code))
                 when 'radius' then app_hidden.distance_miles(z.center_latitude, z.center_longitude, v_lat, v_lon) <= z.radius_miles
               end) as matched,
               pg_catalog.bool_or(z.kind = 'radius') as has_radius
          from app_public.agent_service_areas z
         where z.tenant_id = a.tenant_id and z.agent_id = a.id
      ) ar on true
      left join lateral (
        select case v_tier when 'hot' then m.conversion_rate_hot when 'warm' then m.conversion_rate_warm else m.conversion_rate_cold end as conv,
               m.conversion_rate_hot as conv_hot
          from app_public.agent_performance_metrics m
         where m.tenant_id = a.tenant_id and m.agent_id = a.id
         order by m.period_start desc, m.computed_at desc
         limit 1
      ) pm on true
  ),
  scored as (
    select b.*,
           b.skill_ok and b.language_ok and b.area_ok and b.availability_ok and b.capacity_ok and b.slot_ok and b.free_ok and b.not_rejected
             and b.off_duty is null
             and (b.daily_cap is null or b.received_today < b.daily_cap) and (b.weekly_cap is null or b.received_this_week < b.weekly_cap) as eligible,
           (b.daily_cap is null or b.received_today < b.daily_cap) and (b.weekly_cap is null or b.received_this_week < b.weekly_cap) as cap_ok,
           b.off_duty is null as schedule_ok,
           case when b.max_capacity > 0 then b.current_load::numeric / b.max_capacity else 1 end as load_ratio,
           1::numeric / b.weight as stride
      from base b
  ),
  paced as (
    -- Stride scheduling: an agent without a ledger row starts one stride after virtual time 0.
    -- v_floor = the latest virtual start among the eligible (pass - stride); in steady state every
    -- eligible pass is at least that, so clamping to it only moves agents who fell behind while
    -- they could not take leads (no burst on return).
    select s.*, greatest(coalesce(s.stored_pass, s.stride),
             pg_catalog.max(coalesce(s.stored_pass, s.stride) - s.stride) filter (where s.eligible) over ()) as pass,
           pg_catalog.max(coalesce(s.stored_pass, s.stride) - s.stride) filter (where s.eligible) over () as pass_floor
      from scored s
  ),
  paced_min as (
    select p.*, pg_catalog.min(p.pass) filter (where p.eligible) over () as min_pass
      from paced p
  ),
  keyed as (
    select s.*,
           case v_order_strategy
             when 'weighted_round_robin' then s.min_pass - s.pass
             when 'least_loaded' then s.load_ratio
             when 'best_match' then s.proficiency * s.conversion * v_tier_weight
             when 'score_tiered' then s.conversion_hot
             when 'direct_to_owner' then case when s.agent_id = v_prev_owner then 1 else 0 end
           end as score,
           case v_order_strategy
             when 'weighted_round_robin' then -s.pass
             when 'least_loaded' then -s.load_ratio
             when 'best_match' then s.proficiency * s.conversion * v_tier_weight
             when 'score_tiered' then s.conversion_hot
             when 'direct_to_owner' then case when s.agent_id = v_prev_owner then 1 else 0 end
           end as k1,
           case v_order_strategy
             when 'weighted_round_robin' then s.weight::numeric
             when 'least_loaded' then -s.pass
             when 'direct_to_owner' then -s.pass
             else -s.load_ratio
           end as k2
      from paced_min s
  ),
  ranked as (
    select k.*, case when k.eligible then pg_catalog.row_number() over (partition by k.eligible order by k.k1 desc, k.k2 desc, k.agent_id) end as rank
      from keyed k
  )
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'agent_id', r.agent_id,
           'name', r.name,
           'checks', pg_catalog.jsonb_build_object(
             'skill', r.skill_ok, 'language', r.language_ok, 'area', r.area_ok, 'availability', r.availability_ok,
             'capacity', r.capacity_ok, 'slot', r.slot_ok, 'free', r.free_ok, 'not_rejected', r.not_rejected, 'schedule', r.schedule_ok, 'cap', r.cap_ok),
           'reasons', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
             'skill', case when not r.skill_ok then pg_catalog.format('no specialization in %s%s%s', v_lead.service_line,
                 case when v_lead.customer_segment is not null then ' for segment ' || v_lead.customer_segment else '' end,
                 case when v_lead.region is not null then ' licensed for ' || v_lead.region else '' end) end,
             'language', case when not r.language_ok then pg_catalog.format('does not speak %s', v_lead.language) end,
             'area', case when not r.area_ok then case when r.area_unknown then 'unknown location'
                 else pg_catalog.format('outside the service areas (lead in %s)',
                   coalesce(nullif(pg_catalog.concat_ws(', ', v_lead.city, v_lead.region, v_lead.postal_code), ''), 'an unknown place')) end end,
             'availability', case when not r.availability_ok then
                 case when r.status is null then 'no availability record' else pg_catalog.format('status is %s', r.status) end end,
             'capacity', case when not r.capacity_ok then
                 case when r.status is null then 'no availability record' else pg_catalog.format('at capacity (%s of %s)', r.current_load, r.max_capacity) end end,
             'slot', case when not r.slot_ok then pg_catalog.format('no free slot on %s', v_lead.event_date) end,
             'free', case when not r.free_ok then pg_catalog.format('busy at %s (an appointment or another lead)', v_lead.appointment_at) end,
             'not_rejected', case when not r.not_rejected then 'already rejected this lead or let its offer expire' end,
             'schedule', r.off_duty,
             'cap', case when r.daily_cap is not null and r.received_today >= r.daily_cap
                           then pg_catalog.format('daily cap reached (%s of %s)', r.received_today, r.daily_cap)
                         when r.weekly_cap is not null and r.received_this_week >= r.weekly_cap
                           then pg_catalog.format('weekly cap reached (%s of %s)', r.received_this_week, r.weekly_cap) end)),
           'eligible', r.eligible,
           'score', pg_catalog.trim_scale(pg_catalog.round(r.score, 4)),
           'rank', r.rank,
           'weight', r.weight,
           'pass', pg_catalog.trim_scale(pg_catalog.round(r.pass, 6)),
           'load', r.current_load,
           'capacity', r.max_capacity,
           'proficiency', r.proficiency,
           'conversion', r.conversion)
         order by r.rank nulls last, r.name, r.agent_id), '[]'::jsonb),
         pg_catalog.array_agg(r.agent_id order by r.rank) filter (where r.eligible),
         pg_catalog.max(r.pass_floor)
    into candidates, agent_order, pass_floor
    from ranked r;
end;
$$;

comment on function app_private.routing_candidates(app_private.routing_context) is 'The candidates of a routing decision: every active agent of the tenant (only the rule''s agents when the plan restricts them), each with its checks (skill, language, area, availability, capacity, slot, free, not_rejected, schedule: on duty by its working hours, time off and the business''s holidays, cap: under its daily and weekly caps), the reasons of the failed ones, its score and rank in the strategy''s order (candidates, the jsonb stored in lead_routing_history), the eligible agents'' ids in that order (agent_order), and the round-robin virtual time of the eligible agents (pass_floor). Reads only. Part of route_lead.';
--! EndIncluded routing/routing_candidates.sql
--! Included routing/agent_timezone.sql
create or replace function app_hidden.agent_timezone(tenant_id uuid, agent_id uuid) returns text
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- PL/pgSQL rather than SQL: its plan is kept for the session (routing calls this on every decision).
  return coalesce(
    (select a.timezone from app_public.agents a where a.tenant_id = agent_timezone.tenant_id and a.id = agent_timezone.agent_id),
    (select bs.timezone from app_public.business_settings bs where bs.tenant_id = agent_timezone.tenant_id),
    'UTC');
end;
$$;

comment on function app_hidden.agent_timezone(uuid, uuid) is 'The time zone an agent''s caps and working hours count in: the agent''s own (agents.timezone), else the business''s (business_settings.timezone), else UTC. The one place this rule is written; routing_candidates applies it set-wise (the business''s zone read once) for speed.';
--! EndIncluded routing/agent_timezone.sql
--! Included routing/routing_pool_next.sql
create or replace function app_private.routing_pool_next(ctx app_private.routing_context, area_keys text[], examined uuid[], n integer) returns uuid[]
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := ctx.tenant_id;
  v_line text := coalesce((ctx.lead).service_line, '');
  v_next uuid[];
begin
  -- Per area key, the first n ready agents not yet examined, read in the strategy order from the
  -- pool; then the first n distinct agents of all keys in that order.
  if ctx.order_strategy = 'least_loaded' then
    select pg_catalog.array_agg(y.agent_id order by y.load_ratio, y.pass, y.agent_id) into v_next
      from (select d.* from (select distinct on (r.agent_id) r.* from pg_catalog.unnest(area_keys) k(area_key)
                               cross join lateral (
                                 select p.agent_id, p.load_ratio, p.pass from app_private.routing_pool p
                                  where p.tenant_id = v_tenant and p.line = v_line and p.area_key = k.area_key and p.state = 'ready'
                                    and p.agent_id <> all (examined)
                                  order by p.load_ratio, p.pass, p.agent_id
                                  limit n) r
                              order by r.agent_id) d
             order by d.load_ratio, d.pass, d.agent_id
             limit n) y;
  elsif ctx.order_strategy in ('best_match', 'score_tiered') then
    -- Ordered by what the pool knows of the score (the exact score is computed for those read).
    select pg_catalog.array_agg(y.agent_id order by y.score desc, y.load_ratio, y.agent_id) into v_next
      from (select d.* from (select distinct on (p.agent_id) p.agent_id, p.load_ratio,
                                    case when ctx.order_strategy = 'score_tiered' then p.conv_hot
                                         else p.proficiency * case ctx.tier when 'hot' then p.conv_hot when 'warm' then p.conv_warm else p.conv_cold end
                                    end as score
                               from app_private.routing_pool p
                              where p.tenant_id = v_tenant and p.line = v_line and p.area_key = any (area_keys) and p.state = 'ready'
                                and p.agent_id <> all (examined)
                              order by p.agent_id) d
             order by d.score desc, d.load_ratio, d.agent_id
             limit n) y;
  else
    -- weighted_round_robin, and direct_to_owner beyond the previous owner.
    select pg_catalog.array_agg(y.agent_id order by y.pass, y.weight desc, y.agent_id) into v_next
      from (select d.* from (select distinct on (r.agent_id) r.* from pg_catalog.unnest(area_keys) k(area_key)
                               cross join lateral (
                                 select p.agent_id, p.pass, p.weight from app_private.routing_pool p
                                  where p.tenant_id = v_tenant and p.line = v_line and p.area_key = k.area_key and p.state = 'ready'
                                    and p.agent_id <> all (examined)
                                  order by p.pass, p.weight desc, p.agent_id
                                  limit n) r
                              order by r.agent_id) d
             order by d.pass, d.weight desc, d.agent_id
             limit n) y;
  end if;
  return v_next;
end;
$$;

comment on function app_private.routing_pool_next(app_private.routing_context, text[], uuid[], integer) is 'The next n agents to examine for a lead, from the routing pool: ready agents of the lead''s service line (the empty line for a lead without one) under one of its area keys, not examined yet, in the order of the strategy: weighted_round_robin and direct_to_owner by pass (then the heavier, then id) and least_loaded by load ratio, each read from an index; best_match and score_tiered by the pool''s copy of their score. Null when none is left. Part of route_lead (app_private.routing_search).';
--! EndIncluded routing/routing_pool_next.sql
--! Included routing/routing_pool_counts.sql
create or replace function app_private.routing_pool_counts(ctx app_private.routing_context, area_keys text[], examined uuid[]) returns jsonb
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := ctx.tenant_id;
  v_line text := coalesce((ctx.lead).service_line, '');
  v_examined integer := pg_catalog.cardinality(examined);
  v_total bigint;
  v_in_line bigint;
  v_in_area bigint;
  v_twice bigint;
  v_waiting jsonb;
  v_waiting_n bigint;
  v_failed jsonb := '{}';
begin
  -- Work that grows with the lead's area keys and with the agents there that are not ready, not
  -- with the team: agents per line and per line and area key from the tallies, less those served
  -- under two of the lead's keys (only agents whose areas are of several kinds can be); the agents
  -- that are not ready from the pool's partial index.
  select coalesce(pg_catalog.sum(t.agents) filter (where t.line = '' and t.area_key = ''), 0),
         coalesce(pg_catalog.sum(t.agents) filter (where t.line = v_line and t.area_key = ''), 0),
         coalesce(pg_catalog.sum(t.agents) filter (where t.line = v_line and t.area_key = any (area_keys)), 0)
    into v_total, v_in_line, v_in_area
    from app_private.routing_pool_tally t
   where t.tenant_id = v_tenant and t.line in ('', v_line) and (t.area_key = '' or t.area_key = any (area_keys));
  select coalesce(pg_catalog.sum(x.n - 1), 0) into v_twice
    from (select pg_catalog.count(*) as n
            from app_private.routing_pool p
           where p.tenant_id = v_tenant and p.line = v_line and p.area_key = any (area_keys) and p.multi_kind
           group by p.agent_id) x;
  v_in_area := v_in_area - v_twice;
  -- Agents in the lead's line and area that are not ready, per state (not those examined: their checks are recorded).
  select coalesce(pg_catalog.jsonb_object_agg(w.state, w.n), '{}'::jsonb), coalesce(pg_catalog.sum(w.n), 0) into v_waiting, v_waiting_n
    from (select x.state, pg_catalog.count(*) as n
            from (select distinct p.agent_id, p.state
                    from app_private.routing_pool p
                   where p.tenant_id = v_tenant and p.line = v_line and p.area_key = any (area_keys) and p.state <> 'ready'
                     and p.agent_id <> all (examined)) x
           group by x.state) w;

  if v_total - v_in_line > 0 then
    v_failed := v_failed || pg_catalog.jsonb_build_object('skill', pg_catalog.jsonb_build_object('n', v_total - v_in_line,
      'reason', pg_catalog.format('no specialization in %s%s%s', (ctx.lead).service_line,
        case when (ctx.lead).customer_segment is not null then ' for segment ' || (ctx.lead).customer_segment else '' end,
        case when (ctx.lead).region is not null then ' licensed for ' || (ctx.lead).region else '' end)));
  end if;
  if v_in_line - v_in_area > 0 then
    v_failed := v_failed || pg_catalog.jsonb_build_object('area', pg_catalog.jsonb_build_object('n', v_in_line - v_in_area,
      'reason', pg_catalog.format('outside the service areas (lead in %s)',
        coalesce(nullif(pg_catalog.concat_ws(', ', (ctx.lead).city, (ctx.lead).region, (ctx.lead).postal_code), ''), 'an unknown place'))));
  end if;
  select v_failed || coalesce(pg_catalog.jsonb_object_agg(c.k, pg_catalog.jsonb_build_object('n', (v_waiting ->> c.state)::bigint, 'reason', c.reason)), '{}'::jsonb)
    into v_failed
    from (values ('unavailable', 'availability', 'not available'),
                 ('off_duty', 'schedule', 'off duty (working hours, time off or a holiday)'),
                 ('at_capacity', 'capacity', 'at capacity'),
                 ('at_cap', 'cap', 'daily or weekly cap reached')) c(state, k, reason)
   where v_waiting ? c.state;

  return pg_catalog.jsonb_build_object(
    'considered', v_total,
    'examined', v_examined,
    'ready_not_examined', greatest(0, v_in_area - v_examined - v_waiting_n),
    'failed', v_failed);
end;
$$;

comment on function app_private.routing_pool_counts(app_private.routing_context, text[], uuid[]) is 'The agents of a routing decision that were not examined, counted without reading the team: considered (every active agent of the tenant), examined, ready_not_examined (ready in the lead''s line and area but not read: someone earlier in the order took the lead) and failed, per first failing check, how many and why: skill (no specialization in the line) and area (none of the lead''s area keys) from the tallies of app_private.routing_pool_tally (less the agents counted under two of the lead''s keys), then availability, schedule, capacity and cap from the pool rows that are not ready. Part of route_lead.';
--! EndIncluded routing/routing_pool_counts.sql
--! Included routing/routing_search.sql
create or replace function app_private.routing_search(ctx app_private.routing_context,
  out candidates jsonb, out agent_order uuid[], out pass_floor numeric, out chosen uuid, out chosen_slot uuid, out notes jsonb,
  out counts jsonb, out nobody_reason text)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := ctx.tenant_id;
  v_batch_ctx app_private.routing_context := ctx;
  v_keys text[];
  v_batch uuid[];
  v_examined uuid[] := '{}';
  v_skipped uuid[] := '{}';
  v_eligible integer := 0;
  v_found record;
  v_claim record;
  v_failed text;
begin
  notes := '{}';
  -- Teams of up to 10 agents, and the agents a rule names: every agent checked, every one recorded.
  if ctx.restrict is not null
     or coalesce((select t.agents from app_private.routing_pool_tally t
                   where t.tenant_id = v_tenant and t.line = '' and t.area_key = ''), 0) <= 10 then
    select c.candidates, c.agent_order, c.pass_floor into candidates, agent_order, pass_floor
      from app_private.routing_candidates(ctx) c;
    select c.chosen, c.chosen_slot, c.notes into chosen, chosen_slot, notes
      from app_private.routing_claim(ctx, agent_order, true) c;
    return;
  end if;

  -- Larger teams: the ready agents of the lead's line and areas, read from the routing pool in the
  -- strategy's order 10 at a time, each batch checked in full (routing_candidates on those agents
  -- only) and claimed; the next batch only when nobody in this one could take the lead.
  v_keys := app_hidden.routing_lead_area_keys((ctx.lead).country, (ctx.lead).region, (ctx.lead).city, (ctx.lead).postal_code, ctx.lat, ctx.lon);
  candidates := '[]';
  agent_order := '{}';
  loop
    if ctx.order_strategy = 'direct_to_owner' and ctx.prev_owner is not null and pg_catalog.cardinality(v_examined) = 0 then
      v_batch := array[ctx.prev_owner];
    else
      v_batch := app_private.routing_pool_next(ctx, v_keys, v_examined, 10);
    end if;
    exit when v_batch is null;
    v_examined := v_examined || v_batch;
    v_batch_ctx.restrict := v_batch;
    select c.* into v_found from app_private.routing_candidates(v_batch_ctx) c;
    -- Ranks go on from one batch to the next.
    candidates := candidates || coalesce((
      select pg_catalog.jsonb_agg(case when o.e ->> 'rank' is not null
               then pg_catalog.jsonb_set(o.e, '{rank}', pg_catalog.to_jsonb((o.e ->> 'rank')::int + v_eligible)) else o.e end order by o.n)
        from pg_catalog.jsonb_array_elements(v_found.candidates) with ordinality o(e, n)), '[]'::jsonb);
    if v_found.agent_order is not null then
      v_eligible := v_eligible + pg_catalog.cardinality(v_found.agent_order);
      agent_order := agent_order || v_found.agent_order;
      pass_floor := greatest(pass_floor, v_found.pass_floor);
      select c.* into v_claim from app_private.routing_claim(ctx, v_found.agent_order, false) c;
      notes := notes || v_claim.notes;
      v_skipped := v_skipped || v_claim.skipped;
      if v_claim.chosen is not null then
        chosen := v_claim.chosen;
        chosen_slot := v_claim.chosen_slot;
        pass_floor := v_found.pass_floor;
        exit;
      end if;
    end if;
  end loop;
  -- Everyone examined was held by other routings: wait for them, as with a small team.
  if chosen is null and pg_catalog.cardinality(v_skipped) > 0 then
    select c.* into v_claim from app_private.routing_claim(ctx, v_skipped, true) c;
    notes := notes || v_claim.notes;
    chosen := v_claim.chosen;
    chosen_slot := v_claim.chosen_slot;
  end if;

  -- The examined agents in the order a small team's record lists them (eligible by rank, then by name).
  select coalesce(pg_catalog.jsonb_agg(o.e order by (o.e ->> 'rank')::int nulls last, o.e ->> 'name', o.e ->> 'agent_id'), '[]'::jsonb)
    into candidates
    from pg_catalog.jsonb_array_elements(candidates) o(e);
  if pg_catalog.cardinality(agent_order) = 0 then
    agent_order := null;
  end if;
  counts := app_private.routing_pool_counts(ctx, v_keys, v_examined);
  if agent_order is null then
    -- Nobody eligible: say why, from the pool counts and the checks of those examined.
    select pg_catalog.string_agg(pg_catalog.format('%s %s', f.n, f.k), ', ' order by f.n desc, f.k) into v_failed
      from (select x.k, pg_catalog.sum(x.n) as n
              from (select f.key as k, (f.value ->> 'n')::bigint as n from pg_catalog.jsonb_each(counts -> 'failed') f
                    union all
                    select k.key, 1 from pg_catalog.jsonb_array_elements(candidates) e, pg_catalog.jsonb_each(e -> 'checks') k
                     where k.value = 'false'::jsonb) x
             group by x.k) f;
    nobody_reason := pg_catalog.format('No eligible agent among %s considered (failed checks: %s)', counts ->> 'considered', coalesce(v_failed, 'none'));
  end if;
end;
$$;

comment on function app_private.routing_search(app_private.routing_context) is 'Finds the agent for a lead and claims it. In a team of up to 10 active agents, or among the agents a rule names, it checks every agent (app_private.routing_candidates) and claims the first that holds (app_private.routing_claim). In a larger team the work grows with the agents it reads, not with the team: the ready agents of the lead''s service line and area keys come from the routing pool in the strategy''s order, 10 at a time (app_private.routing_pool_next; the previous owner first for direct_to_owner), each batch is checked in full and claimed without waiting; the next batch only when nobody in this one could take the lead; if every agent it read was held by another routing, it then waits for those. Returns the candidates examined (ranks running across batches), the eligible ones in order, the round-robin floor of the chosen one''s batch, the chosen agent and slot, the lock notes, the counts of the others (app_private.routing_pool_counts; null for a small team) and, when nobody examined was eligible, the reason. Part of route_lead.';
--! EndIncluded routing/routing_search.sql
--! Included routing/route_lead.sql
create or replace function app_private.route_lead(tenant_id uuid, lead_id uuid, trigger text) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := route_lead.tenant_id;
  v_trigger text := route_lead.trigger;
  v_lead app_public.leads;
  v_refusal record;
  v_ctx app_private.routing_context;
  v_candidates jsonb := '[]';
  v_order uuid[];
  v_pass_floor numeric;
  v_chosen uuid;
  v_chosen_slot uuid;
  v_notes jsonb := '{}';
  v_counts jsonb;
  v_decision record;
begin
  if v_trigger is null or v_trigger not in ('new_lead', 'manual', 'offer_rejected', 'offer_expired', 'agent_available', 'escalation', 'requeue') then
    raise exception 'Invalid routing trigger ''%'': use new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue', v_trigger
      using errcode = '22023';
  end if;

  -- The lead, locked: one routing decision per lead at a time.
  select l.* into v_lead from app_public.leads l
   where l.tenant_id = v_tenant and l.id = route_lead.lead_id
   for no key update;
  if not found then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;

  -- Leads that must not be routed: recorded, with the reason.
  select * into v_refusal from app_private.routing_refusal(v_tenant, v_lead);
  if v_refusal.reason is not null then
    if v_refusal.lead_closed then
      update app_public.assignment_queue q set dequeued_at = pg_catalog.now(), dequeue_reason = 'lead_closed'
       where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null;
    end if;
    v_ctx.tenant_id := v_tenant;
    v_ctx.trigger := v_trigger;
    v_ctx.lead := v_lead;
    return app_private.routing_record(v_ctx, '[]'::jsonb, '{}'::jsonb, null, null, null, 'not_routed', v_refusal.reason, null, null, null);
  end if;

  -- Rule, strategy and experiment variant; then the candidates in the strategy's order and the
  -- first that can be taken (in a large team: read from the routing pool, a few at a time), the
  -- decision carried out, and its record.
  v_ctx := app_private.routing_plan(v_tenant, v_lead, v_trigger);
  if v_ctx.queue_reason is null then
    select s.candidates, s.agent_order, s.pass_floor, s.chosen, s.chosen_slot, s.notes, s.counts, s.nobody_reason
      into v_candidates, v_order, v_pass_floor, v_chosen, v_chosen_slot, v_notes, v_counts, v_ctx.queue_reason
      from app_private.routing_search(v_ctx) s;
  end if;
  select * into v_decision from app_private.routing_decide(v_ctx, v_candidates, v_order, v_pass_floor, v_chosen, v_chosen_slot);
  return app_private.routing_record(v_ctx, v_candidates, v_notes, v_counts, v_chosen, v_chosen_slot,
    v_decision.outcome, v_decision.reason, v_decision.offer_id, v_decision.expires, v_decision.queue_type);
end;
$$;

comment on function app_private.route_lead(uuid, uuid, text) is $$Routes one lead in the caller’s transaction and returns the lead_routing_history id of the decision.
trigger: new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue (22023 otherwise); P0002 when the lead is not the tenant’s.
Not routed (with the reason): deleted lead, number on the DNC list (or status dnc), closed lead (final status), lead already assigned to an agent, lead with a pending offer.
Candidates: the tenant’s active agents (for a lead with appointment_at: not busy then, see app_hidden.agent_is_busy; business_settings.service_appointment_minutes long) (only the rule’s agents for route_to_agent/route_to_agents), each checked for skill (a specialization for the lead’s service_line, segment ’any’ or equal, territories empty or containing the lead’s region; no service_line matches everyone), language (lead.language among the specialization’s or agent’s languages, en-US ~ en), area (no areas = everywhere; region, city (case-insensitive), postal code, or radius around attributes.latitude/longitude, ’unknown location’ without them), availability (status available), capacity (current_load < max_capacity), slot (event leads: a free, unlocked slot on event_date) and not_rejected (no rejected/expired offer of this lead).
Escalation (trigger escalation) widens the candidate set: the rule’s agent list and route_to_queue action are ignored.
Strategy: the matching rule’s (app_private.matching_routing_rule), else system_config routing.default_strategy, else weighted_round_robin; a running experiment’s variant (app_private.experiment_variant_for_lead, when that function exists) overrides it. weighted_round_robin = stride scheduling on agent_routing_credits (the eligible agent with the lowest pass goes next and its pass grows by 1/routing_weight; a pass below the virtual time of the eligible agents, max(pass - 1/weight), is raised to it, so agents coming back get no burst; score shown = how far behind the next agent in virtual time, 0 for the next); least_loaded = lowest load/capacity (ties: lowest pass, id); best_match = proficiency x recent conversion for the lead’s tier (0.5 when unknown) x tier weight; score_tiered = hot leads (score >= 70) to the best hot converters, others WRR; direct_to_owner = the previous owner agent if eligible, else WRR.
Concurrency: the lead row is locked first (one decision per lead; routing_offers_one_pending_per_lead is the backstop); candidates are tried in strategy order with FOR UPDATE SKIP LOCKED on agent_availability, re-checking status and load under the lock, and only when every eligible agent was skipped does it wait (plain FOR UPDATE) for them, each waiter starting at one drawn in proportion to routing_weight, so busy tenants do not see false "no agent available"; the event slot is locked and re-checked too; only the round-robin row of the chosen agent is written, last. Lock order: lead, agent_availability, availability_slots, agent_routing_credits.
LOAD RULE: a pending offer reserves capacity. Offering adds 1 to the agent’s current_load (as does direct assignment); accept keeps it; reject, expiry and cancellation must give it back (current_load - 1) and release the slot lock.
Outcomes: offered (routing_offers row expiring after system_config routing.offer_timeout_seconds, default 120; slot locked until then; job routing__expire_offer {offer_id} at expires_at with job_key routing_offer:<id>), assigned (system_config routing.direct_assignment = true: owner_agent_id and, for members, owner_user_id; slot booked; recorded in lead_assignments with the strategy), queued (assignment_queue with the SLA of system_config routing.sla_seconds.<queue>, defaults hot 300, active 900, reassignment 600, nurture 86400, waiting 3600; an existing waiting entry keeps its place), not_routed. Every call writes lead_routing_history and a routing_events row.$$;
--! EndIncluded routing/route_lead.sql
--! Included routing/explain_routing.sql
create or replace function app_public.explain_routing(lead_id uuid) returns setof app_public.routing_explanation
  language plpgsql stable
  -- SECURITY INVOKER: row-level security keeps other tenants' decisions out of sight.
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := app_public.current_tenant_id();
begin
  if v_tenant is null then
    if app_public.current_user_id() is null and app_public.current_api_key_id() is null then
      raise exception 'You must be logged in to explain routing' using errcode = '28000';
    end if;
    raise exception 'You are not a member of that tenant' using errcode = '42501';
  end if;
  if explain_routing.lead_id is null or not exists (select 1 from app_public.leads l where l.id = explain_routing.lead_id) then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;
  return query
  select h.id, h.routed_at, h.trigger, h.outcome, h.strategy, coalesce(rv.name, rr.name), v.name, h.chosen_agent_id, a.display_name,
         case h.outcome
           when 'offered' then pg_catalog.format('Offered to %s: %s.', coalesce(a.display_name, '?'), h.reason)
           when 'assigned' then pg_catalog.format('Assigned to %s: %s.', coalesce(a.display_name, '?'), h.reason)
           when 'queued' then pg_catalog.format('Queued: %s.', h.reason)
           else pg_catalog.format('Not routed: %s.', h.reason)
         end
         || case when h.rule_version is not null and coalesce(rv.name, rr.name) is not null
                 then pg_catalog.format(' Rule "%s" (version %s) matched.', coalesce(rv.name, rr.name), h.rule_version)
                 when rr.name is not null then pg_catalog.format(' Rule "%s" matched.', rr.name) else '' end
         || case when v.name is not null then pg_catalog.format(' Experiment variant "%s" chose the strategy.', v.name) else '' end
         || case when h.candidate_counts ? 'examined' then pg_catalog.format(' Of %s agents, %s %s examined and %s eligible.',
              h.candidate_counts ->> 'considered', h.candidate_counts ->> 'examined',
              case when (h.candidate_counts ->> 'examined')::bigint = 1 then 'was' else 'were' end,
              (select pg_catalog.count(*) from pg_catalog.jsonb_array_elements(h.candidates) e where (e ->> 'eligible')::boolean)
                + coalesce((h.candidate_counts ->> 'eligible_not_listed')::bigint, 0))
            when pg_catalog.jsonb_array_length(h.candidates) > 0 then pg_catalog.format(' %s of %s agents were eligible.',
              (select pg_catalog.count(*) from pg_catalog.jsonb_array_elements(h.candidates) e where (e ->> 'eligible')::boolean)
                + coalesce((h.candidate_counts ->> 'eligible_not_listed')::bigint, 0),
              coalesce((h.candidate_counts ->> 'considered')::bigint, pg_catalog.jsonb_array_length(h.candidates))) else '' end,
         coalesce((
           select pg_catalog.array_agg(
                    case when (e ->> 'eligible')::boolean then
                      pg_catalog.format('%s: eligible (rank %s, score %s)%s%s', e ->> 'name', e ->> 'rank', e ->> 'score',
                        case when (e ->> 'agent_id')::uuid = h.chosen_agent_id then ', chosen' else '' end,
                        case when e ? 'lock' then ', ' || (e ->> 'lock') else '' end)
                    else pg_catalog.format('%s: not eligible, failed %s', e ->> 'name',
                        (select pg_catalog.string_agg(pg_catalog.format('%s (%s)', k.key, coalesce(e -> 'reasons' ->> k.key, 'failed')), ', ' order by k.key)
                           from pg_catalog.jsonb_each(e -> 'checks') k where k.value = 'false'::jsonb))
                    end order by o.n)
             from pg_catalog.jsonb_array_elements(h.candidates) with ordinality o(e, n)), '{}'::text[])
         -- Beyond the listed agents, the counts: one line per failing check, then the eligible ones not listed.
         || coalesce((
           select pg_catalog.array_agg(pg_catalog.format('%s more agent%s: not eligible, failed %s (%s)', f.value ->> 'n',
                    case when (f.value ->> 'n')::bigint = 1 then '' else 's' end, f.key, coalesce(f.value ->> 'reason', 'failed'))
                    order by (f.value ->> 'n')::bigint desc, f.key)
             from pg_catalog.jsonb_each(h.candidate_counts -> 'failed') f), '{}'::text[])
         || case when (h.candidate_counts ->> 'eligible_not_listed')::bigint > 0 then
              array[pg_catalog.format('%s more eligible agent%s, later in the %s order', h.candidate_counts ->> 'eligible_not_listed',
                case when (h.candidate_counts ->> 'eligible_not_listed')::bigint = 1 then '' else 's' end,
                pg_catalog.replace(coalesce(h.strategy, 'routing'), '_', ' '))]
            else '{}'::text[] end
         || case when (h.candidate_counts ->> 'ready_not_examined')::bigint > 0 then
              array[pg_catalog.format('%s more agent%s ready in the line and area of the lead, not examined: the first that could take the lead came earlier in the %s order',
                h.candidate_counts ->> 'ready_not_examined',
                case when (h.candidate_counts ->> 'ready_not_examined')::bigint = 1 then '' else 's' end,
                pg_catalog.replace(coalesce(h.strategy, 'routing'), '_', ' '))]
            else '{}'::text[] end,
         h.candidates,
         h.candidate_counts,
         h.rule_version
    from app_public.lead_routing_history h
    left join app_public.routing_rules rr on rr.tenant_id = h.tenant_id and rr.id = h.rule_id
    left join app_public.routing_rule_versions rv on rv.tenant_id = h.tenant_id and rv.rule_id = h.rule_id and rv.version = h.rule_version
    left join app_public.routing_experiment_variants v on v.tenant_id = h.tenant_id and v.id = h.variant_id
    left join app_public.agents a on a.tenant_id = h.tenant_id and a.id = h.chosen_agent_id
   where h.lead_id = explain_routing.lead_id
   order by h.routed_at, h.id;
end;
$$;

comment on function app_public.explain_routing(uuid) is $$Every routing decision about a lead of your tenant, oldest first, in words: the outcome and why, the strategy, the rule (its name and version as they were then, also once the rule has changed or gone) and experiment variant, and one line per agent listed (eligible with rank and score, or which checks failed and why: skill, language, area, availability, schedule, capacity, cap, slot, free, not_rejected); beyond 10 agents, one line per failing check with how many more agents failed it first, and how many more were eligible; in a team of more than 10 agents, where routing examines only the first ready agents of the lead’s line and area (the routing pool), how many were examined and how many more were ready but not examined. Any member may ask. Errors: 28000 not logged in, P0002 unknown lead (or one of another tenant).$$;

grant execute on function app_public.explain_routing(uuid) to :DATABASE_VISITOR;
--! EndIncluded routing/explain_routing.sql
--! Included routing/routing_pool_refresh_timed.sql
create or replace function app_private.routing_pool_refresh_timed() returns setof uuid
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row record;
begin
  for v_row in
    -- Agents who may come back with the clock (working hours beginning, time off or a holiday
    -- ending, a new day or week for caps), and the ready agents of tenants with schedules (who may
    -- go off duty).
    select distinct p.tenant_id, p.agent_id
      from app_private.routing_pool p
     where p.line = '' and p.state in ('off_duty', 'at_cap')
    union
    select p.tenant_id, p.agent_id
      from app_private.routing_pool p
     where p.line = '' and p.state = 'ready'
       and p.tenant_id in (select w.tenant_id from app_public.agent_working_hours w
                           union select t.tenant_id from app_public.agent_time_off t where t.ends_at > pg_catalog.now() - interval '1 day'
                           union select h.tenant_id from app_public.holidays h where h.day between current_date - 1 and current_date + 1)
  loop
    if app_private.routing_pool_sync(v_row.tenant_id, v_row.agent_id) then
      return next v_row.tenant_id;
    end if;
  end loop;
end;
$$;

comment on function app_private.routing_pool_refresh_timed() is 'Refreshes the routing pool states that change with the clock: agents off duty or at a cap (who may be back: working hours beginning, time off or a holiday ending, a new day or week for their caps) and the ready agents of tenants with schedules (who may go off duty). Returns the tenants where an agent became ready (once per agent). Run every minute by routing__duty_drain (app_private.drain_queues_coming_on_duty); between two runs the pool may lag by up to a minute, never more permissively than the checks: route_lead checks every agent it reads in full.';
--! EndIncluded routing/routing_pool_refresh_timed.sql
--! Included routing/drain_queues_coming_on_duty.sql
create or replace function app_private.drain_queues_coming_on_duty(since timestamptz, until timestamptz) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_since timestamptz := drain_queues_coming_on_duty.since;
  v_until timestamptz := drain_queues_coming_on_duty.until;
  v_tenant uuid;
  v_count integer := 0;
begin
  for v_tenant in
    -- Working hours that began in the window (local time of each agent).
    select w.tenant_id
      from app_public.agent_working_hours w
      join app_public.agents a on a.tenant_id = w.tenant_id and a.id = w.agent_id and a.is_active
      cross join lateral (select app_hidden.agent_timezone(w.tenant_id, w.agent_id) as zone) z
      cross join lateral (select v_since at time zone z.zone as local_since, v_until at time zone z.zone as local_until) l
     where w.weekday = pg_catalog.date_part('isodow', l.local_until)
       and l.local_until::date + w.starts_at > l.local_since
       and l.local_until::date + w.starts_at <= l.local_until
    union
    -- Time off that ended in the window.
    select t.tenant_id from app_public.agent_time_off t where t.ends_at > v_since and t.ends_at <= v_until
    union
    -- A holiday that ended at midnight in the window (the business's time zone).
    select h.tenant_id
      from app_public.holidays h
      join app_public.business_settings bs on bs.tenant_id = h.tenant_id
     where h.day = (v_until at time zone bs.timezone)::date - 1
       and (v_since at time zone bs.timezone)::date < (v_until at time zone bs.timezone)::date
    union
    -- Agents the routing pool finds ready again (on duty, or a new day or week for their caps).
    select r.tenant_id from app_private.routing_pool_refresh_timed() r(tenant_id)
  loop
    -- Only tenants with leads waiting get a drain (one job per tenant, keyed).
    perform app_private.enqueue_queue_drain(v_tenant);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

comment on function app_private.drain_queues_coming_on_duty(timestamptz, timestamptz) is 'For every tenant where an agent came on duty between since (excluded) and until (included): working hours that began (in the agent''s time zone), time off that ended, or a holiday that ended at midnight: and every tenant where the routing pool finds an agent ready again (app_private.routing_pool_refresh_timed, which also refreshes the pool states that change with the clock, caps of a new day or week included): enqueues a drain of its routing queue when leads are waiting (app_private.enqueue_queue_drain), so leads queued while nobody worked are routed as soon as someone starts. Returns how many tenants were looked at. Run every minute by routing__duty_drain.';
--! EndIncluded routing/drain_queues_coming_on_duty.sql
