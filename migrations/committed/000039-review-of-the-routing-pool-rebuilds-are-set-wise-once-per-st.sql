--! Previous: sha1:d6deb1828f3c9d48193fd11f5d249eab368da6a3
--! Hash: sha1:3240d207dfad4b27aa831421313b637940b506e7
--! Message: Review of the routing pool: rebuilds are set-wise, once per statement (a bulk load updates each tally once), and serialised with the decisions holding the agent; refreshes too; deleting agents counts their tenants again. The queries of a decision use one generic plan (agent lists change every call), reading the batch by primary key.

-- Review of the routing pool.
-- 1. Builds and refreshes of an agent's rows are serialised with the routing decisions that hold the
--    agent (its availability row), so that a rebuild or a refresh running beside a decision never
--    writes the state from before it.
-- 2. Rebuilds are set-wise, once per statement (transition tables), so that a statement writing
--    many agents, specializations or areas updates each tally once, not once per row (thousands of
--    versions of one row that a decision then walks through); deleting agents counts their
--    tenants' tallies again.
drop trigger if exists _500_routing_pool on app_public.agents;
drop trigger if exists _500_routing_pool_before_delete on app_public.agents;
drop trigger if exists _500_routing_pool on app_public.agent_specializations;
drop trigger if exists _500_routing_pool on app_public.agent_service_areas;
drop function if exists app_private.routing_pool_build(uuid, uuid);
drop function if exists app_private.routing_pool_tally_add(uuid, uuid, integer);
--! Included routing/routing_pool_build.sql
create or replace function app_private.routing_pool_build(agent_ids uuid[]) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_rows integer;
begin
  -- One build or refresh of an agent at a time, after any routing decision holding the agent: the
  -- agent rows, then their availability rows, each in id order (routing never reverses this order;
  -- FOR NO KEY UPDATE leaves foreign key checks on the agents free).
  perform 1 from app_public.agents a where a.id = any (agent_ids) order by a.id for no key update;
  perform 1 from app_public.agent_availability av where av.agent_id = any (agent_ids) order by av.agent_id for no key update;
  -- Then one build per tenant at a time (its tallies), tenants in id order.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('routing_pool_tally:' || x.tenant_id::text, 0))
     from (select distinct a.tenant_id from app_public.agents a where a.id = any (agent_ids) order by a.tenant_id) x;

  -- The tallies lose the agents as they were (their lines, and lines by area key) ...
  update app_private.routing_pool_tally t set agents = t.agents - x.n
    from (select p.tenant_id, p.line, k.area_key, pg_catalog.count(distinct p.agent_id) as n
            from app_private.routing_pool p
            cross join lateral (values (''), (p.area_key)) k(area_key)
           where p.agent_id = any (agent_ids)
           group by p.tenant_id, p.line, k.area_key) x
   where t.tenant_id = x.tenant_id and t.line = x.line and t.area_key = x.area_key;
  delete from app_private.routing_pool p where p.agent_id = any (agent_ids);

  -- ... the rows are written again for the active agents ...
  insert into app_private.routing_pool (tenant_id, agent_id, line, area_key, state, pass, weight, load_ratio, proficiency, conv_hot, conv_warm, conv_cold, multi_kind)
  select a.tenant_id, a.id, l.line, k.area_key, s.state, s.pass, s.weight, s.load_ratio, l.proficiency, s.conv_hot, s.conv_warm, s.conv_cold,
         k.multi_kind
    from app_public.agents a
    cross join lateral app_private.routing_pool_state(a.tenant_id, a.id) s
    -- The lines: every service line of a specialization, and the empty line (leads without one).
    cross join lateral (
      select '' as line, coalesce(pg_catalog.max(sp.proficiency), 3) as proficiency
        from app_public.agent_specializations sp where sp.tenant_id = a.tenant_id and sp.agent_id = a.id
      union all
      select sp.service_line, pg_catalog.max(sp.proficiency)
        from app_public.agent_specializations sp where sp.tenant_id = a.tenant_id and sp.agent_id = a.id
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
               where z.tenant_id = a.tenant_id and z.agent_id = a.id) ak
        cross join lateral pg_catalog.unnest(case when ak.n = 0 then array['*'] else coalesce(ak.area_keys, array['-']) end) u(area_key)
    ) k
   where a.id = any (agent_ids) and a.is_active;
  get diagnostics v_rows = row_count;

  -- ... and gain them as they are. A tally at 0 goes.
  insert into app_private.routing_pool_tally as t (tenant_id, line, area_key, agents)
  select p.tenant_id, p.line, k.area_key, pg_catalog.count(distinct p.agent_id)
    from app_private.routing_pool p
    cross join lateral (values (''), (p.area_key)) k(area_key)
   where p.agent_id = any (agent_ids)
   group by p.tenant_id, p.line, k.area_key
   order by p.tenant_id, p.line, k.area_key
  on conflict on constraint routing_pool_tally_pkey do update set agents = t.agents + excluded.agents;
  delete from app_private.routing_pool_tally t
   where t.agents = 0 and t.tenant_id in (select a.tenant_id from app_public.agents a where a.id = any (agent_ids));
  return v_rows;
end;
$$;

comment on function app_private.routing_pool_build(uuid[]) is 'Rebuilds the rows of app_private.routing_pool of the given agents (of any tenants): one per line the agent can take (the empty line and each service line of its specializations, with its best proficiency there) and area key it serves, with its state (app_private.routing_pool_state); none for an inactive or deleted agent; and moves the agents in the tallies of app_private.routing_pool_tally (per line, and per line and area key; a tally at 0 is deleted). Set-wise, so that a statement writing many agents, specializations or areas updates each tally once. Serialised per agent (locks the agents and their availability rows, in id order), so that it never writes a state older than a concurrent decision''s, then per tenant (a transaction advisory lock), so that concurrent builds never deadlock on the tallies. Returns the number of pool rows written. Called by the triggers on agents, agent_specializations and agent_service_areas.';
--! EndIncluded routing/routing_pool_build.sql
--! Included routing/routing_pool_tally_recount.sql
create or replace function app_private.routing_pool_tally_recount(tenant_ids uuid[]) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
begin
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('routing_pool_tally:' || x.t::text, 0))
     from (select distinct u.t from pg_catalog.unnest(tenant_ids) u(t) order by u.t) x;
  -- The tenants' tallies, counted again from their pool rows (after agents were deleted: their
  -- rows went with them).
  delete from app_private.routing_pool_tally t where t.tenant_id = any (tenant_ids);
  insert into app_private.routing_pool_tally (tenant_id, line, area_key, agents)
  select p.tenant_id, p.line, k.area_key, pg_catalog.count(distinct p.agent_id)
    from app_private.routing_pool p
    cross join lateral (values (''), (p.area_key)) k(area_key)
   where p.tenant_id = any (tenant_ids)
   group by p.tenant_id, p.line, k.area_key
   order by p.tenant_id, p.line, k.area_key;
end;
$$;

comment on function app_private.routing_pool_tally_recount(uuid[]) is 'Counts the tallies of app_private.routing_pool_tally of the given tenants again from their routing pool rows. Called after agents are deleted (their pool rows go with them, by the foreign key); reads the tenants'' pool once per deleting statement.';
--! EndIncluded routing/routing_pool_tally_recount.sql
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
  -- After any routing decision holding the agent (its availability row), so that the state
  -- written is never older than the one a concurrent decision commits.
  perform 1 from app_public.agent_availability av
   where av.tenant_id = routing_pool_sync.tenant_id and av.agent_id = v_agent for no key update;
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

comment on function app_private.routing_pool_sync(uuid, uuid) is 'Refreshes the state, round-robin pass, weight, load ratio and conversion rates of an agent''s rows of app_private.routing_pool (app_private.routing_pool_state); returns true when the agent has just become ready. Rows are only written when something changed; the agent''s availability row is locked first, so that concurrent changes of an agent are refreshed one after the other. Called by the triggers on agent_availability, agent_routing_credits, agent_performance_metrics, agent_working_hours, agent_time_off, holidays and business_settings, and every minute for states that change with the clock (app_private.routing_pool_refresh_timed).';
--! EndIncluded routing/routing_pool_sync.sql
--! Included routing/tg_routing_pool__build.sql
create or replace function app_private.tg_routing_pool__build() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_ids uuid[];
begin
  -- Statement triggers (with the rows written) on inserts, updates and deletes of agent_specializations
  -- and agent_service_areas, and inserts of agents; a row trigger on changes of agents.is_active.
  if tg_level = 'ROW' then
    perform app_private.routing_pool_build(array[new.id]);
    return null;
  end if;
  if tg_table_name = 'agents' then
    v_ids := array(select n.id from new_rows n);
  elsif tg_op = 'INSERT' then
    v_ids := array(select distinct n.agent_id from new_rows n);
  elsif tg_op = 'UPDATE' then
    v_ids := array(select n.agent_id from new_rows n union select o.agent_id from old_rows o);
  else
    v_ids := array(select distinct o.agent_id from old_rows o);
  end if;
  perform app_private.routing_pool_build(v_ids);
  return null;
end;
$$;

comment on function app_private.tg_routing_pool__build() is 'Trigger: rebuilds the routing pool rows of the agents a statement touched (app_private.routing_pool_build), since their lines, areas or activity may have changed. Once per statement on inserts of agents and on inserts, updates and deletes of agent_specializations and agent_service_areas (so a bulk load updates each tally once), once per row on changes of agents.is_active.';
--! EndIncluded routing/tg_routing_pool__build.sql
--! Included routing/tg_routing_pool__forget.sql
create or replace function app_private.tg_routing_pool__forget() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- The deleted agents' pool rows went with them (foreign key): count their tenants again.
  perform app_private.routing_pool_tally_recount(array(select distinct o.tenant_id from old_rows o));
  return null;
end;
$$;

comment on function app_private.tg_routing_pool__forget() is 'Trigger (after each statement deleting agents): counts the routing pool tallies of their tenants again (app_private.routing_pool_tally_recount); their pool rows went with them.';
--! EndIncluded routing/tg_routing_pool__forget.sql

drop trigger if exists _500_routing_pool_insert on app_public.agents;
create trigger _500_routing_pool_insert after insert on app_public.agents
  referencing new table as new_rows for each statement execute function app_private.tg_routing_pool__build();
drop trigger if exists _500_routing_pool_activity on app_public.agents;
create trigger _500_routing_pool_activity after update of is_active on app_public.agents
  for each row when (old.is_active is distinct from new.is_active) execute function app_private.tg_routing_pool__build();
drop trigger if exists _500_routing_pool_delete on app_public.agents;
create trigger _500_routing_pool_delete after delete on app_public.agents
  referencing old table as old_rows for each statement execute function app_private.tg_routing_pool__forget();
do $$
declare
  v_table text;
begin
  foreach v_table in array array['agent_specializations', 'agent_service_areas'] loop
    execute format('drop trigger if exists _500_routing_pool_insert on app_public.%I', v_table);
    execute format('create trigger _500_routing_pool_insert after insert on app_public.%I referencing new table as new_rows
                      for each statement execute function app_private.tg_routing_pool__build()', v_table);
    execute format('drop trigger if exists _500_routing_pool_update on app_public.%I', v_table);
    execute format('create trigger _500_routing_pool_update after update on app_public.%I referencing new table as new_rows old table as old_rows
                      for each statement execute function app_private.tg_routing_pool__build()', v_table);
    execute format('drop trigger if exists _500_routing_pool_delete on app_public.%I', v_table);
    execute format('create trigger _500_routing_pool_delete after delete on app_public.%I referencing old table as old_rows
                      for each statement execute function app_private.tg_routing_pool__build()', v_table);
  end loop;
end;
$$;

-- A generic plan for the queries of a decision whose agent lists change on every call (a custom
-- plan each time cost more to make than to run).
--! Included routing/routing_candidates.sql
create or replace function app_private.routing_candidates(ctx app_private.routing_context, out candidates jsonb, out agent_order uuid[], out pass_floor numeric)
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
  -- One plan for every call: the agent list changes each time, and planning this anew costs more than running it.
  set plan_cache_mode to force_generic_plan
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := ctx.tenant_id;
  v_lead app_public.leads := ctx.lead;
  -- The agents to check: a rule's agents or a batch read from the routing pool, else every active agent.
  v_ids uuid[] := coalesce(ctx.restrict,
    (select pg_catalog.array_agg(a.id) from app_public.agents a where a.tenant_id = ctx.tenant_id and a.is_active), '{}');
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
      -- The agents of the list, read by primary key (one plan for every call, whatever the team's size).
      from app_public.agents a
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
     where a.tenant_id = v_tenant and a.is_active and a.id = any (v_ids)
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
--! Included routing/routing_pool_next.sql
create or replace function app_private.routing_pool_next(ctx app_private.routing_context, area_keys text[], examined uuid[], n integer) returns uuid[]
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
  -- One plan for every call: the agent list changes each time, and planning this anew costs more than running it.
  set plan_cache_mode to force_generic_plan
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
  -- One plan for every call: the agent list changes each time, and planning this anew costs more than running it.
  set plan_cache_mode to force_generic_plan
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
