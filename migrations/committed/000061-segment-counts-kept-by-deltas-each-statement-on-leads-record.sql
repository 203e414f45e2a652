--! Previous: sha1:645feaffa25dc74009379093204510cc4f3343e7
--! Hash: sha1:78ebce6fe16d0d1d4fc98e4a6080bc48f1bce520
--! Message: Segment counts kept by deltas: each statement on leads records per segment how it changed the number of matching leads (one static query over the changed rows and the segment filters); the debounced job adds the deltas to lead_count instead of recounting every lead; segments moving with time (created_within_days) are recounted from their window; saving or deleting a segment waits for the lead writes in flight; the nightly job recounts every segment

-- The filter of each segment, typed and ready for the leads trigger (which must never parse JSON
-- or fail on a filter saved under older rules), with its day bounds in the tenant's time zone.
create table if not exists app_private.segment_filters (
  tenant_id uuid not null,
  segment_id uuid not null,
  filter app_hidden.lead_filter not null,
  created_from_at timestamptz,
  created_to_at timestamptz,
  incremental boolean not null,
  constraint segment_filters_pkey primary key (tenant_id, segment_id),
  constraint segment_filters_segment_must_exist foreign key (tenant_id, segment_id)
    references app_public.segments (tenant_id, id) on delete cascade
);
comment on table app_private.segment_filters is 'The filter of each segment as the leads trigger reads it: typed once when the segment is saved (app_private.tg_segments__count_filter), so that writing a lead never parses JSON nor fails on a filter saved under older rules.';
comment on column app_private.segment_filters.tenant_id is 'The tenant of the segment.';
comment on column app_private.segment_filters.segment_id is 'The segment.';
comment on column app_private.segment_filters.filter is 'The segment''s filter, typed (app_hidden.lead_filter_of).';
comment on column app_private.segment_filters.created_from_at is 'Start of the day created_from in the tenant''s time zone (recomputed when the time zone changes).';
comment on column app_private.segment_filters.created_to_at is 'Start of the day after created_to in the tenant''s time zone (recomputed when the time zone changes).';
comment on column app_private.segment_filters.incremental is 'True when the count changes only with writes to leads, so deltas keep it; false for a filter with created_within_days, whose matches also change as time passes (recounted from the leads of its window).';
alter table app_private.segment_filters enable row level security;
alter table app_private.segment_filters force row level security;
drop policy if exists owner_all on app_private.segment_filters;
create policy owner_all on app_private.segment_filters for all to :DATABASE_OWNER using (true) with check (true);

-- How statements on leads changed the number of leads each segment matches, until the job adds them
-- to lead_count.
create table if not exists app_private.segment_count_changes (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  segment_id uuid not null,
  leads integer not null,
  -- No foreign key to the segment: its check would make each writer lock the segment's row, and a
  -- segment being deleted would then wait for writers that wait for it. A segment's deltas are
  -- deleted with it (app_private.tg_segments__count_filter), under the lock that keeps writers out.
  constraint segment_count_changes_tenant_must_exist foreign key (tenant_id)
    references app_public.tenants (id) on delete cascade
);
comment on table app_private.segment_count_changes is 'Delta rows of segment counts: the leads trigger appends how one statement changed the number of leads a segment matches, in the transaction of the change (writers never update a shared row, so they never wait for each other); app_private.fold_segment_counts adds them to segments.lead_count and deletes them. The count of a segment is its lead_count plus its rows here.';
comment on column app_private.segment_count_changes.id is 'Sequence number of the row.';
comment on column app_private.segment_count_changes.tenant_id is 'The tenant of the segment.';
comment on column app_private.segment_count_changes.segment_id is 'The segment.';
comment on column app_private.segment_count_changes.leads is 'How many leads the statement added to the segment (negative when it removed some).';
create index if not exists segment_count_changes_by_segment on app_private.segment_count_changes (tenant_id, segment_id);
comment on index app_private.segment_count_changes_by_segment is 'The deltas of a segment, for the fold and for a recount.';
alter table app_private.segment_count_changes enable row level security;
alter table app_private.segment_count_changes force row level security;
drop policy if exists owner_all on app_private.segment_count_changes;
create policy owner_all on app_private.segment_count_changes for all to :DATABASE_OWNER using (true) with check (true);

--! Included crm/segment_filter_matches.sql
create or replace function app_private.segment_filter_matches(l app_public.leads, sf app_private.segment_filters) returns boolean
  language sql stable parallel safe
  -- SQL without SET options, so that it is inlined into the query of the leads trigger: one static
  -- query evaluates every changed lead against every segment of its tenant. Every name is
  -- schema-qualified. Each condition is that of app_public.find_leads and of
  -- app_hidden.lead_filter_where for the same field (a test compares them on random filters).
as $$
  select coalesce(
    (coalesce((sf.filter).include_deleted, false) or l.deleted_at is null)
    and ((sf.filter).status is null or l.status = any ((sf.filter).status))
    and ((sf.filter).status_not is null or l.status <> all ((sf.filter).status_not))
    and ((sf.filter).tags_any is null or l.tags operator(pg_catalog.&&) (sf.filter).tags_any)
    and ((sf.filter).tags_all is null or l.tags operator(pg_catalog.@>) (sf.filter).tags_all)
    and ((sf.filter).score_min is null or l.lead_score >= (sf.filter).score_min)
    and ((sf.filter).score_max is null or l.lead_score <= (sf.filter).score_max)
    and ((sf.filter).source is null or l.source = any ((sf.filter).source))
    and ((sf.filter).created_within_days is null
         or l.created_at >= pg_catalog.now() - pg_catalog.make_interval(days => (sf.filter).created_within_days))
    and (sf.created_from_at is null or l.created_at >= sf.created_from_at)
    and (sf.created_to_at is null or l.created_at < sf.created_to_at)
    and ((sf.filter).city is null or pg_catalog.lower(l.city) = any ((sf.filter).city))
    and ((sf.filter).region is null or l.region = any ((sf.filter).region))
    and ((sf.filter).owner_user_id is null or l.owner_user_id = (sf.filter).owner_user_id)
    and ((sf.filter).unassigned is null or (sf.filter).unassigned = (l.owner_user_id is null))
    and ((sf.filter).text is null
         or l.full_name operator(pg_catalog.~~*) ('%' || app_hidden.like_escape((sf.filter).text) || '%')
         or l.email::text operator(pg_catalog.~~*) ('%' || app_hidden.like_escape((sf.filter).text) || '%')
         or l.phone::text operator(pg_catalog.~~) ('%' || app_hidden.phone_search_digits((sf.filter).text) || '%')),
    false);
$$;

comment on function app_private.segment_filter_matches(app_public.leads, app_private.segment_filters) is 'Whether a lead (a row of leads, e.g. from the transition table of a statement) matches a segment''s typed filter: the conditions of find_leads, with the day bounds of the segment. Used by the leads trigger to keep segment counts by deltas.';
--! EndIncluded crm/segment_filter_matches.sql
--! Included crm/segment_filter_of.sql
create or replace function app_private.segment_filter_of(tenant_id uuid, filter jsonb,
  out filter app_hidden.lead_filter, out created_from_at timestamptz, out created_to_at timestamptz, out incremental boolean)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select f, app_hidden.tenant_day_start(segment_filter_of.tenant_id, f.created_from),
         app_hidden.tenant_day_start(segment_filter_of.tenant_id, f.created_to + 1),
         f.created_within_days is null
    from app_hidden.lead_filter_of(segment_filter_of.filter) f;
$$;

comment on function app_private.segment_filter_of(uuid, jsonb) is 'A segment''s filter as app_private.segment_filters keeps it: typed, with its day bounds in the tenant''s time zone now, and whether deltas can keep its count (no created_within_days). 22023 for a filter that is not valid.';
--! EndIncluded crm/segment_filter_of.sql
--! Included crm/tg_segments__lock_lead_counts.sql
create or replace function app_private.tg_segments__lock_lead_counts() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- The tenant's lead counts lock, exclusively: the lead writes in flight (which hold it shared
  -- from their statement until they commit, app_private.share_lead_rollups) finish first, and new
  -- ones wait until this transaction ends. So the count of the saved filter (the next trigger) sees
  -- every committed change, no writer records a delta against the old filter once it is counted, and
  -- none records one for a segment being deleted. Saving a segment is rare; writes wait for one count.
  perform pg_catalog.pg_advisory_xact_lock(app_private.lead_rollups_lock_key(coalesce(NEW.tenant_id, OLD.tenant_id)));
  if TG_OP = 'DELETE' then
    return OLD;
  end if;
  return NEW;
end;
$$;

comment on function app_private.tg_segments__lock_lead_counts() is 'Trigger (_150_lock_lead_counts, before a segment is created, its filter changed or it is deleted): takes the tenant''s lead rollups lock exclusively until the end of the transaction, so that the segment''s count and the deltas of lead writes (app_private.segment_count_changes) never miss or double a change.';
--! EndIncluded crm/tg_segments__lock_lead_counts.sql
--! Included crm/tg_segments__count_filter.sql
create or replace function app_private.tg_segments__count_filter() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_OP = 'DELETE' then
    -- Under the lock of _150_lock_lead_counts: no writer can record a delta for it any more.
    delete from app_private.segment_count_changes c where c.tenant_id = OLD.tenant_id and c.segment_id = OLD.id;
    return null;
  end if;
  -- The count was taken (_200_validate_filter) under the lock of _150_lock_lead_counts: the deltas
  -- recorded before are in it, and no other can be recorded until this transaction ends.
  delete from app_private.segment_count_changes c where c.tenant_id = NEW.tenant_id and c.segment_id = NEW.id;
  insert into app_private.segment_filters as sf (tenant_id, segment_id, filter, created_from_at, created_to_at, incremental)
  select NEW.tenant_id, NEW.id, f.filter, f.created_from_at, f.created_to_at, f.incremental
    from app_private.segment_filter_of(NEW.tenant_id, NEW.filter) f
  on conflict (tenant_id, segment_id) do update
    set filter = excluded.filter, created_from_at = excluded.created_from_at,
        created_to_at = excluded.created_to_at, incremental = excluded.incremental;
  return null;
end;
$$;

comment on function app_private.tg_segments__count_filter() is 'Trigger (_500_count_filter, after a segment is created, its filter changed or it is deleted): keeps its typed filter in app_private.segment_filters for the leads trigger, and drops the deltas recorded against its previous filter (the new count includes them) or for the deleted segment.';
--! EndIncluded crm/tg_segments__count_filter.sql
--! Included crm/tg_leads__enqueue_segment_refresh.sql
create or replace function app_private.tg_leads__enqueue_segment_refresh() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid;
  v_tenants uuid[];
begin
  -- The tenants whose segments may see the change.
  if TG_OP = 'INSERT' then
    select pg_catalog.array_agg(distinct n.tenant_id) into v_tenants from new_leads n;
  elsif TG_OP = 'DELETE' then
    select pg_catalog.array_agg(distinct o.tenant_id) into v_tenants from old_leads o;
  else
    -- Only changes a filter can see matter (not e.g. last_contact_at or ai_analysis).
    select pg_catalog.array_agg(distinct x.tenant_id) into v_tenants
    from (
      select n.tenant_id from new_leads n join old_leads o on o.id = n.id
      where (n.tenant_id, n.status, n.tags, n.lead_score, n.source, n.created_at, n.city, n.region, n.owner_user_id,
             n.full_name, n.phone::text, n.email::text, n.deleted_at)
        is distinct from
            (o.tenant_id, o.status, o.tags, o.lead_score, o.source, o.created_at, o.city, o.region, o.owner_user_id,
             o.full_name, o.phone::text, o.email::text, o.deleted_at)
      union all
      select o.tenant_id from new_leads n join old_leads o on o.id = n.id where n.tenant_id <> o.tenant_id
    ) x;
  end if;
  select pg_catalog.array_agg(t order by t) into v_tenants
    from pg_catalog.unnest(v_tenants) t
   where exists (select 1 from app_public.segments s where s.tenant_id = t);
  if v_tenants is null then
    return null;
  end if;

  -- Shared with every other writer, exclusive for a segment being saved or deleted
  -- (app_private.tg_segments__lock_lead_counts): the filters read below are those that will count.
  perform app_private.share_lead_rollups(v_tenants);
  -- (Rows of a transition table are passed as row(x.*)::app_public.leads: a whole-row reference to
  -- one has an anonymous record type.)
  -- One row per segment whose number of matching leads the statement changed: the new rows count
  -- +1, the old rows -1 (an update that moves a lead in or out of a segment gives +1 or -1, one that
  -- keeps it in gives 0 and writes nothing).
  if TG_OP = 'INSERT' then
    insert into app_private.segment_count_changes (tenant_id, segment_id, leads)
    select sf.tenant_id, sf.segment_id, pg_catalog.count(*)::integer
      from new_leads n
      join app_private.segment_filters sf on sf.tenant_id = n.tenant_id and sf.incremental
     where sf.tenant_id = any (v_tenants) and app_private.segment_filter_matches(row(n.*)::app_public.leads, sf)
     group by sf.tenant_id, sf.segment_id;
  elsif TG_OP = 'DELETE' then
    insert into app_private.segment_count_changes (tenant_id, segment_id, leads)
    select sf.tenant_id, sf.segment_id, -pg_catalog.count(*)::integer
      from old_leads o
      join app_private.segment_filters sf on sf.tenant_id = o.tenant_id and sf.incremental
     where sf.tenant_id = any (v_tenants) and app_private.segment_filter_matches(row(o.*)::app_public.leads, sf)
     group by sf.tenant_id, sf.segment_id;
  else
    insert into app_private.segment_count_changes (tenant_id, segment_id, leads)
    select sf.tenant_id, sf.segment_id, pg_catalog.sum(c.change)::integer
      from (select x.lead, x.change
              from new_leads n
              join old_leads o on o.id = n.id
             cross join lateral (values (row(o.*)::app_public.leads, -1), (row(n.*)::app_public.leads, 1)) x(lead, change)
             -- The same fields as above: a lead whose other fields changed stays where it was.
             where (n.tenant_id, n.status, n.tags, n.lead_score, n.source, n.created_at, n.city, n.region, n.owner_user_id,
                    n.full_name, n.phone::text, n.email::text, n.deleted_at)
               is distinct from
                   (o.tenant_id, o.status, o.tags, o.lead_score, o.source, o.created_at, o.city, o.region, o.owner_user_id,
                    o.full_name, o.phone::text, o.email::text, o.deleted_at)) c
      join app_private.segment_filters sf on sf.tenant_id = (c.lead).tenant_id and sf.incremental
     where sf.tenant_id = any (v_tenants) and app_private.segment_filter_matches(c.lead, sf)
     group by sf.tenant_id, sf.segment_id
    having pg_catalog.sum(c.change) <> 0;
  end if;

  for v_tenant_id in select t from pg_catalog.unnest(v_tenants) t loop
    -- job_key in graphile-worker's default "replace" mode: one pending job per tenant whose
    -- run_at moves a few seconds past the latest change (a debounce). It adds the deltas to the
    -- counts and recounts the segments that move with time.
    perform app_private.add_job(
      identifier => 'segment__refresh_counts',
      payload => pg_catalog.json_build_object('tenant_id', v_tenant_id),
      run_at => pg_catalog.clock_timestamp() + interval '5 seconds',
      job_key => 'segment_counts:' || v_tenant_id::text
    );
  end loop;
  return null;
end;
$$;

comment on function app_private.tg_leads__enqueue_segment_refresh() is 'Statement trigger on leads (_900_enqueue_segment_refresh_on_insert, _on_update, _on_delete) for tenants with segments: records in app_private.segment_count_changes how the statement changed the number of leads each segment matches (segments whose filter moves with time excepted), and enqueues one debounced segment__refresh_counts job per tenant (job_key segment_counts:<tenant_id>), which adds them to lead_count. Updates that change no field a filter can see do nothing.';
--! EndIncluded crm/tg_leads__enqueue_segment_refresh.sql
--! Included crm/fold_segment_counts.sql
create or replace function app_private.fold_segment_counts(tenant_id uuid) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_ids uuid[];
  v_segment record;
  v_count integer;
  v_refreshed integer := 0;
begin
  -- The tenant's segments, locked in id order, waiting for one being saved (which drops the deltas
  -- of its old filter): locked before any delta is taken, so a save and a fold never wait for each
  -- other both ways. A segment created after this lock keeps its deltas for the next fold.
  select pg_catalog.array_agg(x.id order by x.id) into v_ids
    from (select s.id from app_public.segments s
           where s.tenant_id = fold_segment_counts.tenant_id
           order by s.id
             for no key update) x;
  if v_ids is null then
    return 0;
  end if;

  -- The deltas committed so far, added to their segments; those of writers still in flight are not
  -- visible yet and stay for the next fold. Reads the deltas, never the leads.
  with moved as (
    delete from app_private.segment_count_changes c
     where c.tenant_id = fold_segment_counts.tenant_id and c.segment_id = any (v_ids)
    returning c.segment_id, c.leads
  ), sums as (
    select m.segment_id, pg_catalog.sum(m.leads)::integer as leads from moved m group by m.segment_id
  )
  update app_public.segments s
     set lead_count = s.lead_count + sums.leads, lead_count_refreshed_at = pg_catalog.now()
    from sums
   where s.tenant_id = fold_segment_counts.tenant_id and s.id = sums.segment_id;
  get diagnostics v_refreshed = row_count;

  -- Segments whose matches move with time (created_within_days): recounted, from the leads of
  -- their window (the index on the tenant and the creation time).
  for v_segment in
    select s.id, s.name, s.filter
      from app_public.segments s
      join app_private.segment_filters sf on sf.tenant_id = s.tenant_id and sf.segment_id = s.id
     where s.tenant_id = fold_segment_counts.tenant_id and s.id = any (v_ids) and not sf.incremental
     order by s.id
  loop
    begin
      v_count := app_hidden.count_matching_leads(fold_segment_counts.tenant_id, v_segment.filter);
    exception when invalid_parameter_value then
      -- A filter saved under older rules (e.g. a status since removed): keep its last count.
      raise warning 'Segment % (%) has an invalid filter: %', v_segment.id, v_segment.name, sqlerrm;
      continue;
    end;
    update app_public.segments s
       set lead_count = v_count, lead_count_refreshed_at = pg_catalog.now()
     where s.tenant_id = fold_segment_counts.tenant_id and s.id = v_segment.id;
    v_refreshed := v_refreshed + 1;
  end loop;
  return v_refreshed;
end;
$$;

comment on function app_private.fold_segment_counts(uuid) is 'What the debounced segment__refresh_counts job runs after lead changes: adds the deltas recorded by the leads trigger (app_private.segment_count_changes) to each segment''s lead_count and deletes them, reading no lead; recounts the segments whose filter moves with time (created_within_days) from the leads of their window. Returns how many segments it updated. Exact under concurrent writers: a delta is added once, by the fold that deletes it.';
--! EndIncluded crm/fold_segment_counts.sql
--! Included crm/refresh_segment_counts.sql
create or replace function app_private.refresh_segment_counts(tenant_id uuid) returns integer
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_segment record;
  v_refreshed integer := 0;
begin
  -- Lock each segment before counting, so the count is for the filter it has now; a segment
  -- being edited right now is skipped (its own trigger computes its count).
  for v_segment in
    select s.id, s.name, s.filter from app_public.segments s
    where s.tenant_id = refresh_segment_counts.tenant_id
    order by s.id
    for no key update skip locked
  loop
    begin
      -- One statement, so one snapshot: the count includes exactly the changes whose deltas it
      -- deletes (those of writers still in flight stay, for the next fold).
      with folded as (
        delete from app_private.segment_count_changes c
         where c.tenant_id = refresh_segment_counts.tenant_id and c.segment_id = v_segment.id
      )
      update app_public.segments s
         set lead_count = app_hidden.count_matching_leads(refresh_segment_counts.tenant_id, v_segment.filter),
             lead_count_refreshed_at = pg_catalog.now()
       where s.tenant_id = refresh_segment_counts.tenant_id and s.id = v_segment.id;
    exception when invalid_parameter_value then
      -- A filter saved under older rules (e.g. a status since removed): keep its last count.
      raise warning 'Segment % (%) has an invalid filter: %', v_segment.id, v_segment.name, sqlerrm;
      continue;
    end;
    v_refreshed := v_refreshed + 1;
  end loop;
  return v_refreshed;
end;
$$;

comment on function app_private.refresh_segment_counts(uuid) is 'Recounts lead_count of every segment of a tenant from its leads (reads every lead a segment matches), with the deltas waiting to be folded; segments locked by an edit in progress are skipped and a segment whose filter is no longer valid keeps its last count (with a warning). Run by the nightly segment__refresh_counts job ({recount: true}), and after a bulk load with triggers off. Returns how many segments it recounted.';
--! EndIncluded crm/refresh_segment_counts.sql
--! Included crm/reset_segment_filters.sql
create or replace function app_private.reset_segment_filters(tenant_id uuid) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_segment record;
  v_from timestamptz;
  v_to timestamptz;
  v_recounted integer := 0;
begin
  -- Called with the tenant's lead rollups lock held exclusively (a change of time zone rebuilds the
  -- rollups first): no lead write is in flight, so a recount and the deltas cannot miss each other.
  for v_segment in
    select s.id, s.name, s.filter
      from app_public.segments s
      join app_private.segment_filters sf on sf.tenant_id = s.tenant_id and sf.segment_id = s.id
     where s.tenant_id = reset_segment_filters.tenant_id
       and ((sf.filter).created_from is not null or (sf.filter).created_to is not null)
     order by s.id
       for no key update of s
  loop
    begin
      select f.created_from_at, f.created_to_at into v_from, v_to
        from app_private.segment_filter_of(reset_segment_filters.tenant_id, v_segment.filter) f;
      update app_private.segment_filters sf
         set created_from_at = v_from, created_to_at = v_to
       where sf.tenant_id = reset_segment_filters.tenant_id and sf.segment_id = v_segment.id;
      delete from app_private.segment_count_changes c
       where c.tenant_id = reset_segment_filters.tenant_id and c.segment_id = v_segment.id;
      update app_public.segments s
         set lead_count = app_hidden.count_matching_leads(reset_segment_filters.tenant_id, v_segment.filter),
             lead_count_refreshed_at = pg_catalog.now()
       where s.tenant_id = reset_segment_filters.tenant_id and s.id = v_segment.id;
    exception when invalid_parameter_value then
      -- A filter saved under older rules (e.g. a status since removed): keep it as it was.
      raise warning 'Segment % (%) has an invalid filter: %', v_segment.id, v_segment.name, sqlerrm;
      continue;
    end;
    v_recounted := v_recounted + 1;
  end loop;
  return v_recounted;
end;
$$;

comment on function app_private.reset_segment_filters(uuid) is 'After a change of the tenant''s time zone: moves the day bounds (created_from, created_to) of its segments'' typed filters to the new zone and recounts those segments from their leads (a segment whose filter is no longer valid is left as it was, with a warning). Needs the tenant''s lead rollups lock held exclusively (the time zone trigger rebuilds the rollups first). Returns how many segments it recounted.';
--! EndIncluded crm/reset_segment_filters.sql
--! Included crm/tg_business_settings__rebuild_lead_rollups.sql
create or replace function app_private.tg_business_settings__rebuild_lead_rollups() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_OP = 'UPDATE' and OLD.timezone is not distinct from NEW.timezone and OLD.tenant_id = NEW.tenant_id then
    return null;
  end if;
  -- The rebuild takes the tenant's lead rollups lock exclusively (no lead write in flight): the day
  -- bounds of its segments' filters are then moved to the new time zone and recounted.
  if TG_OP in ('UPDATE', 'DELETE') then
    perform app_private.rebuild_lead_rollups(OLD.tenant_id);
    perform app_private.reset_segment_filters(OLD.tenant_id);
  end if;
  if TG_OP in ('UPDATE', 'INSERT') and (TG_OP = 'INSERT' or OLD.tenant_id <> NEW.tenant_id) then
    perform app_private.rebuild_lead_rollups(NEW.tenant_id);
    perform app_private.reset_segment_filters(NEW.tenant_id);
  end if;
  return null;
end;
$$;

comment on function app_private.tg_business_settings__rebuild_lead_rollups() is 'Trigger (_600_rebuild_lead_rollups: after insert, delete or update of timezone on business_settings): the report rollups count days in the tenant''s time zone, so a new time zone rebuilds them (app_private.rebuild_lead_rollups; about 3 s per 100,000 leads, once), and moves the day bounds of the segments'' filters (app_private.reset_segment_filters).';
--! EndIncluded crm/tg_business_settings__rebuild_lead_rollups.sql
--! Included crm/enqueue_nightly_crm_refresh.sql
create or replace function app_private.enqueue_nightly_crm_refresh() returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid;
  v_count integer := 0;
begin
  for v_tenant_id in select t.id from app_public.tenants t order by t.id loop
    -- Same job key as the change-driven rescoring, so a pending one is replaced, never doubled.
    perform app_private.add_job('lead__score_tenant', pg_catalog.json_build_object('tenant_id', v_tenant_id),
      job_key => 'lead_score_tenant:' || v_tenant_id::text);
    -- A recount of every segment, keyed apart from the change-driven fold (segment_counts:<id>),
    -- so that neither replaces the other.
    if exists (select 1 from app_public.segments s where s.tenant_id = v_tenant_id) then
      perform app_private.add_job('segment__refresh_counts', pg_catalog.json_build_object('tenant_id', v_tenant_id, 'recount', true),
        job_key => 'segment_recount:' || v_tenant_id::text);
    end if;
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

comment on function app_private.enqueue_nightly_crm_refresh() is 'Enqueues, for every tenant, a rescore of its leads (lead__score_tenant) and, when it has segments, a recount of their lead counts from the leads (segment__refresh_counts {recount: true}: segments whose filter moves with time change overnight, and leads loaded with triggers off are counted), keyed so pending jobs are replaced rather than doubled. Run nightly by the maintenance__nightly_crm_refresh task (crontab). Returns the number of tenants.';
--! EndIncluded crm/enqueue_nightly_crm_refresh.sql

drop trigger if exists _150_lock_lead_counts on app_public.segments;
create trigger _150_lock_lead_counts before insert or update of filter or delete on app_public.segments
  for each row execute function app_private.tg_segments__lock_lead_counts();
drop trigger if exists _500_count_filter on app_public.segments;
create trigger _500_count_filter after insert or update of filter or delete on app_public.segments
  for each row execute function app_private.tg_segments__count_filter();

-- The segments saved before: their typed filters, then a recount by the worker.
-- A filter that is no longer valid (saved under older rules) is left out: no delta is recorded
-- for it, and the recounts keep its last count with a warning, as before.
do $$
declare
  v_segment record;
begin
  for v_segment in select s.tenant_id, s.id, s.filter from app_public.segments s order by s.tenant_id, s.id loop
    begin
      insert into app_private.segment_filters (tenant_id, segment_id, filter, created_from_at, created_to_at, incremental)
      select v_segment.tenant_id, v_segment.id, f.filter, f.created_from_at, f.created_to_at, f.incremental
        from app_private.segment_filter_of(v_segment.tenant_id, v_segment.filter) f
      on conflict (tenant_id, segment_id) do nothing;
    exception when invalid_parameter_value then
      raise warning 'Segment % has an invalid filter: %', v_segment.id, sqlerrm;
    end;
  end loop;
end;
$$;
select app_private.add_job('segment__refresh_counts', pg_catalog.json_build_object('tenant_id', t.tenant_id, 'recount', true),
         job_key => 'segment_recount:' || t.tenant_id::text)
  from (select distinct s.tenant_id from app_public.segments s) t;
