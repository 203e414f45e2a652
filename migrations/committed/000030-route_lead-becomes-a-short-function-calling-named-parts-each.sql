--! Previous: sha1:083399635954f60aa53e5f614c3053bf4eb7c152
--! Hash: sha1:371b91567a39b43b154e7b72abce8918831ca71b
--! Message: route_lead becomes a short function calling named parts, each in its own source file, with no change of behaviour: routing_refusal, routing_plan (static experiment call), routing_candidates, routing_claim with routing_try_agent (one copy of the lock-and-recheck step), routing_decide, routing_record; the plan travels as app_private.routing_context

-- Issue 15, step 1 of the redesign: route_lead becomes a short function calling named parts, each
-- in its own source file, with no change of behaviour (the routing tests are the oracle):
-- routing_refusal (leads that must not be routed), routing_plan (rule, strategy, experiment
-- variant by a static call, and what the checks need to know about the lead), routing_candidates
-- (every agent's checks, score and rank), routing_claim with routing_try_agent (the single copy of
-- the lock-and-recheck step), routing_decide (assign, offer or queue) and routing_record (history
-- and event). The plan travels between them as app_private.routing_context.

drop type if exists app_private.routing_context cascade;
create type app_private.routing_context as (
  tenant_id uuid,
  trigger text,
  lead app_public.leads,
  rule app_public.routing_rules,
  strategy text,
  order_strategy text,
  params jsonb,
  experiment_id uuid,
  variant_id uuid,
  restrict uuid[],
  queue_type text,
  queue_reason text,
  hot_threshold integer,
  tier text,
  tier_weight numeric,
  lat numeric,
  lon numeric,
  appt_range tstzrange,
  prev_owner uuid
);
comment on type app_private.routing_context is 'How one lead is to be routed, as app_private.routing_plan works it out and the other parts of route_lead read it: the tenant, trigger and lead (locked by route_lead); the matching rule; the strategy (null when a route_to_queue rule queues the lead: queue_type and queue_reason) and the one that orders candidates (order_strategy: score_tiered orders warm and cold leads by round robin); its parameters; the experiment and variant; the agents a rule allows (restrict, null for all); the hot threshold, tier and tier weight; the lead''s coordinates; its appointment range; its previous owner (direct_to_owner).';

--! Included routing/routing_refusal.sql
create or replace function app_private.routing_refusal(tenant_id uuid, lead app_public.leads, out reason text, out lead_closed boolean)
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := routing_refusal.tenant_id;
  v_lead app_public.leads := routing_refusal.lead;
begin
  lead_closed := true;
  if v_lead.deleted_at is not null then
    reason := 'The lead is deleted';
  elsif v_lead.status = 'dnc' or (v_lead.phone is not null and app_public.is_on_dnc_list(v_lead.phone, v_tenant)) then
    reason := pg_catalog.format('The lead''s number %s is on the do-not-contact list', coalesce(v_lead.phone::text, '(none)'));
  elsif exists (select 1 from app_public.lead_statuses s where s.status = v_lead.status and s.is_final) then
    reason := pg_catalog.format('The lead is closed (status %s)', v_lead.status);
  end if;
  if reason is not null then
    return;
  end if;
  lead_closed := false;
  if v_lead.owner_agent_id is not null then
    reason := pg_catalog.format('The lead is already assigned to agent %s',
      coalesce((select a.display_name from app_public.agents a where a.tenant_id = v_tenant and a.id = v_lead.owner_agent_id), v_lead.owner_agent_id::text));
  else
    select pg_catalog.format('The lead already has a pending offer (offer %s to %s)', o.id, a.display_name) into reason
      from app_public.routing_offers o join app_public.agents a on a.tenant_id = o.tenant_id and a.id = o.agent_id
     where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.status = 'pending';
  end if;
end;
$$;

comment on function app_private.routing_refusal(uuid, app_public.leads) is 'Why a lead must not be routed now, or a null reason: deleted, on the do-not-contact list (or status dnc), closed (a final status), already assigned to an agent, or holding a pending offer. lead_closed is true for the first three (the lead leaves any queue). Part of route_lead.';
--! EndIncluded routing/routing_refusal.sql
--! Included routing/routing_plan.sql
create or replace function app_private.routing_plan(tenant_id uuid, lead app_public.leads, trigger text) returns app_private.routing_context
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := routing_plan.tenant_id;
  v_trigger text := routing_plan.trigger;
  v_lead app_public.leads := routing_plan.lead;
  v_ctx app_private.routing_context;
  v_rule app_public.routing_rules;
  v_choice app_public.experiment_choice;
  v_setting jsonb;
begin
  v_ctx.tenant_id := v_tenant;
  v_ctx.trigger := v_trigger;
  v_ctx.lead := v_lead;
  v_ctx.params := '{}';

  -- Rule, strategy, experiment variant.
  v_rule := app_private.matching_routing_rule(v_tenant, v_lead.id);
  v_ctx.rule := v_rule;
  if v_rule.id is not null then
    v_ctx.strategy := v_rule.strategy;
    v_ctx.params := v_rule.strategy_params;
    -- An escalation widens the candidate set: the rule's agent list no longer limits it.
    if v_rule.action in ('route_to_agent', 'route_to_agents') and v_trigger <> 'escalation' then
      v_ctx.restrict := v_rule.agent_ids;
    end if;
  end if;
  if v_ctx.strategy is null then
    v_setting := app_private.routing_setting(v_tenant, 'routing.default_strategy');
    v_ctx.strategy := case when v_setting #>> '{}' in ('weighted_round_robin', 'least_loaded', 'best_match', 'score_tiered', 'direct_to_owner')
      then v_setting #>> '{}' else 'weighted_round_robin' end;
  end if;
  v_choice := app_private.experiment_variant_for_lead(v_tenant, v_lead.id);
  v_ctx.experiment_id := v_choice.experiment_id;
  v_ctx.variant_id := v_choice.variant_id;
  if v_choice.variant_id is not null and v_choice.strategy is not null then
    v_ctx.strategy := v_choice.strategy;
    v_ctx.params := coalesce(v_choice.parameters, '{}');
  end if;

  if v_rule.action = 'route_to_queue' and v_trigger <> 'escalation' then
    v_ctx.strategy := null;
    v_ctx.queue_type := v_rule.queue_type;
    v_ctx.queue_reason := pg_catalog.format('Rule "%s" sends the lead to the %s queue', v_rule.name, v_rule.queue_type);
    return v_ctx;
  end if;

  -- What the checks and the ordering need to know about the lead.
  v_ctx.hot_threshold := coalesce(case when v_ctx.params ->> 'hot_threshold' ~ '^\d{1,3}$' then (v_ctx.params ->> 'hot_threshold')::int end, 70);
  v_ctx.tier := case when v_lead.lead_score >= v_ctx.hot_threshold then 'hot' when v_lead.lead_score >= 40 then 'warm' else 'cold' end;
  v_ctx.tier_weight := coalesce(
    case when v_ctx.params #>> array['tier_weights', v_ctx.tier] ~ '^\d+(\.\d+)?$' then (v_ctx.params #>> array['tier_weights', v_ctx.tier])::numeric end,
    case v_ctx.tier when 'hot' then 1.0 when 'warm' then 0.8 else 0.6 end);
  if v_lead.attributes ->> 'latitude' ~ '^-?\d{1,2}(\.\d+)?$' and v_lead.attributes ->> 'longitude' ~ '^-?\d{1,3}(\.\d+)?$' then
    v_ctx.lat := (v_lead.attributes ->> 'latitude')::numeric;
    v_ctx.lon := (v_lead.attributes ->> 'longitude')::numeric;
  end if;
  v_ctx.order_strategy := case
    when v_ctx.strategy = 'score_tiered' and v_ctx.tier <> 'hot' then 'weighted_round_robin'
    else v_ctx.strategy end;
  if v_ctx.strategy = 'direct_to_owner' then
    select la.to_agent_id into v_ctx.prev_owner from app_public.lead_assignments la
     where la.tenant_id = v_tenant and la.lead_id = v_lead.id and la.to_agent_id is not null
     order by la.assigned_at desc, la.id desc limit 1;
    if v_ctx.prev_owner is null then
      select o.agent_id into v_ctx.prev_owner from app_public.routing_offers o
       where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.status = 'accepted'
       order by o.responded_at desc nulls last limit 1;
    end if;
    if v_ctx.prev_owner is null and (v_lead.phone is not null or v_lead.email is not null) then
      select l2.owner_agent_id into v_ctx.prev_owner from app_public.leads l2
       where l2.tenant_id = v_tenant and l2.id <> v_lead.id and l2.owner_agent_id is not null
         and (l2.phone = v_lead.phone or l2.email = v_lead.email)
       order by l2.updated_at desc limit 1;
    end if;
  end if;
  -- A requested appointment (service leads): the agent must not be busy then (app_hidden.agent_is_busy).
  if v_lead.appointment_at is not null then
    v_ctx.appt_range := pg_catalog.tstzrange(v_lead.appointment_at, v_lead.appointment_at + pg_catalog.make_interval(mins => coalesce(
      (select bs.service_appointment_minutes from app_public.business_settings bs where bs.tenant_id = v_tenant), 120)));
  end if;
  return v_ctx;
end;
$$;

comment on function app_private.routing_plan(uuid, app_public.leads, text) is 'How a lead is to be routed: the matching rule (app_private.matching_routing_rule), the strategy (the rule''s, else system_config routing.default_strategy, else weighted_round_robin; a running experiment''s variant overrides it), the agents a route_to_agent(s) rule allows (not on escalation), or the queue a route_to_queue rule sends it to (queue_type and queue_reason, strategy null); then the lead''s tier, coordinates, appointment range and, for direct_to_owner, its previous owner. Part of route_lead.';
--! EndIncluded routing/routing_plan.sql
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
           coalesce(pm.conv_hot, 0.5) as conversion_hot
      from app_public.agents a
      left join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
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
           b.skill_ok and b.language_ok and b.area_ok and b.availability_ok and b.capacity_ok and b.slot_ok and b.free_ok and b.not_rejected as eligible,
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
             'capacity', r.capacity_ok, 'slot', r.slot_ok, 'free', r.free_ok, 'not_rejected', r.not_rejected),
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
             'not_rejected', case when not r.not_rejected then 'already rejected this lead or let its offer expire' end)),
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

comment on function app_private.routing_candidates(app_private.routing_context) is 'The candidates of a routing decision: every active agent of the tenant (only the rule''s agents when the plan restricts them), each with its checks (skill, language, area, availability, capacity, slot, free, not_rejected), the reasons of the failed ones, its score and rank in the strategy''s order (candidates, the jsonb stored in lead_routing_history), the eligible agents'' ids in that order (agent_order), and the round-robin virtual time of the eligible agents (pass_floor). Reads only. Part of route_lead.';
--! EndIncluded routing/routing_candidates.sql
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
    return;
  end if;
  if appt_range is not null and app_hidden.agent_is_busy(v_tenant, v_agent, appt_range, v_lead.id) then
    note := 'became busy at the requested time while routing';
    return;
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
      return;
    end if;
  end if;
  claimed := true;
end;
$$;

comment on function app_private.routing_try_agent(uuid, uuid, app_public.leads, tstzrange, boolean) is 'Tries to take one candidate for a lead: locks the agent''s agent_availability row (skip locked unless wait; skipped = another routing holds it), re-checks status, load, busy time and, for an event lead, locks a free slot on the event date (slot_id). claimed when all hold; otherwise note says what changed. The single copy of the lock-and-recheck step of route_lead (routing_claim calls it).';
--! EndIncluded routing/routing_try_agent.sql
--! Included routing/routing_claim.sql
create or replace function app_private.routing_claim(ctx app_private.routing_context, agent_order uuid[], out chosen uuid, out chosen_slot uuid, out notes jsonb)
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
  if pg_catalog.cardinality(v_skipped) = 0 then
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

comment on function app_private.routing_claim(app_private.routing_context, uuid[]) is 'Takes the first agent of agent_order that can be locked and still holds (app_private.routing_try_agent): a first pass skips agents other routings hold; only if it finds nobody does it wait for those, starting at one drawn in proportion to routing_weight, so busy tenants see no false "no agent available". Returns the agent, its locked slot for an event lead, and a note per agent that changed while routing. Part of route_lead.';
--! EndIncluded routing/routing_claim.sql
--! Included routing/routing_decide.sql
create or replace function app_private.routing_decide(ctx app_private.routing_context, candidates jsonb, agent_order uuid[], pass_floor numeric,
  chosen uuid, chosen_slot uuid, out outcome text, out reason text, out offer_id uuid, out expires timestamptz, out queue_type text)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := ctx.tenant_id;
  v_trigger text := ctx.trigger;
  v_lead app_public.leads := ctx.lead;
  v_rule app_public.routing_rules := ctx.rule;
  v_strategy text := ctx.strategy;
  v_order_strategy text := ctx.order_strategy;
  v_variant_id uuid := ctx.variant_id;
  v_restrict uuid[] := ctx.restrict;
  v_tier text := ctx.tier;
  v_hot_threshold int := ctx.hot_threshold;
  v_prev_owner uuid := ctx.prev_owner;
  v_candidates jsonb := routing_decide.candidates;
  v_order uuid[] := routing_decide.agent_order;
  v_pass_floor numeric := routing_decide.pass_floor;
  v_chosen uuid := routing_decide.chosen;
  v_chosen_slot uuid := routing_decide.chosen_slot;
  v_reason text := ctx.queue_reason;
  v_queue_type text := ctx.queue_type;
  v_outcome text;
  v_offer_id uuid;
  v_expires timestamptz;
  v_failed text;
  v_wrr_used boolean := false;
  v_stride numeric;
  v_timeout numeric;
  v_direct boolean;
  v_sla numeric;
  v_agent_name text;
  v_agent_user uuid;
  v_assign_strategy text;
  v_prev_setting_strategy text;
  v_prev_setting_reason text;
  v_prev_setting_source text;
  v_setting jsonb;
begin
  -- Nobody taken: say why (a route_to_queue rule already said so in the plan).
  if v_chosen is null and v_reason is null then
    if v_order is null then
      select pg_catalog.string_agg(pg_catalog.format('%s %s', c.n, c.k), ', ' order by c.n desc, c.k) into v_failed
        from (select k.key as k, pg_catalog.count(*) as n
                from pg_catalog.jsonb_array_elements(v_candidates) e, pg_catalog.jsonb_each(e -> 'checks') k
               where k.value = 'false'::jsonb group by k.key) c;
      v_reason := case when pg_catalog.jsonb_array_length(v_candidates) = 0
        then case when v_restrict is not null then pg_catalog.format('No eligible agent: rule "%s" allows no active agent', v_rule.name)
                  else 'No eligible agent: the tenant has no active agents' end
        else pg_catalog.format('No eligible agent among %s considered (failed checks: %s)', pg_catalog.jsonb_array_length(v_candidates), v_failed) end;
    else
      v_reason := pg_catalog.format('No agent available: all %s eligible agents became busy or unavailable while routing', pg_catalog.cardinality(v_order));
    end if;
  end if;

  -- The decision.
  if v_chosen is not null then
    v_wrr_used := v_order_strategy = 'weighted_round_robin'
      or (v_order_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner);
    select a.display_name, a.user_id, 1::numeric / a.routing_weight into v_agent_name, v_agent_user, v_stride
      from app_public.agents a where a.tenant_id = v_tenant and a.id = v_chosen;
    update app_public.agent_availability av set current_load = av.current_load + 1
     where av.tenant_id = v_tenant and av.agent_id = v_chosen;
    if v_wrr_used then
      -- Stride scheduling: only the pass of the chosen agent moves (clamped to the virtual time
      -- of the eligible agents, then one stride on). Its agent_availability row is locked by this
      -- transaction, so no other routing writes this row before we commit.
      insert into app_public.agent_routing_credits as c (agent_id, tenant_id, pass)
      values (v_chosen, v_tenant, greatest(v_stride, coalesce(v_pass_floor, 0)) + v_stride)
      on conflict (agent_id) do update
        set pass = greatest(c.pass, coalesce(v_pass_floor, 0)) + v_stride,
            updated_at = pg_catalog.now();
    end if;
    v_assign_strategy := case
      when v_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner then 'weighted_round_robin'
      when v_rule.action in ('route_to_agent', 'route_to_agents') and v_rule.strategy is null and v_variant_id is null then 'rule'
      else v_strategy end;
    v_reason := pg_catalog.format('%s chosen by %s%s', v_agent_name, pg_catalog.replace(v_assign_strategy, '_', ' '),
      case when v_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner then
        case when v_prev_owner is null then ' (direct to owner: the lead has no previous owner)'
             else ' (direct to owner: the previous owner is not eligible or busy)' end
      when v_strategy = 'direct_to_owner' then ' (direct to owner: the previous owner)'
      when v_strategy = 'score_tiered' then pg_catalog.format(' (score tiered: %s lead)', v_tier)
      else '' end);

    v_direct := coalesce(case when pg_catalog.jsonb_typeof(app_private.routing_setting(v_tenant, 'routing.direct_assignment')) = 'boolean'
      then (app_private.routing_setting(v_tenant, 'routing.direct_assignment'))::text::boolean end, false);
    if v_direct then
      v_outcome := 'assigned';
      v_prev_setting_strategy := pg_catalog.current_setting('app.assignment_strategy', true);
      v_prev_setting_reason := pg_catalog.current_setting('app.assignment_reason', true);
      v_prev_setting_source := pg_catalog.current_setting('app.change_source', true);
      perform pg_catalog.set_config('app.assignment_strategy', v_assign_strategy, true);
      perform pg_catalog.set_config('app.assignment_reason', 'Routing: ' || v_reason, true);
      perform pg_catalog.set_config('app.change_source', 'routing', true);
      update app_public.leads l
         set owner_agent_id = v_chosen,
             owner_user_id = coalesce(v_agent_user, l.owner_user_id)
       where l.tenant_id = v_tenant and l.id = v_lead.id;
      perform pg_catalog.set_config('app.assignment_strategy', coalesce(v_prev_setting_strategy, ''), true);
      perform pg_catalog.set_config('app.assignment_reason', coalesce(v_prev_setting_reason, ''), true);
      perform pg_catalog.set_config('app.change_source', coalesce(v_prev_setting_source, ''), true);
      if v_chosen_slot is not null then
        update app_public.availability_slots s
           set status = 'booked', booked_lead_id = v_lead.id, locked_until = null, locked_by_lead_id = null
         where s.id = v_chosen_slot;
      end if;
    else
      v_outcome := 'offered';
      v_setting := app_private.routing_setting(v_tenant, 'routing.offer_timeout_seconds');
      v_timeout := case when pg_catalog.jsonb_typeof(v_setting) = 'number' and (v_setting::text)::numeric > 0 then (v_setting::text)::numeric else 120 end;
      v_expires := pg_catalog.now() + pg_catalog.make_interval(secs => v_timeout::float8);
      insert into app_public.routing_offers (tenant_id, lead_id, agent_id, slot_id, expires_at)
      values (v_tenant, v_lead.id, v_chosen, v_chosen_slot, v_expires)
      returning id into v_offer_id;
      if v_chosen_slot is not null then
        update app_public.availability_slots s set locked_until = v_expires, locked_by_lead_id = v_lead.id
         where s.id = v_chosen_slot;
      end if;
      perform app_private.add_job('routing__expire_offer', pg_catalog.json_build_object('offer_id', v_offer_id),
        run_at => v_expires, job_key => 'routing_offer:' || v_offer_id);
      v_reason := v_reason || pg_catalog.format('; offer expires in %s s', v_timeout);
    end if;
    update app_public.assignment_queue q set dequeued_at = pg_catalog.now(), dequeue_reason = 'routed'
     where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null;
  else
    -- Nobody: wait in a queue with an SLA.
    v_outcome := 'queued';
    v_queue_type := coalesce(v_queue_type, case
      when v_trigger in ('escalation', 'offer_rejected', 'offer_expired') then 'reassignment'
      when v_lead.lead_score >= coalesce(v_hot_threshold, 70) or v_lead.status = 'hot' then 'hot'
      when v_lead.status in ('nurturing', 'cold') then 'nurture'
      when v_lead.event_date is not null then 'waiting'
      else 'active' end);
    v_setting := app_private.routing_setting(v_tenant, 'routing.sla_seconds.' || v_queue_type);
    v_sla := case when pg_catalog.jsonb_typeof(v_setting) = 'number' and (v_setting::text)::numeric > 0 then (v_setting::text)::numeric
      else case v_queue_type when 'hot' then 300 when 'active' then 900 when 'reassignment' then 600 when 'nurture' then 86400 else 3600 end end;
    -- A lead already waiting keeps its place (the lead row lock serialises routing of this lead;
    -- the unique index assignment_queue_one_waiting_entry_per_lead is the backstop).
    if not exists (select 1 from app_public.assignment_queue q
                    where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null) then
      begin
        insert into app_public.assignment_queue (tenant_id, lead_id, queue_type, priority, lead_score, sla_expires_at)
        values (v_tenant, v_lead.id, v_queue_type,
          case v_queue_type when 'reassignment' then 300 when 'hot' then 200 when 'active' then 100 when 'waiting' then 50 else 0 end,
          v_lead.lead_score, pg_catalog.now() + pg_catalog.make_interval(secs => v_sla::float8));
      exception when unique_violation then
        null;
      end;
    end if;
    v_reason := v_reason || pg_catalog.format('; queued in %s', v_queue_type);
  end if;

  outcome := v_outcome;
  reason := v_reason;
  offer_id := v_offer_id;
  expires := v_expires;
  queue_type := v_queue_type;
end;
$$;

comment on function app_private.routing_decide(app_private.routing_context, jsonb, uuid[], numeric, uuid, uuid) is 'Carries out a routing decision. With an agent: adds 1 to its load, moves its round-robin pass (stride scheduling) when round robin chose it, then assigns the lead (system_config routing.direct_assignment: owner, booked slot, lead_assignments with the strategy) or offers it (routing_offers expiring after routing.offer_timeout_seconds, the slot locked until then, a routing__expire_offer job), and takes the lead out of any queue. Without one: queues it with the SLA of its queue (an entry already waiting keeps its place). Returns the outcome (assigned, offered, queued) and the reason in words. Part of route_lead.';
--! EndIncluded routing/routing_decide.sql
--! Included routing/routing_record.sql
create or replace function app_private.routing_record(ctx app_private.routing_context, candidates jsonb, notes jsonb, chosen uuid, chosen_slot uuid,
  outcome text, reason text, offer_id uuid, expires timestamptz, queue_type text) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_candidates jsonb := coalesce(routing_record.candidates, '[]'::jsonb);
  v_notes jsonb := coalesce(routing_record.notes, '{}'::jsonb);
  v_history_id bigint;
begin
  -- Lock-time notes go with their candidates.
  if v_notes <> '{}'::jsonb then
    select pg_catalog.jsonb_agg(case when v_notes ? (e ->> 'agent_id') then e || pg_catalog.jsonb_build_object('lock', v_notes ->> (e ->> 'agent_id')) else e end
             order by o.n)
      into v_candidates
      from pg_catalog.jsonb_array_elements(v_candidates) with ordinality o(e, n);
  end if;

  insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, strategy, rule_id, experiment_id, variant_id, lead_score,
    candidates, chosen_agent_id, outcome, reason)
  values (ctx.tenant_id, (ctx.lead).id, ctx.trigger, ctx.strategy, (ctx.rule).id, ctx.experiment_id, ctx.variant_id, (ctx.lead).lead_score,
    v_candidates, chosen, outcome, reason)
  returning id into v_history_id;
  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values (ctx.tenant_id, (ctx.lead).id, chosen, offer_id, outcome,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('history_id', v_history_id, 'strategy', ctx.strategy,
      'queue_type', queue_type, 'expires_at', expires, 'slot_id', chosen_slot, 'reason', reason)));
  return v_history_id;
end;
$$;

comment on function app_private.routing_record(app_private.routing_context, jsonb, jsonb, uuid, uuid, text, text, uuid, timestamptz, text) is 'Writes the record of a routing decision: the lead_routing_history row (strategy, rule, experiment variant, lead score, the candidates with the notes of those that changed while routing, the chosen agent, outcome and reason) and its routing_events row; returns the history id. Also records leads that were not routed (outcome not_routed, no candidates). Part of route_lead.';
--! EndIncluded routing/routing_record.sql
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
    return app_private.routing_record(v_ctx, '[]'::jsonb, '{}'::jsonb, null, null, 'not_routed', v_refusal.reason, null, null, null);
  end if;

  -- Rule, strategy and experiment variant; then the candidates in the strategy's order, the first
  -- that can be taken, the decision carried out, and its record.
  v_ctx := app_private.routing_plan(v_tenant, v_lead, v_trigger);
  if v_ctx.queue_reason is null then
    select c.candidates, c.agent_order, c.pass_floor into v_candidates, v_order, v_pass_floor
      from app_private.routing_candidates(v_ctx) c;
    select c.chosen, c.chosen_slot, c.notes into v_chosen, v_chosen_slot, v_notes
      from app_private.routing_claim(v_ctx, v_order) c;
  end if;
  select * into v_decision from app_private.routing_decide(v_ctx, v_candidates, v_order, v_pass_floor, v_chosen, v_chosen_slot);
  return app_private.routing_record(v_ctx, v_candidates, v_notes, v_chosen, v_chosen_slot,
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
