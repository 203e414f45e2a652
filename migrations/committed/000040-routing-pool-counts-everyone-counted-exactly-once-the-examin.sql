--! Previous: sha1:3240d207dfad4b27aa831421313b637940b506e7
--! Hash: sha1:91d6c308a4169076c777ebff71b55454ed6c352e
--! Message: Routing pool counts: everyone counted exactly once (the examined agents are taken out of the skill, area and ready buckets, also a previous owner outside the lead's area); one batch is recorded as read, without re-sorting; the column comment of candidate_counts describes the pool's counts.

-- The record of a decision in a large team: the column comments say what candidates and
-- candidate_counts hold when routing reads the routing pool.
comment on column app_public.lead_routing_history.candidate_counts is 'The agents of the tenant not listed in candidates, counted (null when every agent is listed): {considered, listed, eligible_not_listed, failed: {check: {n, reason}}}, each agent counted once, at its first failing check in the order skill, language, area, availability, schedule, capacity, cap, slot, free, not_rejected; reason is the most common one. In a team of more than 10 agents, where routing examines only the first ready agents of the lead''s line and area (the routing pool), also examined (how many were read and checked) and ready_not_examined (ready in the lead''s line and area, not read because an earlier one took the lead); the agents not examined are counted at skill, area, availability, schedule, capacity or cap from the pool. considered = listed + eligible_not_listed + ready_not_examined + the sum of the n.';
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
  v_ex_no_line bigint;
  v_ex_no_area bigint;
  v_ex_in_area bigint;
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
  -- Where the examined agents stand (normally ready in the lead's line and area; the previous owner
  -- of direct_to_owner may not be), so that nobody is counted twice.
  select pg_catalog.count(*) filter (where not x.in_line), pg_catalog.count(*) filter (where x.in_line and not x.in_area),
         pg_catalog.count(*) filter (where x.in_area)
    into v_ex_no_line, v_ex_no_area, v_ex_in_area
    from (select p.agent_id, pg_catalog.bool_or(p.line = v_line) as in_line,
                 pg_catalog.bool_or(p.line = v_line and p.area_key = any (area_keys)) as in_area
            from app_private.routing_pool p
           where p.tenant_id = v_tenant and p.agent_id = any (examined) and p.line in ('', v_line)
           group by p.agent_id) x;
  -- Agents in the lead's line and area that are not ready, per state (not those examined: their checks are recorded).
  select coalesce(pg_catalog.jsonb_object_agg(w.state, w.n), '{}'::jsonb), coalesce(pg_catalog.sum(w.n), 0) into v_waiting, v_waiting_n
    from (select x.state, pg_catalog.count(*) as n
            from (select distinct p.agent_id, p.state
                    from app_private.routing_pool p
                   where p.tenant_id = v_tenant and p.line = v_line and p.area_key = any (area_keys) and p.state <> 'ready'
                     and p.agent_id <> all (examined)) x
           group by x.state) w;

  if v_total - v_in_line - v_ex_no_line > 0 then
    v_failed := v_failed || pg_catalog.jsonb_build_object('skill', pg_catalog.jsonb_build_object('n', v_total - v_in_line - v_ex_no_line,
      'reason', pg_catalog.format('no specialization in %s%s%s', (ctx.lead).service_line,
        case when (ctx.lead).customer_segment is not null then ' for segment ' || (ctx.lead).customer_segment else '' end,
        case when (ctx.lead).region is not null then ' licensed for ' || (ctx.lead).region else '' end)));
  end if;
  if v_in_line - v_in_area - v_ex_no_area > 0 then
    v_failed := v_failed || pg_catalog.jsonb_build_object('area', pg_catalog.jsonb_build_object('n', v_in_line - v_in_area - v_ex_no_area,
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
    'ready_not_examined', greatest(0, v_in_area - v_ex_in_area - v_waiting_n),
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
      v_batch := app_private.routing_pool_next(ctx, v_keys, v_examined, 10);
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

comment on function app_private.routing_search(app_private.routing_context) is 'Finds the agent for a lead and claims it. In a team of up to 10 active agents, or among the agents a rule names, it checks every agent (app_private.routing_candidates) and claims the first that holds (app_private.routing_claim). In a larger team the work grows with the agents it reads, not with the team: the ready agents of the lead''s service line and area keys come from the routing pool in the strategy''s order, 10 at a time (app_private.routing_pool_next; the previous owner first for direct_to_owner), each batch is checked in full and claimed without waiting; the next batch only when nobody in this one could take the lead; if every agent it read was held by another routing, it then waits for those. Returns the candidates examined (ranks running across batches), the eligible ones in order, the round-robin floor of the chosen one''s batch, the chosen agent and slot, the lock notes, the counts of the others (app_private.routing_pool_counts; null for a small team) and, when nobody examined was eligible, the reason. Part of route_lead.';
--! EndIncluded routing/routing_search.sql
