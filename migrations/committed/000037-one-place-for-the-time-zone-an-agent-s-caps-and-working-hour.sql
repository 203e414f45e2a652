--! Previous: sha1:f0731a8a8dbc59e6c87121f16015f39df7817367
--! Hash: sha1:e28474644808ef445fa1fc5b748b9fa217c7b812
--! Message: One place for the time zone an agent's caps and working hours count in: app_hidden.agent_timezone (agent's, else the business's, else UTC), called by the claim's recheck, the decision, the release of an offer and the duty drain

-- Review: the rule "an agent's caps and working hours count in the agent's time zone, else the
-- business's, else UTC" was written out in five places; it now lives in app_hidden.agent_timezone,
-- which the claim's recheck, the decision, the release of an offer and the duty drain call
-- (routing_candidates applies the same rule set-wise, reading the business's zone once).

--! Included routing/agent_timezone.sql
create or replace function app_hidden.agent_timezone(tenant_id uuid, agent_id uuid) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(
    (select a.timezone from app_public.agents a where a.tenant_id = agent_timezone.tenant_id and a.id = agent_timezone.agent_id),
    (select bs.timezone from app_public.business_settings bs where bs.tenant_id = agent_timezone.tenant_id),
    'UTC');
$$;

comment on function app_hidden.agent_timezone(uuid, uuid) is 'The time zone an agent''s caps and working hours count in: the agent''s own (agents.timezone), else the business''s (business_settings.timezone), else UTC. The one place this rule is written; routing_candidates applies it set-wise (the business''s zone read once) for speed.';
--! EndIncluded routing/agent_timezone.sql
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
    return;
  end if;
  -- Still on duty (working hours may have ended, or time off begun, since the candidates were read).
  note := 'went off duty while routing: '
    || app_hidden.agent_off_duty_reason(v_tenant, v_agent, app_hidden.agent_timezone(v_tenant, v_agent), pg_catalog.now());
  if note is not null then
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

comment on function app_private.routing_try_agent(uuid, uuid, app_public.leads, tstzrange, boolean) is 'Tries to take one candidate for a lead: locks the agent''s agent_availability row (skip locked unless wait; skipped = another routing holds it), re-checks status, load, the daily and weekly caps, the schedule (working hours, time off, holidays), busy time and, for an event lead, locks a free slot on the event date (slot_id). claimed when all hold; otherwise note says what changed. The single copy of the lock-and-recheck step of route_lead (routing_claim calls it).';
--! EndIncluded routing/routing_try_agent.sql
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

comment on function app_private.routing_decide(app_private.routing_context, jsonb, uuid[], numeric, uuid, uuid) is 'Carries out a routing decision. With an agent: adds 1 to its load and to the leads it received today and this week (its caps), moves its round-robin pass (stride scheduling) when round robin chose it, then assigns the lead (system_config routing.direct_assignment: owner, booked slot, lead_assignments with the strategy) or offers it (routing_offers expiring after routing.offer_timeout_seconds, the slot locked until then, a routing__expire_offer job), and takes the lead out of any queue. Without one: queues it with the SLA of its queue (an entry already waiting keeps its place). Returns the outcome (assigned, offered, queued) and the reason in words. Part of route_lead.';
--! EndIncluded routing/routing_decide.sql
--! Included routing/release_offer_hold.sql
create or replace function app_private.release_offer_hold(tenant_id uuid, agent_id uuid, lead_id uuid, slot_id uuid) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_offered_at timestamptz;
begin
  -- The offer that ended: the newest one of this lead to this agent (the caller has just closed it).
  select o.offered_at into v_offered_at from app_public.routing_offers o
   where o.tenant_id = release_offer_hold.tenant_id and o.lead_id = release_offer_hold.lead_id and o.agent_id = release_offer_hold.agent_id
   order by o.offered_at desc limit 1;
  -- The reserved load comes back, and so does the lead counted against the caps, when the offer was
  -- made in the current day or week: a lead declined or let expire was not received.
  update app_public.agent_availability av
     set current_load = greatest(av.current_load - 1, 0),
         cap_day_count = case when v_offered_at is not null and av.cap_day = off.day then greatest(av.cap_day_count - 1, 0) else av.cap_day_count end,
         cap_week_count = case when v_offered_at is not null and av.cap_week = off.week then greatest(av.cap_week_count - 1, 0) else av.cap_week_count end
    from app_hidden.agent_cap_period(app_hidden.agent_timezone(release_offer_hold.tenant_id, release_offer_hold.agent_id),
      coalesce(v_offered_at, pg_catalog.now())) off
   where av.tenant_id = release_offer_hold.tenant_id and av.agent_id = release_offer_hold.agent_id;
  if release_offer_hold.slot_id is not null then
    update app_public.availability_slots s
       set locked_until = null, locked_by_lead_id = null
     where s.tenant_id = release_offer_hold.tenant_id and s.id = release_offer_hold.slot_id
       and s.locked_by_lead_id = release_offer_hold.lead_id;
  end if;
end;
$$;

comment on function app_private.release_offer_hold(uuid, uuid, uuid, uuid) is 'Internal: a pending offer ended without an assignment, so the agent''s reserved load goes down by one (never below 0), the lead stops counting against the agent''s daily and weekly caps when the offer was made in the current day or week, and the slot the offer held (if this lead still holds it) is released. The callers lock the offer first, so this runs once per offer.';
--! EndIncluded routing/release_offer_hold.sql
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
  loop
    -- Only tenants with leads waiting get a drain (one job per tenant, keyed).
    perform app_private.enqueue_queue_drain(v_tenant);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

comment on function app_private.drain_queues_coming_on_duty(timestamptz, timestamptz) is 'For every tenant where an agent came on duty between since (excluded) and until (included): working hours that began (in the agent''s time zone), time off that ended, or a holiday that ended at midnight: enqueues a drain of its routing queue when leads are waiting (app_private.enqueue_queue_drain), so leads queued while nobody worked are routed as soon as someone starts. Returns how many tenants were looked at. Run every minute by routing__duty_drain.';
--! EndIncluded routing/drain_queues_coming_on_duty.sql
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
