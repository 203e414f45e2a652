--! Previous: sha1:91d6c308a4169076c777ebff71b55454ed6c352e
--! Hash: sha1:c5164af8d97808231a60a8f70664c75e80ad7f15
--! Message: Review of the routing pool (adversarial helper, each finding reproduced): after three unsuccessful batches the rest is read at once; best_match and score_tiered rank every ready agent of the line and area (the pool keeps no scores, so metrics no longer write it); an agent becoming ready starts its turn at the virtual time of its pools (no burst when ten return); radius cells on the sphere with 1% to spare.

-- One write of the routing pool per decision instead of two: the decision writes the round-robin
-- ledger before the load (the load's refresh of the pool carries the new pass), and the ledger's
-- own copy of the pass into the pool runs at commit, where it finds nothing left to write.
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
    if v_wrr_used then
      -- Stride scheduling: only the pass of the chosen agent moves (clamped to the virtual time
      -- of the eligible agents, then one stride on). Its agent_availability row is locked by this
      -- transaction, so no other routing writes this row before we commit. Written before the
      -- load below, whose refresh of the routing pool then carries the new pass in the same write.
      insert into app_public.agent_routing_credits as c (agent_id, tenant_id, pass)
      values (v_chosen, v_tenant, greatest(v_stride, coalesce(v_pass_floor, 0)) + v_stride)
      on conflict (agent_id) do update
        set pass = greatest(c.pass, coalesce(v_pass_floor, 0)) + v_stride,
            updated_at = pg_catalog.now();
    end if;
    -- One more lead held, and one more received today and this week (in the agent's time zone),
    -- under the lock routing_claim took on this row.
    update app_public.agent_availability av
       set current_load = av.current_load + 1,
           cap_day_count = case when av.cap_day = cp.day then av.cap_day_count + 1 else 1 end,
           cap_day = cp.day,
           cap_week_count = case when av.cap_week = cp.week then av.cap_week_count + 1 else 1 end,
           cap_week = cp.week
      from app_hidden.agent_cap_period(app_hidden.agent_timezone(v_tenant, v_chosen), pg_catalog.now()) cp
     where av.tenant_id = v_tenant and av.agent_id = v_chosen;
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

comment on function app_private.routing_decide(app_private.routing_context, jsonb, uuid[], numeric, uuid, uuid) is 'Carries out a routing decision. With an agent: adds 1 to its load and to the leads it received today and this week (its caps), moves its round-robin pass (stride scheduling) when round robin chose it, then assigns the lead (system_config routing.direct_assignment: owner, booked slot, lead_assignments with the strategy) or offers it (routing_offers expiring after routing.offer_timeout_seconds, the slot locked until then, a routing__expire_offer job), and takes the lead out of any queue. Without one: queues it with the SLA of its queue (an entry already waiting keeps its place). Returns the outcome (assigned, offered, queued) and the reason in words. Part of route_lead.';
--! EndIncluded routing/routing_decide.sql
drop trigger if exists _500_routing_pool on app_public.agent_routing_credits;
create constraint trigger _500_routing_pool after insert or update of pass or delete on app_public.agent_routing_credits
  deferrable initially deferred
  for each row execute function app_private.tg_routing_pool__pass();
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

comment on function app_private.tg_routing_pool__pass() is 'Constraint trigger, deferred to commit (after each row of agent_routing_credits): copies the agent''s round-robin pass into its rows of the routing pool (one stride, 1 / weight, once its ledger row is gone). A routing decision writes the ledger before the load, whose refresh of the pool (app_private.routing_pool_sync) already carries the pass, so at commit this finds nothing to write; it catches every other writer of the ledger.';
--! EndIncluded routing/tg_routing_pool__pass.sql
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
Concurrency: the lead row is locked first (one decision per lead; routing_offers_one_pending_per_lead is the backstop); candidates are tried in strategy order with FOR UPDATE SKIP LOCKED on agent_availability, re-checking status and load under the lock, and only when every eligible agent was skipped does it wait (plain FOR UPDATE) for them, each waiter starting at one drawn in proportion to routing_weight, so busy tenants do not see false "no agent available"; the event slot is locked and re-checked too; only the round-robin row of the chosen agent is written (before its load, so that the routing pool is refreshed once). Lock order: lead, agent_availability, availability_slots, agent_routing_credits.
LOAD RULE: a pending offer reserves capacity. Offering adds 1 to the agent’s current_load (as does direct assignment); accept keeps it; reject, expiry and cancellation must give it back (current_load - 1) and release the slot lock.
Outcomes: offered (routing_offers row expiring after system_config routing.offer_timeout_seconds, default 120; slot locked until then; job routing__expire_offer {offer_id} at expires_at with job_key routing_offer:<id>), assigned (system_config routing.direct_assignment = true: owner_agent_id and, for members, owner_user_id; slot booked; recorded in lead_assignments with the strategy), queued (assignment_queue with the SLA of system_config routing.sla_seconds.<queue>, defaults hot 300, active 900, reassignment 600, nurture 86400, waiting 3600; an existing waiting entry keeps its place), not_routed. Every call writes lead_routing_history and a routing_events row.$$;
--! EndIncluded routing/route_lead.sql

-- Review of the routing pool by an adversarial helper (each finding reproduced first):
-- * a routing that examined batch after batch of ready agents who all failed a check the pool does
--   not know (language, segment, slot) cost one pass per batch: after three batches, all the rest
--   are read at once;
-- * best_match and score_tiered ordered batches by the pool's copy of the score, which cannot know
--   the lead's segment and territories, and could pass over the best agent: they now read every
--   ready agent of the line and area at once and rank them exactly; the pool keeps no scores, so
--   performance metrics no longer write the pool (a metrics refresh could deadlock with a drain);
-- * ten or more agents coming back together all sat in one batch and kept their old passes (a
--   burst): an agent that becomes ready is raised to the virtual time of its pools at once;
-- * radius cells used a flat degree of longitude and could miss a lead just inside the circle:
--   now the sphere of app_hidden.distance_miles, with 1% to spare.
drop trigger if exists _500_routing_pool on app_public.agent_performance_metrics;
drop function if exists app_private.routing_pool_state(uuid, uuid);
alter table app_private.routing_pool drop column if exists proficiency, drop column if exists conv_hot,
  drop column if exists conv_warm, drop column if exists conv_cold;
--! Included routing/routing_pool_state.sql
create or replace function app_private.routing_pool_state(tenant_id uuid, agent_id uuid,
  out state text, out pass numeric, out weight integer, out load_ratio numeric)
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
         case when av.max_capacity > 0 then av.current_load::numeric / av.max_capacity else 1 end
    into state, pass, weight, load_ratio
    from app_public.agents a
    cross join lateral (select app_hidden.agent_timezone(a.tenant_id, a.id) as zone) z
    cross join lateral app_hidden.agent_cap_period(z.zone, pg_catalog.now()) cp
    left join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
    left join app_public.agent_routing_credits cr on cr.agent_id = a.id
   where a.tenant_id = routing_pool_state.tenant_id and a.id = routing_pool_state.agent_id;
end;
$$;

comment on function app_private.routing_pool_state(uuid, uuid) is 'What the routing pool keeps of an agent now: its state (unavailable, off_duty, at_capacity, at_cap or ready: the first that applies, by the same rules as the checks of app_private.routing_candidates), round-robin pass, weight and load ratio. All null for an unknown agent.';
--! EndIncluded routing/routing_pool_state.sql
--! Included routing/routing_pool_clamp.sql
create or replace function app_private.routing_pool_clamp(tenant_id uuid, agent_id uuid) returns numeric
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_agent uuid := routing_pool_clamp.agent_id;
  v_vt numeric;
  v_pass numeric;
begin
  -- The virtual time of the agent's pools: in each (line, area key), where the other ready agent
  -- who goes next (the first entry of the round-robin index) started its turn (pass - 1 / weight);
  -- the latest of these. The agent starts its own turn there (its pass = that + 1 / its weight),
  -- unless it is already further on: a fresh team, all starting at 0, is left as it is.
  select pg_catalog.max((select p2.pass - 1::numeric / p2.weight from app_private.routing_pool p2
                          where p2.tenant_id = p.tenant_id and p2.line = p.line and p2.area_key = p.area_key
                            and p2.state = 'ready' and p2.agent_id <> p.agent_id
                          order by p2.pass, p2.weight desc, p2.agent_id
                          limit 1)) + 1::numeric / pg_catalog.min(p.weight),
         pg_catalog.min(p.pass)
    into v_vt, v_pass
    from app_private.routing_pool p
   where p.agent_id = v_agent;
  if v_vt is null or v_vt <= v_pass then
    return null;
  end if;
  insert into app_public.agent_routing_credits as c (agent_id, tenant_id, pass)
  values (v_agent, routing_pool_clamp.tenant_id, v_vt)
  on conflict on constraint agent_routing_credits_pkey do update set pass = greatest(c.pass, excluded.pass), updated_at = pg_catalog.now();
  update app_private.routing_pool p set pass = v_vt where p.agent_id = v_agent and p.pass < v_vt;
  return v_vt;
end;
$$;

comment on function app_private.routing_pool_clamp(uuid, uuid) is 'No burst for an agent who becomes ready (back from offline, a break, capacity, a cap or time off; new or reactivated): raises its round-robin pass (agent_routing_credits and its pool rows) so that its turn starts at the virtual time of its pools (the latest among them of the start of the turn of the other ready agent who goes next: pass - 1 / weight), so that it takes its turn with them instead of receiving every lead until its old pass catches up. Returns the new pass, or null when the agent was not behind. Called by app_private.routing_pool_sync and app_private.routing_pool_build; the agent''s availability row is locked by then (lock order: availability, then ledger, as in routing).';
--! EndIncluded routing/routing_pool_clamp.sql
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
     set state = v_new.state, pass = v_new.pass, weight = v_new.weight, load_ratio = v_new.load_ratio
   where p.agent_id = v_agent
     and (p.state, p.pass, p.weight, p.load_ratio) is distinct from (v_new.state, v_new.pass, v_new.weight, v_new.load_ratio);
  if v_old <> 'ready' and v_new.state = 'ready' then
    perform app_private.routing_pool_clamp(routing_pool_sync.tenant_id, v_agent);
    return true;
  end if;
  return false;
end;
$$;

comment on function app_private.routing_pool_sync(uuid, uuid) is 'Refreshes the state, round-robin pass, weight and load ratio of an agent''s rows of app_private.routing_pool (app_private.routing_pool_state); returns true when the agent has just become ready, after raising its pass to the virtual time of its pools (app_private.routing_pool_clamp: no burst). Rows are only written when something changed; the agent''s availability row is locked first, so that concurrent changes of an agent are refreshed one after the other. Called by the triggers on agent_availability, agent_working_hours, agent_time_off, holidays and business_settings, and every minute for states that change with the clock (app_private.routing_pool_refresh_timed).';
--! EndIncluded routing/routing_pool_sync.sql
--! Included routing/routing_pool_build.sql
create or replace function app_private.routing_pool_build(agent_ids uuid[]) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_rows integer;
  v_was_ready uuid[];
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
  select pg_catalog.array_agg(distinct p.agent_id) into v_was_ready
    from app_private.routing_pool p where p.agent_id = any (agent_ids) and p.state = 'ready';
  delete from app_private.routing_pool p where p.agent_id = any (agent_ids);

  -- ... the rows are written again for the active agents ...
  insert into app_private.routing_pool (tenant_id, agent_id, line, area_key, state, pass, weight, load_ratio, multi_kind)
  select a.tenant_id, a.id, l.line, k.area_key, s.state, s.pass, s.weight, s.load_ratio, k.multi_kind
    from app_public.agents a
    cross join lateral app_private.routing_pool_state(a.tenant_id, a.id) s
    -- The lines: every service line of a specialization, and the empty line (leads without one).
    cross join lateral (
      select '' as line
      union
      select sp.service_line from app_public.agent_specializations sp where sp.tenant_id = a.tenant_id and sp.agent_id = a.id
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
  -- Agents ready now that were not (new, reactivated): no burst.
  perform app_private.routing_pool_clamp(x.tenant_id, x.agent_id)
     from (select distinct p.tenant_id, p.agent_id from app_private.routing_pool p
            where p.agent_id = any (agent_ids) and p.state = 'ready' and p.agent_id <> all (coalesce(v_was_ready, '{}'))
            order by p.agent_id) x;
  return v_rows;
end;
$$;

comment on function app_private.routing_pool_build(uuid[]) is 'Rebuilds the rows of app_private.routing_pool of the given agents (of any tenants): one per line the agent can take (the empty line and each service line of its specializations) and area key it serves, with its state (app_private.routing_pool_state); none for an inactive or deleted agent; and moves the agents in the tallies of app_private.routing_pool_tally (per line, and per line and area key; a tally at 0 is deleted). An agent ready now that was not gets its pass raised to the virtual time of its pools (app_private.routing_pool_clamp). Set-wise, so that a statement writing many agents, specializations or areas updates each tally once. Serialised per agent (locks the agents and their availability rows, in id order), so that it never writes a state older than a concurrent decision''s, then per tenant (a transaction advisory lock), so that concurrent builds never deadlock on the tallies. Returns the number of pool rows written. Called by the triggers on agents, agent_specializations and agent_service_areas.';
--! EndIncluded routing/routing_pool_build.sql
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
    -- The score depends on the lead (segment, territories, tier): every ready agent of the line and
    -- area is read at once, and routing_candidates ranks them.
    select pg_catalog.array_agg(d.agent_id order by d.agent_id) into v_next
      from (select distinct p.agent_id
              from app_private.routing_pool p
             where p.tenant_id = v_tenant and p.line = v_line and p.area_key = any (area_keys) and p.state = 'ready'
               and p.agent_id <> all (examined)) d;
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

comment on function app_private.routing_pool_next(app_private.routing_context, text[], uuid[], integer) is 'The next n agents to examine for a lead, from the routing pool: ready agents of the lead''s service line (the empty line for a lead without one) under one of its area keys, not examined yet, in the order of the strategy: weighted_round_robin and direct_to_owner by pass (then the heavier, then id) and least_loaded by load ratio, each read from an index; best_match and score_tiered: every one of them (their score depends on the lead). n = null: no limit. Null when none is left. Part of route_lead (app_private.routing_search).';
--! EndIncluded routing/routing_pool_next.sql
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
  v_batches integer := 0;
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
      -- 10 at a time; after three batches where nobody could take the lead (most of the line and
      -- area fail a check the pool does not know: language, segment, slot...), all the rest at once,
      -- so that such a lead costs one pass over them, not one per batch.
      v_batch := app_private.routing_pool_next(ctx, v_keys, v_examined, case when v_batches >= 3 then null else 10 end);
    end if;
    exit when v_batch is null;
    v_examined := v_examined || v_batch;
    v_batch_ctx.restrict := v_batch;
    select c.* into v_found from app_private.routing_candidates(v_batch_ctx) c;
    -- Ranks go on from one batch to the next.
    v_batches := v_batches + 1;
    if v_eligible = 0 then
      candidates := candidates || v_found.candidates;
    else
      candidates := candidates || coalesce((
        select pg_catalog.jsonb_agg(case when o.e ->> 'rank' is not null
                 then pg_catalog.jsonb_set(o.e, '{rank}', pg_catalog.to_jsonb((o.e ->> 'rank')::int + v_eligible)) else o.e end order by o.n)
          from pg_catalog.jsonb_array_elements(v_found.candidates) with ordinality o(e, n)), '[]'::jsonb);
    end if;
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

  -- The examined agents in the order a small team's record lists them (eligible by rank, then by
  -- name), as one batch already is.
  if v_batches > 1 then
    select coalesce(pg_catalog.jsonb_agg(o.e order by (o.e ->> 'rank')::int nulls last, o.e ->> 'name', o.e ->> 'agent_id'), '[]'::jsonb)
      into candidates
      from pg_catalog.jsonb_array_elements(candidates) o(e);
  end if;
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

comment on function app_private.routing_search(app_private.routing_context) is 'Finds the agent for a lead and claims it. In a team of up to 10 active agents, or among the agents a rule names, it checks every agent (app_private.routing_candidates) and claims the first that holds (app_private.routing_claim). In a larger team the work grows with the agents it reads, not with the team: the ready agents of the lead''s service line and area keys come from the routing pool in the strategy''s order, 10 at a time (app_private.routing_pool_next; the previous owner first for direct_to_owner; all at once for best_match and hot leads of score_tiered, whose score depends on the lead; all the rest at once after three batches without success), each batch is checked in full and claimed without waiting; the next batch only when nobody in this one could take the lead; if every agent it read was held by another routing, it then waits for those. Returns the candidates examined (ranks running across batches), the eligible ones in order, the round-robin floor of the chosen one''s batch, the chosen agent and slot, the lock notes, the counts of the others (app_private.routing_pool_counts; null for a small team) and, when nobody examined was eligible, the reason. Part of route_lead.';
--! EndIncluded routing/routing_search.sql
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
      -- The half-degree cells the bounding box of the circle touches: a superset of the points within reach.
      -- On the sphere of app_hidden.distance_miles (radius 3958.8 miles), with 1% to spare: the
      -- latitude span is the angle r / R; the longitude span at the edge of the box nearest a pole
      -- is asin(sin(r / R) / cos(latitude)).
      v_dlat := pg_catalog.degrees(radius_miles::float8 / 3958.8) * 1.01;
      if pg_catalog.abs(center_latitude::float8) + v_dlat >= 89
         or pg_catalog.sin(radius_miles::float8 / 3958.8) >= pg_catalog.cos(pg_catalog.radians(pg_catalog.abs(center_latitude::float8) + v_dlat)) then
        return array['g:*'];
      end if;
      v_dlon := pg_catalog.degrees(pg_catalog.asin(pg_catalog.sin(radius_miles::float8 / 3958.8)
                  / pg_catalog.cos(pg_catalog.radians(pg_catalog.abs(center_latitude::float8) + v_dlat)))) * 1.01;
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
-- Radius areas whose cells changed.
select pg_catalog.count(*) from (
  select app_private.routing_pool_build(pg_catalog.array_agg(distinct z.agent_id)) from app_public.agent_service_areas z where z.kind = 'radius'
   having pg_catalog.count(*) > 0) x;
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

comment on function app_private.tg_routing_pool__sync() is 'Trigger (after each row of agent_availability, agent_working_hours and agent_time_off, and after a change of an agent''s routing_weight, caps or time zone): refreshes the agent''s state in the routing pool (app_private.routing_pool_sync).';
--! EndIncluded routing/tg_routing_pool__sync.sql
