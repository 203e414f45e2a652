--! Previous: sha1:2e82573dfd44df986acf643ad05ab5a719ed5785
--! Hash: sha1:bd705acf8f4c223d05d1a6f5e4af40755db3757e
--! Message: Funnel and ROI at real size (issue 16): rollups kept by triggers in the transaction of the change

-- Funnel and ROI at real size (issue 16): both reports read rollups kept by triggers in the same
-- transaction as the change, instead of re-reading a year of leads and status history on every call.
-- Writers only append delta rows (no two writers ever update the same row, so they never wait for each
-- other); app_private.compact_lead_rollups folds them into totals every minute; a report sums the rows
-- of its days. The days are the tenant's, so a change of time zone rebuilds the tenant's rollups.

create type app_private.lead_count_change as (
  tenant_id uuid,
  created_at timestamptz,
  source text,
  status text,
  change integer
);
comment on type app_private.lead_count_change is 'One lead entering (+1) or leaving (-1) a count of app_private.lead_day_counts, as the leads trigger collects them.';

create type app_private.lead_stage_reach as (
  stage_order integer,
  day date,
  previous_day date
);
comment on type app_private.lead_stage_reach is 'A day (in the tenant''s time zone) on which a lead reached a funnel stage or a later one, with the previous such day (null for the first).';

create table app_private.lead_day_counts (
  id bigint generated always as identity primary key,
  tenant_id uuid not null constraint lead_day_counts_tenant_must_exist references app_public.tenants (id) on delete cascade,
  day date not null,
  source text not null,
  status text not null,
  leads integer not null,
  is_total boolean not null default false
);
comment on table app_private.lead_day_counts is 'The rollup behind lead_source_roi: how many live (not soft-deleted) leads a tenant has per day of creation (in the tenant''s time zone), source and status. Triggers on leads append delta rows (is_total false) in the transaction of the change; app_private.compact_lead_rollups folds them into one total row per key. The count of a key is the sum of its rows.';
comment on column app_private.lead_day_counts.id is 'Sequence number of the row.';
comment on column app_private.lead_day_counts.tenant_id is 'The tenant.';
comment on column app_private.lead_day_counts.day is 'The day the leads were created, in the tenant''s time zone.';
comment on column app_private.lead_day_counts.source is 'The source of the leads.';
comment on column app_private.lead_day_counts.status is 'The current status of the leads.';
comment on column app_private.lead_day_counts.leads is 'How many leads this row adds (negative for a delta that removes some).';
comment on column app_private.lead_day_counts.is_total is 'True for the folded total of its key (one per key), false for a delta not folded yet.';
create unique index lead_day_counts_one_total_per_day_source_status
  on app_private.lead_day_counts (tenant_id, day, source, status) where is_total;
comment on index app_private.lead_day_counts_one_total_per_day_source_status is 'One total per tenant, day, source and status: the target of the compaction.';
create index lead_day_counts_by_day on app_private.lead_day_counts (tenant_id, day) include (source, status, leads);
comment on index app_private.lead_day_counts_by_day is 'lead_source_roi: the rows of a tenant''s date range, read from the index alone.';
create index lead_day_counts_deltas on app_private.lead_day_counts (tenant_id) where not is_total;
comment on index app_private.lead_day_counts_deltas is 'The delta rows waiting for compaction.';
alter table app_private.lead_day_counts enable row level security;
alter table app_private.lead_day_counts force row level security;
create policy owner_all on app_private.lead_day_counts for all to :DATABASE_OWNER using (true) with check (true);

create table app_private.lead_stage_reaches (
  id bigint generated always as identity primary key,
  tenant_id uuid not null constraint lead_stage_reaches_tenant_must_exist references app_public.tenants (id) on delete cascade,
  stage_order integer not null,
  day date not null,
  previous_day date,
  leads integer not null,
  is_total boolean not null default false,
  constraint lead_stage_reaches_previous_day_must_be_before_day check (previous_day < day)
);
comment on table app_private.lead_stage_reaches is 'The rollup behind lead_funnel: for each funnel stage, day and previous day, how many live leads reached that stage (or a later one) that day and, before that, last on the previous day (see app_private.lead_funnel_reaches). The leads that reached a stage in a range are the rows with the day in the range and the previous day before it (or none). Kept by triggers on lead_status_history and leads as delta rows, folded by app_private.compact_lead_rollups.';
comment on column app_private.lead_stage_reaches.id is 'Sequence number of the row.';
comment on column app_private.lead_stage_reaches.tenant_id is 'The tenant.';
comment on column app_private.lead_stage_reaches.stage_order is 'The funnel stage (lead_statuses.stage_order).';
comment on column app_private.lead_stage_reaches.day is 'A day on which the leads reached the stage or a later one, in the tenant''s time zone.';
comment on column app_private.lead_stage_reaches.previous_day is 'The day they did so the time before; null when this was the first time.';
comment on column app_private.lead_stage_reaches.leads is 'How many leads this row adds (negative for a delta that removes some).';
comment on column app_private.lead_stage_reaches.is_total is 'True for the folded total of its key (one per key), false for a delta not folded yet.';
create unique index lead_stage_reaches_one_total_per_stage_and_days
  on app_private.lead_stage_reaches (tenant_id, stage_order, day, previous_day) nulls not distinct where is_total;
comment on index app_private.lead_stage_reaches_one_total_per_stage_and_days is 'One total per tenant, stage, day and previous day (a missing previous day counts as one value): the target of the compaction.';
create index lead_stage_reaches_by_day on app_private.lead_stage_reaches (tenant_id, day) include (stage_order, previous_day, leads);
comment on index app_private.lead_stage_reaches_by_day is 'lead_funnel: the rows of a tenant''s date range, read from the index alone.';
create index lead_stage_reaches_deltas on app_private.lead_stage_reaches (tenant_id) where not is_total;
comment on index app_private.lead_stage_reaches_deltas is 'The delta rows waiting for compaction.';
alter table app_private.lead_stage_reaches enable row level security;
alter table app_private.lead_stage_reaches force row level security;
create policy owner_all on app_private.lead_stage_reaches for all to :DATABASE_OWNER using (true) with check (true);

create table app_private.lead_funnel_marks (
  lead_id uuid primary key,
  tenant_id uuid not null constraint lead_funnel_marks_tenant_must_exist references app_public.tenants (id) on delete cascade,
  reaches app_private.lead_stage_reach[] not null
);
comment on table app_private.lead_funnel_marks is 'What each live lead with funnel history currently contributes to app_private.lead_stage_reaches, so that a change of its history (backdated, deleted) or its deletion and restore is applied as the exact difference. No foreign key to leads: when a lead is erased, its row is still needed to take its contribution back.';
comment on column app_private.lead_funnel_marks.lead_id is 'The lead.';
comment on column app_private.lead_funnel_marks.tenant_id is 'The tenant of the lead.';
comment on column app_private.lead_funnel_marks.reaches is 'Its rows of lead_stage_reaches (stage, day, previous day), each counting one.';
create index lead_funnel_marks_by_tenant on app_private.lead_funnel_marks (tenant_id);
comment on index app_private.lead_funnel_marks_by_tenant is 'rebuild_lead_rollups: a tenant''s marks.';
alter table app_private.lead_funnel_marks enable row level security;
alter table app_private.lead_funnel_marks force row level security;
create policy owner_all on app_private.lead_funnel_marks for all to :DATABASE_OWNER using (true) with check (true);

--! Included crm/share_lead_rollups.sql
create or replace function app_private.share_lead_rollups(tenant_ids uuid[]) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Shared: writers of different leads never wait for each other, only for a rebuild of their tenant
  -- (app_private.rebuild_lead_rollups takes the same key exclusively). Taken in tenant order.
  perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtextextended('lead_rollups:' || t.id::text, 0))
     from (select distinct u.id from pg_catalog.unnest(share_lead_rollups.tenant_ids) as u(id) where u.id is not null order by 1) t;
end;
$$;

comment on function app_private.share_lead_rollups(uuid[]) is 'Takes, until the end of the transaction, the shared lock on the report rollups (lead_day_counts, lead_stage_reaches, lead_funnel_marks) of each given tenant. Every trigger that writes a rollup delta takes it before reading the tenant''s time zone; app_private.rebuild_lead_rollups takes it exclusively, so a rebuild after a change of time zone neither misses nor double counts a concurrent change.';
--! EndIncluded crm/share_lead_rollups.sql
--! Included crm/lead_funnel_reaches.sql
create or replace function app_private.lead_funnel_reaches(lead_ids uuid[],
  out lead_id uuid, out tenant_id uuid, out reaches app_private.lead_stage_reach[]) returns setof record
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  with live as (
    select l.id, l.tenant_id, coalesce(bs.timezone, 'UTC') as timezone
      from pg_catalog.unnest(lead_funnel_reaches.lead_ids) as t(id)
      join app_public.leads l on l.id = t.id
      left join app_public.business_settings bs on bs.tenant_id = l.tenant_id
     where l.deleted_at is null
  ), days as (
    -- The furthest funnel stage the lead entered on each day of its history, in the days of its tenant.
    select v.id, v.tenant_id, pg_catalog.timezone(v.timezone, h.changed_at)::date as day,
           pg_catalog.max(hs.stage_order) as reached
      from live v
      join app_public.lead_status_history h on h.tenant_id = v.tenant_id and h.lead_id = v.id
      join app_public.lead_statuses hs on hs.status = h.to_status
     where hs.stage_order is not null
     group by v.id, v.tenant_id, 3
  ), chain as (
    -- For each stage, the days on which the lead reached it or a later one, each with the one before.
    select d.id, d.tenant_id, s.stage_order, d.day,
           pg_catalog.lag(d.day) over (partition by d.id, s.stage_order order by d.day) as previous_day
      from days d
      join (select distinct st.stage_order from app_public.lead_statuses st where st.stage_order is not null) s
        on s.stage_order <= d.reached
  )
  select c.id, c.tenant_id,
         pg_catalog.array_agg(row(c.stage_order, c.day, c.previous_day)::app_private.lead_stage_reach
                              order by c.stage_order, c.day)
    from chain c
   group by c.id, c.tenant_id;
$$;

comment on function app_private.lead_funnel_reaches(uuid[]) is 'What each given live lead contributes to the funnel rollup (app_private.lead_stage_reaches): for every funnel stage, each day (in the tenant''s time zone) on which its status history reached that stage or a later one, with the previous such day (null for the first). A lead counts in the funnel of a date range for a stage exactly when one of these days is in the range and the day before it is not, so the funnel of any range is a sum over days. Leads without funnel history, soft-deleted or unknown leads give no row.';
--! EndIncluded crm/lead_funnel_reaches.sql
--! Included crm/sync_lead_funnel_marks.sql
create or replace function app_private.sync_lead_funnel_marks(lead_ids uuid[]) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
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
    on conflict (lead_id) do update set tenant_id = excluded.tenant_id, reaches = excluded.reaches
  ), dropped as (
    delete from app_private.lead_funnel_marks m
     using changed c
     where m.lead_id = c.lead_id and c.new_reaches is null
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
--! Included crm/tg_leads__day_counts.sql
create or replace function app_private.tg_leads__day_counts() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_changes app_private.lead_count_change[];
begin
  if TG_OP = 'INSERT' then
    select pg_catalog.array_agg(row(n.tenant_id, n.created_at, n.source, n.status, 1)::app_private.lead_count_change) into v_changes
      from new_leads n where n.deleted_at is null;
  elsif TG_OP = 'DELETE' then
    select pg_catalog.array_agg(row(o.tenant_id, o.created_at, o.source, o.status, -1)::app_private.lead_count_change) into v_changes
      from old_leads o where o.deleted_at is null;
  else
    -- Most updates change nothing counted (a note, a score, an owner): only the rows that do.
    select pg_catalog.array_agg(x.c) into v_changes
      from new_leads n
      join old_leads o on o.id = n.id
     cross join lateral (values (row(o.tenant_id, o.created_at, o.source, o.status, -1)::app_private.lead_count_change, o.deleted_at is null),
                                (row(n.tenant_id, n.created_at, n.source, n.status, 1)::app_private.lead_count_change, n.deleted_at is null)) x(c, live)
     where x.live
       and (n.tenant_id, n.created_at, n.source, n.status, n.deleted_at is null)
           is distinct from (o.tenant_id, o.created_at, o.source, o.status, o.deleted_at is null);
  end if;
  if v_changes is null then
    return null;
  end if;
  perform app_private.share_lead_rollups(array(select c.tenant_id from pg_catalog.unnest(v_changes) c));
  insert into app_private.lead_day_counts (tenant_id, day, source, status, leads)
  select c.tenant_id, pg_catalog.timezone(coalesce(bs.timezone, 'UTC'), c.created_at)::date, c.source, c.status,
         pg_catalog.sum(c.change)::integer
    from pg_catalog.unnest(v_changes) c
    left join app_public.business_settings bs on bs.tenant_id = c.tenant_id
   -- A tenant being deleted takes its rollups with it.
   where exists (select 1 from app_public.tenants t where t.id = c.tenant_id)
   group by c.tenant_id, 2, c.source, c.status
  having pg_catalog.sum(c.change) <> 0;
  return null;
end;
$$;

comment on function app_private.tg_leads__day_counts() is 'Trigger (_550_day_counts_on_insert, _on_update, _on_delete: after each statement on leads): records in lead_day_counts, as delta rows, how the statement changed the number of live leads per tenant, day of creation (in the tenant''s time zone), source and status. Updates that change none of these (or deleted_at) write nothing. One insert per statement, so a batch import adds one row per day, source and status, not one per lead.';
--! EndIncluded crm/tg_leads__day_counts.sql
--! Included crm/tg_leads__funnel_marks.sql
create or replace function app_private.tg_leads__funnel_marks() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.sync_lead_funnel_marks(array[NEW.id]);
  return null;
end;
$$;

comment on function app_private.tg_leads__funnel_marks() is 'Trigger (_560_funnel_marks: after update of deleted_at or tenant_id on leads, when either changed): a soft-deleted lead leaves the funnel rollup and a restored one comes back (app_private.sync_lead_funnel_marks).';
--! EndIncluded crm/tg_leads__funnel_marks.sql
--! Included crm/tg_lead_status_history__funnel_marks.sql
create or replace function app_private.tg_lead_status_history__funnel_marks() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_leads uuid[];
begin
  if TG_OP = 'INSERT' then
    select pg_catalog.array_agg(distinct n.lead_id) into v_leads from new_history n;
  elsif TG_OP = 'DELETE' then
    select pg_catalog.array_agg(distinct o.lead_id) into v_leads from old_history o;
  else
    select pg_catalog.array_agg(distinct x.lead_id) into v_leads
      from (select n.lead_id from new_history n union all select o.lead_id from old_history o) x;
  end if;
  perform app_private.sync_lead_funnel_marks(v_leads);
  return null;
end;
$$;

comment on function app_private.tg_lead_status_history__funnel_marks() is 'Trigger (_900_funnel_marks_on_insert, _on_update, _on_delete: after each statement on lead_status_history): brings the funnel rollup up to date for the leads whose history the statement changed, backdated entries and deletions included (app_private.sync_lead_funnel_marks).';
--! EndIncluded crm/tg_lead_status_history__funnel_marks.sql
--! Included crm/rebuild_lead_rollups.sql
create or replace function app_private.rebuild_lead_rollups(tenant_id uuid) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := rebuild_lead_rollups.tenant_id;
  v_timezone text;
begin
  -- Exclusive: waits for the transactions writing deltas for this tenant, and makes new ones wait.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('lead_rollups:' || v_tenant::text, 0));
  v_timezone := coalesce((select bs.timezone from app_public.business_settings bs where bs.tenant_id = v_tenant), 'UTC');

  delete from app_private.lead_day_counts c where c.tenant_id = v_tenant;
  insert into app_private.lead_day_counts (tenant_id, day, source, status, leads, is_total)
  select l.tenant_id, pg_catalog.timezone(v_timezone, l.created_at)::date, l.source, l.status, pg_catalog.count(*)::integer, true
    from app_public.leads l
   where l.tenant_id = v_tenant and l.deleted_at is null
   group by l.tenant_id, 2, l.source, l.status;

  delete from app_private.lead_funnel_marks m where m.tenant_id = v_tenant;
  insert into app_private.lead_funnel_marks (lead_id, tenant_id, reaches)
  select r.lead_id, r.tenant_id, r.reaches
    from app_private.lead_funnel_reaches(array(
           select l.id from app_public.leads l where l.tenant_id = v_tenant and l.deleted_at is null)) r;

  delete from app_private.lead_stage_reaches s where s.tenant_id = v_tenant;
  insert into app_private.lead_stage_reaches (tenant_id, stage_order, day, previous_day, leads, is_total)
  select m.tenant_id, r.stage_order, r.day, r.previous_day, pg_catalog.count(*)::integer, true
    from app_private.lead_funnel_marks m
   cross join pg_catalog.unnest(m.reaches) r
   where m.tenant_id = v_tenant
   group by m.tenant_id, r.stage_order, r.day, r.previous_day;
end;
$$;

comment on function app_private.rebuild_lead_rollups(uuid) is 'Recomputes from scratch the report rollups of one tenant (lead_day_counts, lead_funnel_marks, lead_stage_reaches) as compacted totals. Runs by itself when the tenant''s time zone changes (the rollups count days in it) and when the funnel stages change; run it by hand after loading leads or history with triggers off (session_replication_role = replica). Waits for, and then holds off, the tenant''s other rollup writers. About 3 s per 100,000 leads (measured with the benchmark).';
--! EndIncluded crm/rebuild_lead_rollups.sql
--! Included crm/tg_business_settings__rebuild_lead_rollups.sql
create or replace function app_private.tg_business_settings__rebuild_lead_rollups() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_OP = 'UPDATE' and OLD.timezone is not distinct from NEW.timezone and OLD.tenant_id = NEW.tenant_id then
    return null;
  end if;
  if TG_OP in ('UPDATE', 'DELETE') then
    perform app_private.rebuild_lead_rollups(OLD.tenant_id);
  end if;
  if TG_OP in ('UPDATE', 'INSERT') and (TG_OP = 'INSERT' or OLD.tenant_id <> NEW.tenant_id) then
    perform app_private.rebuild_lead_rollups(NEW.tenant_id);
  end if;
  return null;
end;
$$;

comment on function app_private.tg_business_settings__rebuild_lead_rollups() is 'Trigger (_600_rebuild_lead_rollups: after insert, delete or update of timezone on business_settings): the report rollups count days in the tenant''s time zone, so a new time zone rebuilds them (app_private.rebuild_lead_rollups; about 3 s per 100,000 leads, once).';
--! EndIncluded crm/tg_business_settings__rebuild_lead_rollups.sql
--! Included crm/tg_lead_statuses__rebuild_lead_rollups.sql
create or replace function app_private.tg_lead_statuses__rebuild_lead_rollups() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.rebuild_lead_rollups(t.id) from app_public.tenants t order by t.id;
  return null;
end;
$$;

comment on function app_private.tg_lead_statuses__rebuild_lead_rollups() is 'Trigger (_900_rebuild_lead_rollups: after each statement changing lead_statuses, which only migrations do): the funnel rollup depends on the stage of each status, so every tenant''s rollups are rebuilt.';
--! EndIncluded crm/tg_lead_statuses__rebuild_lead_rollups.sql
--! Included crm/compact_lead_rollups.sql
create or replace function app_private.compact_lead_rollups() returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid;
  v_zero bigint[];
  v_rows integer;
  v_folded integer := 0;
begin
  for v_tenant in
    select c.tenant_id from app_private.lead_day_counts c where not c.is_total
    union
    select s.tenant_id from app_private.lead_stage_reaches s where not s.is_total
  loop
    -- A tenant being rebuilt is left for the next run.
    if not pg_catalog.pg_try_advisory_xact_lock_shared(pg_catalog.hashtextextended('lead_rollups:' || v_tenant::text, 0)) then
      continue;
    end if;

    with moved as (
      delete from app_private.lead_day_counts c
       where c.tenant_id = v_tenant and not c.is_total
      returning c.day, c.source, c.status, c.leads
    ), folded as (
      insert into app_private.lead_day_counts as c (tenant_id, day, source, status, leads, is_total)
      select v_tenant, m.day, m.source, m.status, pg_catalog.sum(m.leads)::integer, true
        from moved m
       group by m.day, m.source, m.status
      on conflict (tenant_id, day, source, status) where is_total
      do update set leads = c.leads + excluded.leads
      returning c.id, c.leads
    )
    select pg_catalog.count(*)::integer, pg_catalog.array_agg(f.id) filter (where f.leads = 0) into v_rows, v_zero from folded f;
    delete from app_private.lead_day_counts c where c.id = any(v_zero);
    v_folded := v_folded + v_rows;

    with moved as (
      delete from app_private.lead_stage_reaches s
       where s.tenant_id = v_tenant and not s.is_total
      returning s.stage_order, s.day, s.previous_day, s.leads
    ), folded as (
      insert into app_private.lead_stage_reaches as s (tenant_id, stage_order, day, previous_day, leads, is_total)
      select v_tenant, m.stage_order, m.day, m.previous_day, pg_catalog.sum(m.leads)::integer, true
        from moved m
       group by m.stage_order, m.day, m.previous_day
      on conflict (tenant_id, stage_order, day, previous_day) where is_total
      do update set leads = s.leads + excluded.leads
      returning s.id, s.leads
    )
    select pg_catalog.count(*)::integer, pg_catalog.array_agg(f.id) filter (where f.leads = 0) into v_rows, v_zero from folded f;
    delete from app_private.lead_stage_reaches s where s.id = any(v_zero);
    v_folded := v_folded + v_rows;
  end loop;
  return v_folded;
end;
$$;

comment on function app_private.compact_lead_rollups() is 'Folds the delta rows of the report rollups (lead_day_counts, lead_stage_reaches) into one total row per key, tenant by tenant, and drops totals that reached zero; returns the number of totals written. Exact while writers run: a delta is moved into its total in one statement, and concurrent deltas stay for the next run. Scheduled every minute (crontab: maintenance__compact_lead_rollups); reports are exact without it, only slower when deltas pile up.';
--! EndIncluded crm/compact_lead_rollups.sql
--! Included crm/lead_funnel.sql
create or replace function app_public.lead_funnel(from_date date, to_date date) returns setof app_public.lead_funnel_stage
  -- SECURITY DEFINER: it reads the rollup in app_private, for the tenant of the caller only.
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
  -- Always a custom plan: a generic plan ignores the actual tenant and dates (see migration 000003).
  set plan_cache_mode = force_custom_plan
as $$
declare
  v_tenant_id uuid := app_public.current_tenant_id();
begin
  if from_date is null or to_date is null then
    raise exception 'from_date and to_date are required' using errcode = '22023';
  end if;
  if from_date > to_date then
    raise exception 'from_date (%) must be on or before to_date (%)', from_date, to_date using errcode = '22023';
  end if;
  return query
    with stages as (
      select s.stage_order,
             (pg_catalog.array_agg(s.status order by
                pg_catalog.array_position(array['new', 'contacted', 'qualified', 'hot', 'won']::text[], s.status) nulls last, s.status))[1] as stage
        from app_public.lead_statuses s
       where s.stage_order is not null
       group by s.stage_order
    ), reached as (
      -- A lead reached a stage in the range when one of its days for that stage is in the range and
      -- the day before it is not (see app_private.lead_funnel_reaches): a sum over the days of the range.
      select r.stage_order, pg_catalog.sum(r.leads)::integer as leads
        from app_private.lead_stage_reaches r
       where r.tenant_id = v_tenant_id
         and r.day >= from_date
         and r.day <= to_date
         and (r.previous_day is null or r.previous_day < from_date)
       group by r.stage_order
    )
    select s.stage, s.stage_order, coalesce(r.leads, 0),
           pg_catalog.round(coalesce(r.leads, 0)::numeric
             / nullif(pg_catalog.lag(coalesce(r.leads, 0)) over (order by s.stage_order), 0), 4)
      from stages s
      left join reached r on r.stage_order = s.stage_order
     order by s.stage_order;
end;
$$;

comment on function app_public.lead_funnel(date, date) is $$The lead funnel from from_date to to_date (inclusive days in the business's time zone), from the status history (read from the incrementally maintained rollup app_private.lead_stage_reaches, so the cost grows with the days in the range, not with the leads): one row per stage (new, contacted, qualified, hot, won; statuses at the same stage_order count as one stage), with the distinct leads that reached that stage or a later one in the range, and the conversion from the previous stage. Soft-deleted leads are left out. Example: leadFunnel(fromDate: "2025-03-01", toDate: "2025-03-31"). Errors: 22023 when a date is missing or from_date is after to_date.$$;

grant execute on function app_public.lead_funnel(date,date) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_funnel.sql
--! Included crm/lead_source_roi.sql
create or replace function app_public.lead_source_roi(from_date date, to_date date) returns setof app_public.lead_source_roi_row
  -- SECURITY DEFINER: it reads the rollup in app_private, for the tenant of the caller only.
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
  -- Always a custom plan: a generic plan ignores the actual tenant and dates (see migration 000003).
  set plan_cache_mode = force_custom_plan
as $$
declare
  v_tenant_id uuid := app_public.current_tenant_id();
begin
  if from_date is null or to_date is null then
    raise exception 'from_date and to_date are required' using errcode = '22023';
  end if;
  if from_date > to_date then
    raise exception 'from_date (%) must be on or before to_date (%)', from_date, to_date using errcode = '22023';
  end if;
  return query
    with lead_stats as (
      select c.source, pg_catalog.sum(c.leads)::integer as leads,
             coalesce(pg_catalog.sum(c.leads) filter (where st.outcome = 'won'), 0)::integer as conversions
        from app_private.lead_day_counts c
        join app_public.lead_statuses st on st.status = c.status
       where c.tenant_id = v_tenant_id
         and c.day >= from_date
         and c.day <= to_date
       group by c.source
      having pg_catalog.sum(c.leads) <> 0
    ), cost_stats as (
      select c.source, pg_catalog.sum(c.cost) as cost
        from app_public.lead_source_costs c
       where c.tenant_id = v_tenant_id
         and c.period between pg_catalog.to_char(from_date, 'YYYY-MM') and pg_catalog.to_char(to_date, 'YYYY-MM')
       group by c.source
    )
    select coalesce(ls.source, cs.source),
           coalesce(ls.leads, 0),
           coalesce(ls.conversions, 0),
           pg_catalog.round(coalesce(cs.cost, 0), 2),
           pg_catalog.round(coalesce(cs.cost, 0) / nullif(ls.leads, 0), 2),
           pg_catalog.round(ls.conversions::numeric / nullif(ls.leads, 0), 4),
           pg_catalog.round(coalesce(cs.cost, 0) / nullif(ls.conversions, 0), 2)
      from lead_stats ls
      full join cost_stats cs on cs.source = ls.source
     order by 1;
end;
$$;

comment on function app_public.lead_source_roi(date, date) is $$Return on investment per lead source (counts read from the incrementally maintained rollup app_private.lead_day_counts, so the cost grows with the days in the range, not with the leads) for leads created from from_date to to_date (inclusive days in the business's time zone): leads, conversions (won outcomes), cost of the months overlapping the range (whole months), cost per lead, conversion rate and cost per conversion. Sources with costs but no leads appear too (0 leads). Soft-deleted leads are left out. Example: leadSourceRoi(fromDate: "2025-03-01", toDate: "2025-03-31"). Errors: 22023 when a date is missing or from_date is after to_date.$$;

grant execute on function app_public.lead_source_roi(date,date) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_source_roi.sql

create trigger _550_day_counts_on_insert after insert on app_public.leads
  referencing new table as new_leads for each statement execute function app_private.tg_leads__day_counts();
create trigger _550_day_counts_on_update after update on app_public.leads
  referencing old table as old_leads new table as new_leads for each statement execute function app_private.tg_leads__day_counts();
create trigger _550_day_counts_on_delete after delete on app_public.leads
  referencing old table as old_leads for each statement execute function app_private.tg_leads__day_counts();
create trigger _560_funnel_marks after update of deleted_at, tenant_id on app_public.leads
  for each row when (old.deleted_at is distinct from new.deleted_at or old.tenant_id is distinct from new.tenant_id)
  execute function app_private.tg_leads__funnel_marks();
create trigger _900_funnel_marks_on_insert after insert on app_public.lead_status_history
  referencing new table as new_history for each statement execute function app_private.tg_lead_status_history__funnel_marks();
create trigger _900_funnel_marks_on_update after update on app_public.lead_status_history
  referencing old table as old_history new table as new_history for each statement execute function app_private.tg_lead_status_history__funnel_marks();
create trigger _900_funnel_marks_on_delete after delete on app_public.lead_status_history
  referencing old table as old_history for each statement execute function app_private.tg_lead_status_history__funnel_marks();
create trigger _600_rebuild_lead_rollups after insert or delete or update of timezone, tenant_id on app_public.business_settings
  for each row execute function app_private.tg_business_settings__rebuild_lead_rollups();
create trigger _900_rebuild_lead_rollups after insert or update or delete on app_public.lead_statuses
  for each statement execute function app_private.tg_lead_statuses__rebuild_lead_rollups();

-- The rollups of the leads already there.
select app_private.rebuild_lead_rollups(t.id) from app_public.tenants t order by t.id;
