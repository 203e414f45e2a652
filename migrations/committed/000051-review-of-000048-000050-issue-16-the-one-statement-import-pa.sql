--! Previous: sha1:cc1e9a4d11ccf635568aa91cee3c1fe4c2b98dc8
--! Hash: sha1:b752f93c41d87618e074f5da83d69bdec7c31704
--! Message: Review of 000048-000050 (issue 16): the one-statement import path only takes rows whose email no other row has, ranks phones in the order of the array; a lead__score job of new leads does not wait for a locked lead; only a change of stages rebuilds every tenant; one compaction at a time

-- From an adversarial review of 000048 to 000050 (issue 16), each finding with a test:
-- - the one-statement path of an import chunk created a second lead where importing row by row merges
--   or skips (a later copy of a phone carrying the email an email-only row looks for; a rejected first
--   copy), and ranked phones by row number while the other rows run in the order of the array;
-- - a lead__score job of new leads waited for one locked lead and held back the others;
-- - any statement on lead_statuses rebuilt every tenant's rollups, now only a change of stages;
-- - two compactions at once could wait for each other: one at a time.
--! Included crm/import_lead_rows.sql
create or replace function app_private.import_lead_rows(tenant_id uuid, batch_id uuid, rows jsonb) returns app_public.import_batches
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_batch app_public.import_batches;
  v_item jsonb;
  v_index int;
  v_row app_public.import_batch_rows;
  v_previous_source text := pg_catalog.current_setting('app.change_source', true);
  v_duplicate int;
  v_done int[];
  v_created int := 0;
  v_merged int := 0;
  v_skipped int := 0;
  v_rejected int := 0;
  v_fast int[] := '{}';
begin
  if rows is null or pg_catalog.jsonb_typeof(rows) <> 'array' then
    raise exception 'Invalid rows: send a JSON array of {row_number, raw, lead, error}' using errcode = '22023';
  end if;
  if pg_catalog.jsonb_array_length(rows) > 5000 then
    raise exception 'Invalid rows: at most 5000 rows per call (got %); send the file in chunks', pg_catalog.jsonb_array_length(rows)
      using errcode = '22023';
  end if;
  for v_item, v_index in select e.value, e.ordinality from pg_catalog.jsonb_array_elements(rows) with ordinality e loop
    if pg_catalog.jsonb_typeof(v_item) <> 'object'
       or pg_catalog.jsonb_typeof(v_item -> 'row_number') <> 'number'
       or (v_item ->> 'row_number')::numeric <> pg_catalog.trunc((v_item ->> 'row_number')::numeric)
       or (v_item ->> 'row_number')::numeric not between 1 and 2147483647 then
      raise exception 'Invalid rows: element % needs a row_number that is a positive whole number', v_index using errcode = '22023';
    end if;
  end loop;
  select (e.value ->> 'row_number')::numeric::int into v_duplicate
  from pg_catalog.jsonb_array_elements(rows) e
  group by 1 having pg_catalog.count(*) > 1
  limit 1;
  if v_duplicate is not null then
    raise exception 'Invalid rows: row_number % appears more than once', v_duplicate using errcode = '22023';
  end if;

  -- Imports into one tenant take turns (a transaction-level lock per tenant, always taken first).
  -- The per-row guards in import_lead_row (the phone's unique index, the lock per email) already make
  -- each lead be created once; but two imports that hold the locks of earlier rows while asking for
  -- later ones, with the same leads in a different order (duplicates within a file, different chunk
  -- sizes), would deadlock. Imports into different tenants still run in parallel.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('import:' || tenant_id::text, 0));

  -- One call at a time per batch, so the counters stay exact.
  select * into v_batch from app_public.import_batches b
    where b.id = batch_id and b.tenant_id = tenant_id
    for update;
  if not found then
    raise exception 'Import batch not found' using errcode = 'P0002';
  end if;
  if v_batch.status <> 'running' then
    raise exception 'Invalid batch_id: that import is already %', v_batch.status using errcode = '22023';
  end if;

  -- The duplicate lookups need statistics on leads to use the right index; on a database whose
  -- leads were never analyzed (a first import), gather them now, unless someone else is. (Not from
  -- pg_stats: it hides the statistics of a table under forced row-level security, so every chunk
  -- analyzed leads again, 200 ms on 20,000 leads and more with every lead.)
  if not exists (select 1 from pg_catalog.pg_stat_all_tables t
                  where t.relid = 'app_public.leads'::regclass
                    and coalesce(t.last_analyze, t.last_autoanalyze) is not null) then
    begin
      lock table app_public.leads in share update exclusive mode nowait;
      analyze app_public.leads;
    exception when lock_not_available then
      null;
    end;
  end if;

  -- History (audit log, status history) records these changes as coming from an import.
  perform pg_catalog.set_config('app.change_source', 'import', true);
  -- A row already recorded (a retried chunk) is not processed or counted again.
  select coalesce(pg_catalog.array_agg(r.row_number), '{}') into v_done
  from app_public.import_batch_rows r
  where r.tenant_id = v_batch.tenant_id and r.batch_id = v_batch.id
    and r.row_number = any (array(select (e.value ->> 'row_number')::numeric::int from pg_catalog.jsonb_array_elements(rows) e));

  -- The rows that can only create a lead are inserted together, in one statement, before the others:
  -- the first row of the chunk (in the order of the array, the order the other rows are imported in)
  -- with its phone, when no live lead has that phone; a row without a phone, when no live lead has its
  -- email; and in both cases only when no other row of the chunk has its email. Such a row creates a
  -- lead whatever the rows before it do (merges never change a phone, and give a lead only an email of
  -- their own row), and only rows after it can find that lead. So the outcome is the one of importing
  -- the rows one by one, in order. Any error (a value PostgreSQL refuses, a phone a concurrent writer
  -- just took) undoes this step, and every row takes the path below.
  begin
    with items as (
      select e.ordinality, (e.value ->> 'row_number')::numeric::int as row_number, coalesce(e.value -> 'raw', '{}'::jsonb) as raw,
             (select coalesce(pg_catalog.jsonb_object_agg(k.key, k.value), '{}'::jsonb)
                from pg_catalog.jsonb_each(e.value -> 'lead') k
               where k.value <> 'null'::jsonb
                 and not (pg_catalog.jsonb_typeof(k.value) = 'string' and pg_catalog.btrim(k.value #>> '{}') = '')) as lead
        from pg_catalog.jsonb_array_elements(rows) with ordinality e
       where nullif(pg_catalog.btrim(e.value ->> 'error'), '') is null
         and pg_catalog.jsonb_typeof(e.value -> 'lead') = 'object'
         and (e.value ->> 'row_number')::numeric::int <> all (v_done)
    ), typed as materialized (
      -- Materialized: each (l).field below would otherwise call jsonb_populate_record again.
      select i.ordinality, i.row_number, i.raw, pg_catalog.jsonb_populate_record(null::app_public.leads, i.lead) as l
        from items i
       where not exists (select 1 from pg_catalog.jsonb_object_keys(i.lead) k where k <> all (app_private.import_lead_fields()))
    ), keyed as (
      select t.ordinality, t.row_number, t.raw, t.l,
             pg_catalog.row_number() over (partition by (t.l).phone order by t.ordinality) as phone_rank,
             pg_catalog.count((t.l).email) over (partition by (t.l).email) as same_email
        from typed t
    ), fast as materialized (
      select k.ordinality, k.row_number, k.raw, k.l, pg_catalog.gen_random_uuid() as lead_id
        from keyed k
       where ((k.l).phone is null or k.phone_rank = 1)
         and ((k.l).email is null or k.same_email = 1)
         and not exists (select 1 from app_public.leads x
                          where (k.l).phone is not null
                            and x.tenant_id = v_batch.tenant_id and x.phone = (k.l).phone and x.deleted_at is null)
         and not exists (select 1 from app_public.leads x
                          where (k.l).phone is null and (k.l).email is not null
                            and x.tenant_id = v_batch.tenant_id and x.email = (k.l).email and x.deleted_at is null)
    ), created as (
      insert into app_public.leads (id, tenant_id, first_name, last_name, phone, email, address, city, region, postal_code,
        country, timezone, source, tags, status, problem_description, job_type, urgency, estimated_value, event_date,
        event_type, service_line, customer_segment, language, attributes)
      select f.lead_id, v_batch.tenant_id, (f.l).first_name, (f.l).last_name, (f.l).phone, (f.l).email, (f.l).address, (f.l).city,
        (f.l).region, (f.l).postal_code, coalesce((f.l).country, v_batch.default_country), (f.l).timezone,
        coalesce((f.l).source, 'import'), coalesce((f.l).tags, '{}'), coalesce((f.l).status, 'new'),
        (f.l).problem_description, (f.l).job_type, coalesce((f.l).urgency, 'normal'), (f.l).estimated_value,
        (f.l).event_date, (f.l).event_type, (f.l).service_line, (f.l).customer_segment, coalesce((f.l).language, 'en'),
        coalesce((f.l).attributes, '{}')
        from fast f
       order by f.ordinality
      returning 1
    ), recorded as (
      insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, lead_id)
      select v_batch.tenant_id, v_batch.id, f.row_number, f.raw, 'created', f.lead_id
        from fast f
       order by f.ordinality
      returning row_number
    )
    select coalesce(pg_catalog.array_agg(r.row_number), '{}') into v_fast from recorded r;
  exception
    when deadlock_detected or serialization_failure or lock_not_available then
      raise;
    when others then
      v_fast := '{}';
  end;
  v_created := pg_catalog.cardinality(v_fast);

  for v_item in
    select e.value from pg_catalog.jsonb_array_elements(rows) with ordinality e
     where (e.value ->> 'row_number')::numeric::int not in (select pg_catalog.unnest(v_done) union all select pg_catalog.unnest(v_fast))
     order by e.ordinality
  loop
    v_row := app_private.import_lead_row(v_batch, v_item);
    case v_row.result
      when 'created' then v_created := v_created + 1;
      when 'merged' then v_merged := v_merged + 1;
      when 'skipped' then v_skipped := v_skipped + 1;
      else v_rejected := v_rejected + 1;
    end case;
  end loop;
  perform pg_catalog.set_config('app.change_source', coalesce(v_previous_source, ''), true);

  update app_public.import_batches b set
    row_count = b.row_count + v_created + v_merged + v_skipped + v_rejected,
    created_count = b.created_count + v_created,
    merged_count = b.merged_count + v_merged,
    skipped_count = b.skipped_count + v_skipped,
    rejected_count = b.rejected_count + v_rejected
  where b.id = v_batch.id and b.tenant_id = v_batch.tenant_id
  returning * into v_batch;
  return v_batch;
end;
$$;

comment on function app_private.import_lead_rows(uuid, uuid, jsonb) is 'Imports up to 5000 normalised rows into a running batch of the given tenant (imports into the same tenant take turns, transaction by transaction): the rows that can only create a lead (the first of the chunk with a phone no live lead has, or without a phone an email no live lead has, and an email no other row of the chunk has) in one insert; every other row in its own sub-transaction, in order (a bad row is recorded as rejected, never stops the others), and returns the batch with its counters. Rows already recorded in the batch (a retried chunk) are ignored. Changes are recorded with change_source import. No permission check: for the command line and app_public.import_rows. Errors: 22023 malformed rows or a finished batch; P0002 unknown batch.';
--! EndIncluded crm/import_lead_rows.sql
--! Included crm/refresh_lead_scores.sql
create or replace function app_private.refresh_lead_scores(lead_ids uuid[]) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
  v_scored integer := 0;
begin
  for v_id in
    select distinct u.id from pg_catalog.unnest(refresh_lead_scores.lead_ids) as u(id) where u.id is not null order by 1
  loop
    -- As in refresh_tenant_lead_scores: a lead locked by someone else's open transaction is not waited
    -- for (it would hold back every other lead of the job); it gets its own lead__score job instead.
    perform 1 from app_public.leads l where l.id = v_id for no key update skip locked;
    if found then
      perform app_private.refresh_lead_score(v_id);
      v_scored := v_scored + 1;
    elsif exists (select 1 from app_public.leads l where l.id = v_id) then
      perform app_private.add_job('lead__score', pg_catalog.json_build_object('lead_id', v_id), job_key => 'lead_score:' || v_id::text);
    end if;
  end loop;
  return v_scored;
end;
$$;

comment on function app_private.refresh_lead_scores(uuid[]) is 'Rescores the given leads with refresh_lead_score, in id order; a lead locked by another transaction is not waited for but gets its own lead__score job, and a lead that no longer exists is skipped. Returns how many were scored. The lead__score job of new leads ({lead_ids}) calls it; owner only.';
--! EndIncluded crm/refresh_lead_scores.sql
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
  -- One compaction at a time (two would wait for each other's rows, tenant by tenant).
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended('lead_rollups_compaction', 0)) then
    return 0;
  end if;
  for v_tenant in
    select c.tenant_id from app_private.lead_day_counts c where not c.is_total
    union
    select s.tenant_id from app_private.lead_stage_reaches s where not s.is_total
    order by 1
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

comment on function app_private.compact_lead_rollups() is 'Folds the delta rows of the report rollups (lead_day_counts, lead_stage_reaches) into one total row per key, tenant by tenant, and drops totals that reached zero; returns the number of totals written (0 when another compaction is running). Exact while writers run: a delta is moved into its total in one statement, and concurrent deltas stay for the next run. Scheduled every minute (crontab: maintenance__compact_lead_rollups); reports are exact without it, only slower when deltas pile up.';
--! EndIncluded crm/compact_lead_rollups.sql
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

comment on function app_private.tg_lead_statuses__rebuild_lead_rollups() is 'Trigger (_900_rebuild_lead_rollups: after each statement inserting or deleting lead_statuses or updating their stage_order, which only migrations do): the funnel rollup depends on the stage of each status, so every tenant''s rollups are rebuilt.';
--! EndIncluded crm/tg_lead_statuses__rebuild_lead_rollups.sql

drop trigger if exists _900_rebuild_lead_rollups on app_public.lead_statuses;
create trigger _900_rebuild_lead_rollups after insert or delete or update of stage_order on app_public.lead_statuses
  for each statement execute function app_private.tg_lead_statuses__rebuild_lead_rollups();
