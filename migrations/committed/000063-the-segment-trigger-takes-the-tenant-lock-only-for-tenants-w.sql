--! Previous: sha1:0901afb8ef820b910f08d7c43de0297648155775
--! Hash: sha1:8f38c199a9faaaaf6b697a3151016967520ef705
--! Message: The segment trigger takes the tenant lock only for tenants with segments again (taken for every tenant, it made owner changes wait for rollup rebuilds and deadlocked with the deletion of a tenant in CI); an update in flight when a first segment is saved waits for the nightly recount

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
  -- Only tenants with segments take the lock below: taking it for every tenant made every owner
  -- change of routing wait for a rollup rebuild, and deadlock with the deletion of a tenant (which
  -- holds the lock and deletes its leads). The price: an update in flight when a tenant saves its
  -- first segment is not counted until the nightly recount.
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
