--! Previous: sha1:33f93595e3b06cc27d0a0c5301d6ad3be06df6de
--! Hash: sha1:413e288758e1eeafd8b4b2fdbe5eeeca9e0b4508
--! Message: Cheaper imports (issue 16): the creation of the leads of one insert statement is audited by one statement-level insert, their first status dated the same without reading the audit log; the funnel sync reaches the marks of its leads by index instead of reading every tenant's marks on each insert

-- The creation of new leads is audited per statement (one insert of every *created* entry, at the
-- start of the statement); changes and deletions stay per row.
--! Included crm/tg_leads__audit.sql
create or replace function app_private.tg_leads__audit() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- Trigger arguments (fixed by the DDL that attaches this function): columns never recorded.
  v_ignored text[] := coalesce(TG_ARGV, '{}');
  v_user_id uuid;
  v_api_key_id uuid;
  v_source text;
  v_at timestamptz;
begin
  if TG_OP = 'DELETE' then
    -- lead_audit_log references leads (on delete cascade): the history goes with the lead.
    return null;
  end if;
  v_user_id := app_public.current_user_id();
  v_api_key_id := app_public.current_api_key_id();
  v_source := app_private.change_source(v_user_id, v_api_key_id);
  if TG_OP = 'INSERT' then
    -- Every lead of the statement at once (an import chunk is one insert). The creation is dated at
    -- the start of the statement: before anything the row triggers of the same statement recorded at
    -- the clock time (an owner set by auto-routing, a nurture enrollment), so a timeline keeps it first.
    insert into app_public.lead_audit_log (tenant_id, lead_id, field_name, old_value, new_value,
      changed_by_user_id, changed_by_api_key_id, change_source, changed_at)
    select n.tenant_id, n.id, '*created*', null, pg_catalog.to_jsonb(n) - v_ignored,
           v_user_id, v_api_key_id, v_source, pg_catalog.statement_timestamp()
      from new_leads n;
    return null;
  end if;
  -- clock_timestamp(), not now(): several changes in one transaction keep their real order.
  v_at := pg_catalog.clock_timestamp();
  -- One row per changed column, in column order.
  insert into app_public.lead_audit_log (tenant_id, lead_id, field_name, old_value, new_value,
    changed_by_user_id, changed_by_api_key_id, change_source, changed_at)
  select NEW.tenant_id, NEW.id, n.key, nullif(o.value, 'null'::jsonb), nullif(n.value, 'null'::jsonb), v_user_id, v_api_key_id, v_source, v_at
    from pg_catalog.jsonb_each(pg_catalog.to_jsonb(NEW)) n
    join pg_catalog.jsonb_each(pg_catalog.to_jsonb(OLD)) o on o.key = n.key
    join pg_catalog.pg_attribute a on a.attrelid = TG_RELID and a.attname = n.key
   where o.value is distinct from n.value and not (n.key = any (v_ignored))
   order by a.attnum;
  return null;
end;
$$;

comment on function app_private.tg_leads__audit() is $$AFTER INSERT/UPDATE/DELETE trigger of app_public.leads that records its changes in app_public.lead_audit_log: the rule of app_private.tg__audit_changes (which audits the other tables) written out with static SQL for the table every routing decision, import row and edit writes, so that its plans are kept (measured: 0.35 ms per lead update with the generic, dynamic trigger).
Arguments: the columns never recorded (updated_at, full_name).
Attached twice: _500_audit (after update or delete, each row) and _500_audit_on_insert (after insert, each statement, transition table new_leads).
UPDATE writes one row per changed column (IS DISTINCT FROM on the JSON values; a null value is stored as SQL NULL), in column order, at the clock time; INSERT one row "*created*" per new lead with the row as new_value, all of a statement in one insert, at the time the statement started (statement_timestamp(): never after what the statement's row triggers recorded); DELETE nothing (the history of a lead goes with it: lead_audit_log_lead_must_exist cascades).
Who: app_public.current_user_id() and current_api_key_id() (both null = the system); through what: app_private.change_source().$$;
--! EndIncluded crm/tg_leads__audit.sql
drop trigger if exists _500_audit on app_public.leads;
drop trigger if exists _500_audit_on_insert on app_public.leads;
create trigger _500_audit after update or delete on app_public.leads
  for each row execute function app_private.tg_leads__audit('updated_at', 'full_name');
create trigger _500_audit_on_insert after insert on app_public.leads
  referencing new table as new_leads for each statement execute function app_private.tg_leads__audit('updated_at', 'full_name');

-- The first status of a new lead is dated like its *created* entry, without reading the audit log.
--! Included crm/tg_leads__status_history.sql
create or replace function app_private.tg_leads__status_history() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user_id uuid := app_public.current_user_id();
begin
  if TG_LEVEL = 'STATEMENT' then
    -- New leads, all of the statement at once (an import chunk is one insert). Each entered its first
    -- status when it was created: at the start of the statement, the time of its audit entry
    -- *created* (app_private.tg_leads__audit), so a timeline keeps it before what the row triggers did.
    insert into app_public.lead_status_history (tenant_id, lead_id, from_status, to_status, trigger_type, changed_by_user_id, changed_at)
    select n.tenant_id, n.id, null, n.status,
           app_private.change_source(v_user_id, app_public.current_api_key_id()), v_user_id,
           pg_catalog.statement_timestamp()
      from new_leads n;
    return null;
  end if;
  if OLD.status is not distinct from NEW.status then
    return null;
  end if;
  insert into app_public.lead_status_history (tenant_id, lead_id, from_status, to_status, trigger_type, changed_by_user_id, changed_at)
  values (NEW.tenant_id, NEW.id, OLD.status, NEW.status,
    app_private.change_source(v_user_id, app_public.current_api_key_id()), v_user_id, pg_catalog.clock_timestamp());
  return null;
end;
$$;

comment on function app_private.tg_leads__status_history() is 'Trigger on leads: records the status a lead enters in lead_status_history, with the change source as trigger_type and the acting user. _510_status_history_on_insert (after each insert statement) writes the first status of every new lead in one statement, at the start of the statement, the time of its audit entry *created*; _510_status_history (after update of status, each row) writes a change when the status really changed, at the clock time.';
--! EndIncluded crm/tg_leads__status_history.sql

-- The delete of dropped marks reaches them by lead (it read every tenant's marks on each insert).
--! Included crm/sync_lead_funnel_marks.sql
create or replace function app_private.sync_lead_funnel_marks(lead_ids uuid[]) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  -- Always the generic plan, made once per session (see app_private.lead_funnel_reaches).
  set plan_cache_mode = force_generic_plan
as $$
declare
  v_ids uuid[];
begin
  select pg_catalog.array_agg(distinct t.id order by t.id) into v_ids
    from pg_catalog.unnest(sync_lead_funnel_marks.lead_ids) as t(id)
   where t.id is not null;
  if v_ids is null then
    return;
  end if;
  -- Two transactions changing the history of one lead take turns, so that each diffs against what the
  -- other recorded (the usual path, a status change, already holds this lock).
  perform 1 from app_public.leads l where l.id = any(v_ids) order by l.id for no key update of l;
  perform app_private.share_lead_rollups(array(
    select l.tenant_id from app_public.leads l where l.id = any(v_ids)
    union
    select m.tenant_id from app_private.lead_funnel_marks m where m.lead_id = any(v_ids)));
  with desired as (
    select r.lead_id, r.tenant_id, r.reaches from app_private.lead_funnel_reaches(v_ids) r
  ), recorded as (
    select m.lead_id, m.tenant_id, m.reaches from app_private.lead_funnel_marks m where m.lead_id = any(v_ids)
  ), changed as (
    select coalesce(d.lead_id, r.lead_id) as lead_id,
           d.tenant_id as new_tenant_id, d.reaches as new_reaches,
           r.tenant_id as old_tenant_id, r.reaches as old_reaches
      from desired d
      full join recorded r on r.lead_id = d.lead_id
     where (d.tenant_id, d.reaches) is distinct from (r.tenant_id, r.reaches)
  ), kept as (
    insert into app_private.lead_funnel_marks as m (lead_id, tenant_id, reaches)
    select c.lead_id, c.new_tenant_id, c.new_reaches from changed c where c.new_reaches is not null
    on conflict (tenant_id, lead_id) do update set reaches = excluded.reaches
  ), dropped as (
    -- The lead left the funnel, or (owner only) moved to another tenant.
    -- m.lead_id = any(v_ids) lets the plan reach the marks by lead; without it the generic plan
    -- hashed the whole table (the marks of every tenant) on every insert statement.
    delete from app_private.lead_funnel_marks m
     using changed c
     where m.lead_id = any(v_ids)
       and m.tenant_id = c.old_tenant_id and m.lead_id = c.lead_id
       and (c.new_reaches is null or c.new_tenant_id is distinct from c.old_tenant_id)
  )
  insert into app_private.lead_stage_reaches (tenant_id, stage_order, day, previous_day, leads)
  select x.tenant_id, x.stage_order, x.day, x.previous_day, pg_catalog.sum(x.change)::integer
    from (select c.new_tenant_id as tenant_id, r.stage_order, r.day, r.previous_day, 1 as change
            from changed c cross join pg_catalog.unnest(c.new_reaches) r
          union all
          select c.old_tenant_id, r.stage_order, r.day, r.previous_day, -1
            from changed c cross join pg_catalog.unnest(c.old_reaches) r) x
   -- A tenant being deleted takes its rollups with it.
   where exists (select 1 from app_public.tenants t where t.id = x.tenant_id)
   group by x.tenant_id, x.stage_order, x.day, x.previous_day
  having pg_catalog.sum(x.change) <> 0;
end;
$$;

comment on function app_private.sync_lead_funnel_marks(uuid[]) is 'Brings the funnel rollup up to date for the given leads after a change of their status history, deletion or restore: computes what each lead contributes now (app_private.lead_funnel_reaches), compares it with what lead_funnel_marks says it contributed, records the difference as delta rows of lead_stage_reaches and the new contribution in lead_funnel_marks. Idempotent, so triggers may call it as often as they like: the last call of a transaction leaves the rollup exact. Locks the leads (no key update) so that concurrent changes of one lead take turns.';
--! EndIncluded crm/sync_lead_funnel_marks.sql
