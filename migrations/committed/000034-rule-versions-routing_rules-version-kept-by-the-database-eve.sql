--! Previous: sha1:e777c894f7c784d01cc1fbcbbf9d5da9ed6526b0
--! Hash: sha1:b6becab7620b2c869b69d2bca9513dc9491b77d3
--! Message: Rule versions: routing_rules.version kept by the database, every version in routing_rule_versions, lead_routing_history.rule_version, explain_routing names the rule as it was; editing a rule without touching its agents no longer fails with Unknown agent null (a stale FOUND)

-- Issue 15, point 2 (the rest): a decision records the version of the rule that matched, and every
-- version of a rule is kept, so an explanation says what the rule was when it decided, also after
-- the rule changed or was deleted.

alter table app_public.routing_rules add column if not exists version integer not null default 1;
alter table app_public.routing_rules drop constraint if exists routing_rules_version_must_be_positive;
alter table app_public.routing_rules add constraint routing_rules_version_must_be_positive check (version >= 1);
comment on column app_public.routing_rules.version is 'The rule''s version: 1 when created, one more each time what it does changes (name, priority, activity, conditions, action, agents, queue, strategy). Kept by the database; every version is in routingRuleVersions.';

create table if not exists app_public.routing_rule_versions (
  tenant_id uuid not null,
  rule_id uuid not null,
  version integer not null,
  name text not null,
  priority integer not null,
  is_active boolean not null,
  conditions jsonb not null,
  action text not null,
  agent_ids uuid[] not null,
  queue_type text,
  strategy text,
  strategy_params jsonb not null,
  recorded_at timestamptz not null default now(),
  constraint routing_rule_versions_pkey primary key (tenant_id, rule_id, version),
  constraint routing_rule_versions_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade
);
comment on table app_public.routing_rule_versions is E'@behavior -insert -update -delete\nEvery version of every routing rule, as it was: decisions record the version they used (lead_routing_history.rule_version), so what a rule said then stays readable after it changed or was deleted. Written by the database only.';
comment on column app_public.routing_rule_versions.tenant_id is 'The tenant.';
comment on column app_public.routing_rule_versions.rule_id is 'The rule (it may since have been deleted).';
comment on column app_public.routing_rule_versions.version is 'The version.';
comment on column app_public.routing_rule_versions.name is 'The rule''s name in this version.';
comment on column app_public.routing_rule_versions.priority is 'Its priority (lower first).';
comment on column app_public.routing_rule_versions.is_active is 'Whether it was active.';
comment on column app_public.routing_rule_versions.conditions is 'Its conditions.';
comment on column app_public.routing_rule_versions.action is 'Its action.';
comment on column app_public.routing_rule_versions.agent_ids is 'Its agents (route_to_agent, route_to_agents).';
comment on column app_public.routing_rule_versions.queue_type is 'Its queue (route_to_queue).';
comment on column app_public.routing_rule_versions.strategy is 'Its strategy.';
comment on column app_public.routing_rule_versions.strategy_params is 'Its strategy parameters.';
comment on column app_public.routing_rule_versions.recorded_at is 'When this version was made.';
alter table app_public.routing_rule_versions enable row level security;
alter table app_public.routing_rule_versions force row level security;
drop policy if exists owner_all on app_public.routing_rule_versions;
create policy owner_all on app_public.routing_rule_versions for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_current_tenant on app_public.routing_rule_versions;
create policy select_current_tenant on app_public.routing_rule_versions for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.routing_rule_versions to :DATABASE_VISITOR;

-- The rules as they are now are their version 1.
insert into app_public.routing_rule_versions (tenant_id, rule_id, version, name, priority, is_active, conditions, action, agent_ids, queue_type, strategy, strategy_params)
select r.tenant_id, r.id, r.version, r.name, r.priority, r.is_active, r.conditions, r.action, r.agent_ids, r.queue_type, r.strategy, r.strategy_params
  from app_public.routing_rules r
on conflict (tenant_id, rule_id, version) do nothing;

-- Editing a rule without touching its agents failed with "Unknown agent null in agent_ids" (the
-- check read a FOUND left over from the filter check): fixed.
--! Included routing/tg_routing_rules__validate.sql
create or replace function app_private.tg_routing_rules__validate() returns trigger
  language plpgsql volatile
  -- SECURITY INVOKER on purpose: a member only ever sees (and so can only name) their own tenant's agents.
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_unknown uuid;
begin
  -- The lead filter language of find_leads; raises 22023 with the parser's message (e.g. an unknown field).
  perform app_hidden.parse_lead_filter(NEW.conditions);

  -- Checked when agent_ids change (an agent deleted later does not block editing the rule's other fields).
  if TG_OP = 'INSERT' or NEW.agent_ids is distinct from OLD.agent_ids then
    select a into v_unknown
      from pg_catalog.unnest(NEW.agent_ids) with ordinality u(a, o)
     where a is null or not exists (select 1 from app_public.agents g where g.tenant_id = NEW.tenant_id and g.id = u.a)
     order by o
     limit 1;
    -- Inside the branch: FOUND outside it would still be the one of parse_lead_filter above.
    if found then
      raise exception 'Unknown agent % in agent_ids: every agent must be an agent of this tenant', coalesce(v_unknown::text, 'null')
        using errcode = '22023';
    end if;
  end if;
  if pg_catalog.cardinality(NEW.agent_ids) <> (select pg_catalog.count(distinct a) from pg_catalog.unnest(NEW.agent_ids) a) then
    raise exception 'agent_ids must not name an agent twice' using errcode = '22023';
  end if;

  perform app_hidden.validate_strategy_params(NEW.strategy, NEW.strategy_params, 'strategy_params');
  return NEW;
end;
$$;
comment on function app_private.tg_routing_rules__validate() is 'Trigger (_200_validate, before insert or update on routing_rules): conditions must be a valid lead filter (parse_lead_filter''s 22023 message), every agent_ids entry an agent of the rule''s tenant (22023 naming the id), strategy_params valid for the strategy (validate_strategy_params).';
--! EndIncluded routing/tg_routing_rules__validate.sql
--! Included routing/tg_routing_rules__version.sql
create or replace function app_private.tg_routing_rules__version() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if tg_when = 'BEFORE' then
    -- The version is the database's to keep: one more for every change of what the rule does.
    if tg_op = 'INSERT' then
      new.version := 1;
    elsif (new.name, new.priority, new.is_active, new.conditions, new.action, new.agent_ids, new.queue_type, new.strategy, new.strategy_params)
          is distinct from
          (old.name, old.priority, old.is_active, old.conditions, old.action, old.agent_ids, old.queue_type, old.strategy, old.strategy_params) then
      new.version := old.version + 1;
    else
      new.version := old.version;
    end if;
    return new;
  end if;
  -- After: keep what this version said, so decisions made under it stay explainable.
  insert into app_public.routing_rule_versions (tenant_id, rule_id, version, name, priority, is_active, conditions, action, agent_ids,
    queue_type, strategy, strategy_params)
  values (new.tenant_id, new.id, new.version, new.name, new.priority, new.is_active, new.conditions, new.action, new.agent_ids,
    new.queue_type, new.strategy, new.strategy_params)
  on conflict (tenant_id, rule_id, version) do nothing;
  return null;
end;
$$;

comment on function app_private.tg_routing_rules__version() is 'Triggers on routing_rules: before a write, sets version (1 for a new rule, one more for every change of its name, priority, activity, conditions, action, agents, queue or strategy, unchanged otherwise, whatever the writer sent); after it, records that version in routing_rule_versions.';
--! EndIncluded routing/tg_routing_rules__version.sql
drop trigger if exists _150_version on app_public.routing_rules;
create trigger _150_version before insert or update on app_public.routing_rules
  for each row execute function app_private.tg_routing_rules__version();
comment on trigger _150_version on app_public.routing_rules is 'Sets the rule''s version (one more for each change of what it does).';
drop trigger if exists _900_record_version on app_public.routing_rules;
create trigger _900_record_version after insert or update on app_public.routing_rules
  for each row execute function app_private.tg_routing_rules__version();
comment on trigger _900_record_version on app_public.routing_rules is 'Keeps every version in routing_rule_versions.';

alter table app_public.lead_routing_history add column if not exists rule_version integer;
comment on column app_public.lead_routing_history.rule_version is 'The version of the rule that matched (routing_rule_versions), when a rule matched.';

do $$
begin
  if not exists (
    select 1 from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.typrelid = a.attrelid
     where t.oid = 'app_public.routing_explanation'::regtype and a.attname = 'rule_version' and not a.attisdropped
  ) then
    alter type app_public.routing_explanation add attribute rule_version integer;
  end if;
end
$$;
comment on column app_public.routing_explanation.rule_version is 'The version of the rule that matched; rule_name is its name in that version.';
comment on column app_public.routing_explanation.rule_name is 'The rule that matched, if any, named as it was then.';

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

comment on function app_private.routing_record(app_private.routing_context, jsonb, jsonb, uuid, uuid, text, text, uuid, timestamptz, text) is 'Writes the record of a routing decision: the lead_routing_history row (strategy, rule and its version, experiment variant, lead score, the candidates with the notes of those that changed while routing, compacted beyond 10 agents to the first 10 in the strategy''s order plus the chosen one and those with notes, the others counted per first failing check in candidate_counts; the chosen agent, outcome and reason) and its routing_events row; returns the history id. Also records leads that were not routed (outcome not_routed, no candidates). Part of route_lead.';
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

comment on function app_public.explain_routing(uuid) is $$Every routing decision about a lead of your tenant, oldest first, in words: the outcome and why, the strategy, the rule (its name and version as they were then, also once the rule has changed or gone) and experiment variant, and one line per agent listed (eligible with rank and score, or which checks failed and why: skill, language, area, availability, schedule, capacity, cap, slot, free, not_rejected); beyond 10 agents, one line per failing check with how many more agents failed it first, and how many more were eligible. Any member may ask. Errors: 28000 not logged in, P0002 unknown lead (or one of another tenant).$$;

grant execute on function app_public.explain_routing(uuid) to :DATABASE_VISITOR;
--! EndIncluded routing/explain_routing.sql
