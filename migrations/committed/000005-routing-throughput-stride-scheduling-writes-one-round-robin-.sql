--! Previous: sha1:c170e189f0cdac7d962cadaebb36053739aefcaf
--! Hash: sha1:0bf139049c4e7908ee02b4a8d12ea7c660b79ebe
--! Message: Routing throughput: stride scheduling writes one round-robin row per decision; HOT load updates; weighted waits

--------------------------------------------------------------------------------
-- Routing throughput: stride scheduling for weighted round robin.
--
-- Smooth weighted round robin (000004) updated the credit row of every eligible agent on
-- every decision, so all routing of a tenant queued behind those row locks. Stride scheduling
-- keeps the same guarantees with one row per decision: each agent has a virtual "pass" (the
-- virtual time of its next lead); the eligible agent with the lowest pass goes next and its
-- pass grows by 1/routing_weight. An agent that comes back after being ineligible (offline,
-- break, at capacity, not matching) is clamped to the virtual time of the others, so it gets
-- no burst. Only the row of the chosen agent is written, under the agent_availability lock that
-- route_lead already holds for that agent.
--------------------------------------------------------------------------------

alter table app_public.agent_routing_credits add column if not exists pass numeric;
update app_public.agent_routing_credits set pass = 0 where pass is null;
alter table app_public.agent_routing_credits alter column pass set default 0, alter column pass set not null;
alter table app_public.agent_routing_credits drop column if exists credit;
comment on table app_public.agent_routing_credits is $$The weighted round-robin ledger (stride scheduling): one row per agent who received a lead by round robin. pass is the virtual time of the next lead of the agent: the eligible agent with the lowest pass is chosen next, and its pass then grows by 1 / routing_weight, so over time an agent with weight 2 gets twice the leads of weight 1. An agent coming back from offline, a break, full capacity or a run of leads it could not take is clamped to the virtual time of the others (no burst of saved-up turns); agents joining or leaving do not reset anyone. route_lead writes only the row of the chosen agent.$$;
comment on column app_public.agent_routing_credits.pass is 'Virtual time of the agent''s next round-robin lead (lower goes first); grows by 1 / routing_weight per lead received by round robin.';
comment on column app_public.agent_routing_credits.updated_at is 'When the pass last changed.';

-- Load changes on every routing decision: with current_load out of the index key, those updates
-- are HOT (no index entries to add), and the index still finds a tenant's available agents.
drop index if exists app_public.agent_availability_routable;
create index agent_availability_routable on app_public.agent_availability (tenant_id, status);
comment on index app_public.agent_availability_routable is 'Finds the available agents of a tenant (queue drains). current_load is deliberately not in the key, so that load changes stay HOT updates.';
alter table app_public.agent_availability set (fillfactor = 50);

create or replace function app_private.route_lead(tenant_id uuid, lead_id uuid, trigger text) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := route_lead.tenant_id;
  v_trigger text := route_lead.trigger;
  v_lead app_public.leads;
  v_rule app_public.routing_rules;
  v_strategy text;
  v_order_strategy text;
  v_params jsonb := '{}';
  v_experiment_id uuid;
  v_variant_id uuid;
  v_variant_strategy text;
  v_variant_params jsonb;
  v_restrict uuid[];
  v_tier text;
  v_tier_weight numeric;
  v_hot_threshold int;
  v_lat numeric;
  v_lon numeric;
  v_prev_owner uuid;
  v_candidates jsonb := '[]';
  v_order uuid[];
  v_eligible uuid[];
  v_skipped uuid[] := '{}';
  v_agent uuid;
  v_av app_public.agent_availability;
  v_slot uuid;
  v_chosen uuid;
  v_chosen_slot uuid;
  v_notes jsonb := '{}';
  v_wrr_used boolean := false;
  v_pass_floor numeric;
  v_stride numeric;
  v_wait_from int;
  v_outcome text;
  v_reason text;
  v_queue_type text;
  v_history_id bigint;
  v_offer_id uuid;
  v_expires timestamptz;
  v_timeout numeric;
  v_direct boolean;
  v_sla numeric;
  v_agent_name text;
  v_agent_user uuid;
  v_assign_strategy text;
  v_prev_setting_strategy text;
  v_prev_setting_reason text;
  v_prev_setting_source text;
  v_failed text;
  v_setting jsonb;
begin
  if v_trigger is null or v_trigger not in ('new_lead', 'manual', 'offer_rejected', 'offer_expired', 'agent_available', 'escalation', 'requeue') then
    raise exception 'Invalid routing trigger ''%'': use new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue', v_trigger
      using errcode = '22023';
  end if;

  -- 1. The lead, locked: one routing decision per lead at a time.
  select l.* into v_lead from app_public.leads l
   where l.tenant_id = v_tenant and l.id = route_lead.lead_id
   for no key update;
  if not found then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;

  -- 2. Leads that must not be routed.
  if v_lead.deleted_at is not null then
    v_reason := 'The lead is deleted';
  elsif v_lead.status = 'dnc' or (v_lead.phone is not null and app_public.is_on_dnc_list(v_lead.phone, v_tenant)) then
    v_reason := pg_catalog.format('The lead''s number %s is on the do-not-contact list', coalesce(v_lead.phone::text, '(none)'));
  elsif exists (select 1 from app_public.lead_statuses s where s.status = v_lead.status and s.is_final) then
    v_reason := pg_catalog.format('The lead is closed (status %s)', v_lead.status);
  end if;
  if v_reason is not null then
    update app_public.assignment_queue q set dequeued_at = pg_catalog.now(), dequeue_reason = 'lead_closed'
     where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null;
  elsif v_lead.owner_agent_id is not null then
    v_reason := pg_catalog.format('The lead is already assigned to agent %s',
      coalesce((select a.display_name from app_public.agents a where a.tenant_id = v_tenant and a.id = v_lead.owner_agent_id), v_lead.owner_agent_id::text));
  else
    select pg_catalog.format('The lead already has a pending offer (offer %s to %s)', o.id, a.display_name) into v_reason
      from app_public.routing_offers o join app_public.agents a on a.tenant_id = o.tenant_id and a.id = o.agent_id
     where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.status = 'pending';
  end if;
  if v_reason is not null then
    insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, lead_score, outcome, reason)
    values (v_tenant, v_lead.id, v_trigger, v_lead.lead_score, 'not_routed', v_reason)
    returning id into v_history_id;
    insert into app_public.routing_events (tenant_id, lead_id, event_type, data)
    values (v_tenant, v_lead.id, 'not_routed', pg_catalog.jsonb_build_object('reason', v_reason, 'history_id', v_history_id));
    return v_history_id;
  end if;

  -- 3. Rule, strategy, experiment variant.
  v_rule := app_private.matching_routing_rule(v_tenant, v_lead.id);
  if v_rule.id is not null then
    v_strategy := v_rule.strategy;
    v_params := v_rule.strategy_params;
    -- An escalation widens the candidate set: the rule's agent list no longer limits it.
    if v_rule.action in ('route_to_agent', 'route_to_agents') and v_trigger <> 'escalation' then
      v_restrict := v_rule.agent_ids;
    end if;
  end if;
  if v_strategy is null then
    v_setting := app_private.routing_setting(v_tenant, 'routing.default_strategy');
    v_strategy := case when v_setting #>> '{}' in ('weighted_round_robin', 'least_loaded', 'best_match', 'score_tiered', 'direct_to_owner')
      then v_setting #>> '{}' else 'weighted_round_robin' end;
  end if;
  if pg_catalog.to_regprocedure('app_private.experiment_variant_for_lead(uuid,uuid)') is not null then
    execute 'select c.experiment_id, c.variant_id, c.strategy, c.parameters from app_private.experiment_variant_for_lead($1, $2) c'
      into v_experiment_id, v_variant_id, v_variant_strategy, v_variant_params
      using v_tenant, v_lead.id;
    if v_variant_id is not null and v_variant_strategy is not null then
      v_strategy := v_variant_strategy;
      v_params := coalesce(v_variant_params, '{}');
    end if;
  end if;

  if v_rule.action = 'route_to_queue' and v_trigger <> 'escalation' then
    v_strategy := null;
    v_queue_type := v_rule.queue_type;
    v_reason := pg_catalog.format('Rule "%s" sends the lead to the %s queue', v_rule.name, v_rule.queue_type);
  else
    -- 4. Candidates and their checks, ordered by the strategy.
    v_hot_threshold := coalesce(case when v_params ->> 'hot_threshold' ~ '^\d{1,3}$' then (v_params ->> 'hot_threshold')::int end, 70);
    v_tier := case when v_lead.lead_score >= v_hot_threshold then 'hot' when v_lead.lead_score >= 40 then 'warm' else 'cold' end;
    v_tier_weight := coalesce(
      case when v_params #>> array['tier_weights', v_tier] ~ '^\d+(\.\d+)?$' then (v_params #>> array['tier_weights', v_tier])::numeric end,
      case v_tier when 'hot' then 1.0 when 'warm' then 0.8 else 0.6 end);
    if v_lead.attributes ->> 'latitude' ~ '^-?\d{1,2}(\.\d+)?$' and v_lead.attributes ->> 'longitude' ~ '^-?\d{1,3}(\.\d+)?$' then
      v_lat := (v_lead.attributes ->> 'latitude')::numeric;
      v_lon := (v_lead.attributes ->> 'longitude')::numeric;
    end if;
    v_order_strategy := case
      when v_strategy = 'score_tiered' and v_tier <> 'hot' then 'weighted_round_robin'
      else v_strategy end;
    if v_strategy = 'direct_to_owner' then
      select la.to_agent_id into v_prev_owner from app_public.lead_assignments la
       where la.tenant_id = v_tenant and la.lead_id = v_lead.id and la.to_agent_id is not null
       order by la.assigned_at desc, la.id desc limit 1;
      if v_prev_owner is null then
        select o.agent_id into v_prev_owner from app_public.routing_offers o
         where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.status = 'accepted'
         order by o.responded_at desc nulls last limit 1;
      end if;
      if v_prev_owner is null and (v_lead.phone is not null or v_lead.email is not null) then
        select l2.owner_agent_id into v_prev_owner from app_public.leads l2
         where l2.tenant_id = v_tenant and l2.id <> v_lead.id and l2.owner_agent_id is not null
           and (l2.phone = v_lead.phone or l2.email = v_lead.email)
         order by l2.updated_at desc limit 1;
      end if;
    end if;

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
             b.skill_ok and b.language_ok and b.area_ok and b.availability_ok and b.capacity_ok and b.slot_ok and b.not_rejected as eligible,
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
               'capacity', r.capacity_ok, 'slot', r.slot_ok, 'not_rejected', r.not_rejected),
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
      into v_candidates, v_order, v_pass_floor
      from ranked r;

    -- 5. Take the first candidate whose availability (and slot) can be locked and still holds.
    --    Pass 1 skips rows other routings hold; only if that finds nobody, wait for the skipped ones.
    if v_order is not null then
      foreach v_agent in array v_order loop
        select av.* into v_av from app_public.agent_availability av
         where av.tenant_id = v_tenant and av.agent_id = v_agent
         for update skip locked;
        if not found then
          v_skipped := v_skipped || v_agent;
          continue;
        end if;
        if v_av.status <> 'available' or v_av.current_load >= v_av.max_capacity then
          v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, pg_catalog.format('changed while routing: status %s, load %s of %s', v_av.status, v_av.current_load, v_av.max_capacity));
          continue;
        end if;
        v_slot := null;
        if v_lead.event_date is not null then
          select s.id into v_slot from app_public.availability_slots s
           where s.tenant_id = v_tenant and s.agent_id = v_agent and s.slot_date = v_lead.event_date and s.status = 'free'
             and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)
           order by s.start_time
           limit 1
           for update skip locked;
          if v_slot is null then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'the slot was taken while routing');
            continue;
          end if;
        end if;
        v_chosen := v_agent;
        v_chosen_slot := v_slot;
        exit;
      end loop;

      if v_chosen is null and pg_catalog.cardinality(v_skipped) > 0 then
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
          begin
            select av.* into v_av from app_public.agent_availability av
             where av.tenant_id = v_tenant and av.agent_id = v_agent
             for update;
          exception when deadlock_detected then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'could not be locked (deadlock avoided)');
            continue;
          end;
          if not found or v_av.status <> 'available' or v_av.current_load >= v_av.max_capacity then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, pg_catalog.format('changed while routing: status %s, load %s of %s', v_av.status, v_av.current_load, v_av.max_capacity));
            continue;
          end if;
          v_slot := null;
          if v_lead.event_date is not null then
            select s.id into v_slot from app_public.availability_slots s
             where s.tenant_id = v_tenant and s.agent_id = v_agent and s.slot_date = v_lead.event_date and s.status = 'free'
               and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)
             order by s.start_time
             limit 1
             for update skip locked;
            if v_slot is null then
              v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'the slot was taken while routing');
              continue;
            end if;
          end if;
          v_chosen := v_agent;
          v_chosen_slot := v_slot;
          exit;
        end loop;
      end if;
    end if;

    if v_chosen is null then
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
  end if;

  -- 6. The decision.
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
    -- 7. Nobody: wait in a queue with an SLA.
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

  -- Lock-time notes go with their candidates.
  if v_notes <> '{}'::jsonb then
    select pg_catalog.jsonb_agg(case when v_notes ? (e ->> 'agent_id') then e || pg_catalog.jsonb_build_object('lock', v_notes ->> (e ->> 'agent_id')) else e end
             order by o.n)
      into v_candidates
      from pg_catalog.jsonb_array_elements(v_candidates) with ordinality o(e, n);
  end if;

  insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, strategy, rule_id, experiment_id, variant_id, lead_score,
    candidates, chosen_agent_id, outcome, reason)
  values (v_tenant, v_lead.id, v_trigger, v_strategy, v_rule.id, v_experiment_id, v_variant_id, v_lead.lead_score,
    v_candidates, v_chosen, v_outcome, v_reason)
  returning id into v_history_id;
  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values (v_tenant, v_lead.id, v_chosen, v_offer_id, v_outcome,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('history_id', v_history_id, 'strategy', v_strategy,
      'queue_type', v_queue_type, 'expires_at', v_expires, 'slot_id', v_chosen_slot, 'reason', v_reason)));
  return v_history_id;
end;
$$;
comment on function app_private.route_lead(uuid, uuid, text) is $$Routes one lead in the caller’s transaction and returns the lead_routing_history id of the decision.
trigger: new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue (22023 otherwise); P0002 when the lead is not the tenant’s.
Not routed (with the reason): deleted lead, number on the DNC list (or status dnc), closed lead (final status), lead already assigned to an agent, lead with a pending offer.
Candidates: the tenant’s active agents (only the rule’s agents for route_to_agent/route_to_agents), each checked for skill (a specialization for the lead’s service_line, segment ’any’ or equal, territories empty or containing the lead’s region; no service_line matches everyone), language (lead.language among the specialization’s or agent’s languages, en-US ~ en), area (no areas = everywhere; region, city (case-insensitive), postal code, or radius around attributes.latitude/longitude, ’unknown location’ without them), availability (status available), capacity (current_load < max_capacity), slot (event leads: a free, unlocked slot on event_date) and not_rejected (no rejected/expired offer of this lead).
Escalation (trigger escalation) widens the candidate set: the rule’s agent list and route_to_queue action are ignored.
Strategy: the matching rule’s (app_private.matching_routing_rule), else system_config routing.default_strategy, else weighted_round_robin; a running experiment’s variant (app_private.experiment_variant_for_lead, when that function exists) overrides it. weighted_round_robin = stride scheduling on agent_routing_credits (the eligible agent with the lowest pass goes next and its pass grows by 1/routing_weight; a pass below the virtual time of the eligible agents, max(pass - 1/weight), is raised to it, so agents coming back get no burst; score shown = how far behind the next agent in virtual time, 0 for the next); least_loaded = lowest load/capacity (ties: lowest pass, id); best_match = proficiency x recent conversion for the lead’s tier (0.5 when unknown) x tier weight; score_tiered = hot leads (score >= 70) to the best hot converters, others WRR; direct_to_owner = the previous owner agent if eligible, else WRR.
Concurrency: the lead row is locked first (one decision per lead; routing_offers_one_pending_per_lead is the backstop); candidates are tried in strategy order with FOR UPDATE SKIP LOCKED on agent_availability, re-checking status and load under the lock, and only when every eligible agent was skipped does it wait (plain FOR UPDATE) for them, each waiter starting at one drawn in proportion to routing_weight, so busy tenants do not see false "no agent available"; the event slot is locked and re-checked too; only the round-robin row of the chosen agent is written, last. Lock order: lead, agent_availability, availability_slots, agent_routing_credits.
LOAD RULE: a pending offer reserves capacity. Offering adds 1 to the agent’s current_load (as does direct assignment); accept keeps it; reject, expiry and cancellation must give it back (current_load - 1) and release the slot lock.
Outcomes: offered (routing_offers row expiring after system_config routing.offer_timeout_seconds, default 120; slot locked until then; job routing__expire_offer {offer_id} at expires_at with job_key routing_offer:<id>), assigned (system_config routing.direct_assignment = true: owner_agent_id and, for members, owner_user_id; slot booked; recorded in lead_assignments with the strategy), queued (assignment_queue with the SLA of system_config routing.sla_seconds.<queue>, defaults hot 300, active 900, reassignment 600, nurture 86400, waiting 3600; an existing waiting entry keeps its place), not_routed. Every call writes lead_routing_history and a routing_events row.$$;
