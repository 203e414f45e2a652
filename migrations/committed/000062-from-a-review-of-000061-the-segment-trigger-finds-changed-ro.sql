--! Previous: sha1:78ebce6fe16d0d1d4fc98e4a6080bc48f1bce520
--! Hash: sha1:0901afb8ef820b910f08d7c43de0297648155775
--! Message: From a review of 000061: the segment trigger finds changed rows and counts deltas without joining new rows to old ones (its cached one-row plan made updates of many leads quadratic), takes the tenant lock before looking for segments (a first segment missed updates in flight), a fold recounts a segment whose count would go below zero instead of failing for all, and a change of time zone skips a segment being saved instead of deadlocking with it

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
    -- Only changes a filter can see matter (not e.g. last_contact_at or ai_analysis): the rows whose
    -- fields a filter reads differ between the new and the old rows, either way (a lead moved to
    -- another tenant counts for both). A set difference, not a join of new rows to old ones: PL/pgSQL
    -- keeps a generic plan made for one row, and a join would then pair every row with every other
    -- (a 9,000-row update took minutes).
    select pg_catalog.array_agg(distinct x.tenant_id) into v_tenants
    from (
      (select n.id, n.tenant_id, n.status, n.tags, n.lead_score, n.source, n.created_at, n.city, n.region, n.owner_user_id,
              n.full_name, n.phone::text, n.email::text, n.deleted_at from new_leads n
       except all
       select o.id, o.tenant_id, o.status, o.tags, o.lead_score, o.source, o.created_at, o.city, o.region, o.owner_user_id,
              o.full_name, o.phone::text, o.email::text, o.deleted_at from old_leads o)
      union all
      (select o.id, o.tenant_id, o.status, o.tags, o.lead_score, o.source, o.created_at, o.city, o.region, o.owner_user_id,
              o.full_name, o.phone::text, o.email::text, o.deleted_at from old_leads o
       except all
       select n.id, n.tenant_id, n.status, n.tags, n.lead_score, n.source, n.created_at, n.city, n.region, n.owner_user_id,
              n.full_name, n.phone::text, n.email::text, n.deleted_at from new_leads n)
    ) x;
  end if;
  if v_tenants is null then
    return null;
  end if;
  -- Shared with every other writer, exclusive for a segment being saved or deleted
  -- (app_private.tg_segments__lock_lead_counts), and taken before looking for the tenant's segments:
  -- a first segment saved meanwhile waits for this change and counts it (a change made while the
  -- tenant had no segment must not be missed by the count of its first one).
  perform app_private.share_lead_rollups(v_tenants);
  select pg_catalog.array_agg(t order by t) into v_tenants
    from pg_catalog.unnest(v_tenants) t
   where exists (select 1 from app_public.segments s where s.tenant_id = t);
  if v_tenants is null then
    return null;
  end if;

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
    -- New rows +1, old rows -1, no join between them (see above): a lead whose fields a filter
    -- reads did not change matches or not both times, and its two rows cancel out.
    insert into app_private.segment_count_changes (tenant_id, segment_id, leads)
    select sf.tenant_id, sf.segment_id, pg_catalog.sum(c.change)::integer
      from (select row(n.*)::app_public.leads as lead, 1 as change from new_leads n
            union all
            select row(o.*)::app_public.leads, -1 from old_leads o) c
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
  v_wrong uuid[];
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
  -- A count that would go below zero is wrong (a lead write this design missed): that segment is
  -- recounted below, with a warning, and the others are folded as usual.
  with moved as (
    delete from app_private.segment_count_changes c
     where c.tenant_id = fold_segment_counts.tenant_id and c.segment_id = any (v_ids)
    returning c.segment_id, c.leads
  ), sums as (
    select m.segment_id, pg_catalog.sum(m.leads)::integer as leads from moved m group by m.segment_id
  ), folded as (
    update app_public.segments s
       set lead_count = s.lead_count + sums.leads, lead_count_refreshed_at = pg_catalog.now()
      from sums
     where s.tenant_id = fold_segment_counts.tenant_id and s.id = sums.segment_id and s.lead_count + sums.leads >= 0
    returning s.id
  )
  select pg_catalog.count(*)::integer,
         pg_catalog.array_agg(sums.segment_id) filter (where sums.segment_id not in (select f.id from folded f))
    into v_refreshed, v_wrong
    from sums;

  for v_segment in
    select s.id, s.name, s.filter from app_public.segments s
     where s.tenant_id = fold_segment_counts.tenant_id and s.id = any (v_wrong)
     order by s.id
  loop
    raise warning 'Segment % (%) had a count below zero after its changes: recounted', v_segment.id, v_segment.name;
    begin
      -- One statement: the count and the deltas it absorbs share a snapshot.
      with absorbed as (
        delete from app_private.segment_count_changes c
         where c.tenant_id = fold_segment_counts.tenant_id and c.segment_id = v_segment.id
      )
      update app_public.segments s
         set lead_count = app_hidden.count_matching_leads(fold_segment_counts.tenant_id, v_segment.filter),
             lead_count_refreshed_at = pg_catalog.now()
       where s.tenant_id = fold_segment_counts.tenant_id and s.id = v_segment.id;
    exception when invalid_parameter_value then
      raise warning 'Segment % (%) has an invalid filter: %', v_segment.id, v_segment.name, sqlerrm;
    end;
  end loop;

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

comment on function app_private.fold_segment_counts(uuid) is 'What the debounced segment__refresh_counts job runs after lead changes: adds the deltas recorded by the leads trigger (app_private.segment_count_changes) to each segment''s lead_count and deletes them, reading no lead; recounts the segments whose filter moves with time (created_within_days) from the leads of their window. Returns how many segments had deltas. Exact under concurrent writers: a delta is added once, by the fold that deletes it. A segment whose count would go below zero (a change missed) is recounted from its leads, with a warning, instead of stopping the fold of the others.';
--! EndIncluded crm/fold_segment_counts.sql
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
       -- A segment being saved right now is skipped: its save waits for this transaction (the lock
       -- above) and then types and counts its filter in the new time zone. Waiting for it instead
       -- would deadlock (it holds its row and waits for the lock this transaction holds).
       for no key update of s skip locked
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
