--! Previous: sha1:c8debb2a58bdfb9275c517c4b7468842678f6f4f
--! Hash: sha1:e777c894f7c784d01cc1fbcbbf9d5da9ed6526b0
--! Message: Compact decision records: beyond 10 agents lead_routing_history keeps the first 10 candidates in full (and the chosen agent and those that changed while routing) and counts the rest at their first failing check in candidate_counts; explain_routing reads both

-- Issue 15, point 2: a compact decision record whatever the size of the team. lead_routing_history
-- keeps the first 10 candidates in the strategy's order (and the chosen agent, and those that changed
-- while routing) in full, and counts everyone else at their first failing check in candidate_counts;
-- explain_routing reads both.

alter table app_public.lead_routing_history add column if not exists candidate_counts jsonb;
alter table app_public.lead_routing_history drop constraint if exists lead_routing_history_candidate_counts_must_be_an_object;
alter table app_public.lead_routing_history add constraint lead_routing_history_candidate_counts_must_be_an_object
  check (candidate_counts is null or pg_catalog.jsonb_typeof(candidate_counts) = 'object');
comment on column app_public.lead_routing_history.candidates is 'JSON array, one object per agent listed, in the strategy''s order (eligible ones by rank, then the others by name): {agent_id, name, checks: {skill, language, area, availability, schedule, capacity, cap, slot, free, not_rejected}, reasons (of the failed checks), eligible, score, rank, pass, load, lock (a change while routing)}. Every agent considered when there were at most 10; beyond that the first 10, the chosen agent and those with a lock note, the others counted in candidate_counts.';
comment on column app_public.lead_routing_history.candidate_counts is 'The agents considered but not listed in candidates, counted (null when every agent is listed): {considered, listed, eligible_not_listed, failed: {check: {n, reason}}}, each agent counted once, at its first failing check in the order skill, language, area, availability, schedule, capacity, cap, slot, free, not_rejected; reason is the most common one. considered = listed + eligible_not_listed + the sum of the n.';

do $$
begin
  if not exists (
    select 1 from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.typrelid = a.attrelid
     where t.oid = 'app_public.routing_explanation'::regtype and a.attname = 'candidate_counts' and not a.attisdropped
  ) then
    alter type app_public.routing_explanation add attribute candidate_counts jsonb;
  end if;
end
$$;
comment on column app_public.routing_explanation.candidate_counts is 'The agents considered but not listed, counted per first failing check (see lead_routing_history.candidate_counts); null when every agent is listed.';
comment on column app_public.routing_explanation.candidate_lines is 'One line per agent listed: eligible with its score, or the checks it failed and why; then, beyond 10 agents, one line per failing check with how many more agents failed it first, and how many more were eligible.';

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
  if pg_catalog.jsonb_array_length(v_candidates) > 10 then
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
    )
    select (select pg_catalog.jsonb_agg(c.e order by c.n) from c where c.listed),
           pg_catalog.jsonb_build_object(
             'considered', (select pg_catalog.count(*) from c),
             'listed', (select pg_catalog.count(*) from c where c.listed),
             'eligible_not_listed', (select pg_catalog.count(*) from rest r where r.eligible),
             'failed', coalesce((select pg_catalog.jsonb_object_agg(f.k, pg_catalog.jsonb_build_object('n', f.n, 'reason', f.reason)) from failed f), '{}'::jsonb))
      into v_candidates, v_counts;
  end if;

  insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, strategy, rule_id, experiment_id, variant_id, lead_score,
    candidates, candidate_counts, chosen_agent_id, outcome, reason)
  values (ctx.tenant_id, (ctx.lead).id, ctx.trigger, ctx.strategy, (ctx.rule).id, ctx.experiment_id, ctx.variant_id, (ctx.lead).lead_score,
    v_candidates, v_counts, chosen, outcome, reason)
  returning id into v_history_id;
  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values (ctx.tenant_id, (ctx.lead).id, chosen, offer_id, outcome,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('history_id', v_history_id, 'strategy', ctx.strategy,
      'queue_type', queue_type, 'expires_at', expires, 'slot_id', chosen_slot, 'reason', reason)));
  return v_history_id;
end;
$$;

comment on function app_private.routing_record(app_private.routing_context, jsonb, jsonb, uuid, uuid, text, text, uuid, timestamptz, text) is 'Writes the record of a routing decision: the lead_routing_history row (strategy, rule, experiment variant, lead score, the candidates with the notes of those that changed while routing, compacted beyond 10 agents to the first 10 in the strategy''s order plus the chosen one and those with notes, the others counted per first failing check in candidate_counts; the chosen agent, outcome and reason) and its routing_events row; returns the history id. Also records leads that were not routed (outcome not_routed, no candidates). Part of route_lead.';
--! EndIncluded routing/routing_record.sql
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
  select h.id, h.routed_at, h.trigger, h.outcome, h.strategy, rr.name, v.name, h.chosen_agent_id, a.display_name,
         case h.outcome
           when 'offered' then pg_catalog.format('Offered to %s: %s.', coalesce(a.display_name, '?'), h.reason)
           when 'assigned' then pg_catalog.format('Assigned to %s: %s.', coalesce(a.display_name, '?'), h.reason)
           when 'queued' then pg_catalog.format('Queued: %s.', h.reason)
           else pg_catalog.format('Not routed: %s.', h.reason)
         end
         || case when rr.name is not null then pg_catalog.format(' Rule "%s" matched.', rr.name) else '' end
         || case when v.name is not null then pg_catalog.format(' Experiment variant "%s" chose the strategy.', v.name) else '' end
         || case when pg_catalog.jsonb_array_length(h.candidates) > 0 then pg_catalog.format(' %s of %s agents were eligible.',
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
            else '{}'::text[] end,
         h.candidates,
         h.candidate_counts
    from app_public.lead_routing_history h
    left join app_public.routing_rules rr on rr.tenant_id = h.tenant_id and rr.id = h.rule_id
    left join app_public.routing_experiment_variants v on v.tenant_id = h.tenant_id and v.id = h.variant_id
    left join app_public.agents a on a.tenant_id = h.tenant_id and a.id = h.chosen_agent_id
   where h.lead_id = explain_routing.lead_id
   order by h.routed_at, h.id;
end;
$$;

comment on function app_public.explain_routing(uuid) is $$Every routing decision about a lead of your tenant, oldest first, in words: the outcome and why, the strategy, rule and experiment variant, and one line per agent listed (eligible with rank and score, or which checks failed and why: skill, language, area, availability, schedule, capacity, cap, slot, free, not_rejected); beyond 10 agents, one line per failing check with how many more agents failed it first, and how many more were eligible. Any member may ask. Errors: 28000 not logged in, P0002 unknown lead (or one of another tenant).$$;

grant execute on function app_public.explain_routing(uuid) to :DATABASE_VISITOR;
--! EndIncluded routing/explain_routing.sql
