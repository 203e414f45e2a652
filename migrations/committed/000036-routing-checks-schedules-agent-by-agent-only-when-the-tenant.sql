--! Previous: sha1:c1af55064960704043d09664cca530b0bbe653c5
--! Hash: sha1:f0731a8a8dbc59e6c87121f16015f39df7817367
--! Message: Routing checks schedules agent by agent only when the tenant has any, and computes the day and week of the caps in the query instead of a function call per agent

-- Routing checks schedules agent by agent only when the tenant has any (working hours, time off now,
-- a holiday around today): most tenants have none, and the check cost them a query per agent. The
-- day and week the caps count in are computed in the query rather than by a function call per agent.

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
  -- Caps and working hours count in the agent's time zone, else the business's.
  v_business_tz text := coalesce((select bs.timezone from app_public.business_settings bs where bs.tenant_id = ctx.tenant_id), 'UTC');
  -- Schedules are checked agent by agent only when the tenant has any (most have none).
  v_schedules boolean := exists (select 1 from app_public.agent_working_hours w where w.tenant_id = ctx.tenant_id)
    or exists (select 1 from app_public.agent_time_off t where t.tenant_id = ctx.tenant_id and t.starts_at <= pg_catalog.now() and t.ends_at > pg_catalog.now())
    or exists (select 1 from app_public.holidays h where h.tenant_id = ctx.tenant_id
                and h.day between current_date - 1 and current_date + 1);
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
      from app_public.agents a
      left join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
      -- The agent's day and week (as app_hidden.agent_cap_period computes them, written out so that
      -- no function is called per agent).
      cross join lateral (
        select (pg_catalog.now() at time zone coalesce(a.timezone, v_business_tz))::date as day,
               pg_catalog.date_trunc('week', pg_catalog.now() at time zone coalesce(a.timezone, v_business_tz))::date as week
      ) cp
      left join app_public.agent_routing_credits cr on cr.agent_id = a.id
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
     where a.tenant_id = v_tenant and a.is_active
       and (v_restrict is null or a.id = any (v_restrict))
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
