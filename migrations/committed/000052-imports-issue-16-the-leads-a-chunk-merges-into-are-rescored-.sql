--! Previous: sha1:b752f93c41d87618e074f5da83d69bdec7c31704
--! Hash: sha1:a13077f40acfdd2841ce3cc1d2d84dd4082ee6ac
--! Message: Imports (issue 16): the leads a chunk merges into are rescored by one job per 500; the rows of a call are checked by one query, which refuses an element without a row_number with 22023

-- Imports (issue 16): the leads a chunk merges into are rescored by one lead__score {lead_ids} job per
-- 500 instead of a keyed job per merge (their update trigger leaves it to the import while
-- app.change_source is import); the rows of a call are checked by one query instead of a loop, which
-- also refuses an element without a row_number with 22023 (it failed later with 23502).
--! Included crm/tg_leads__enqueue_lead_score.sql
create or replace function app_private.tg_leads__enqueue_lead_score() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_LEVEL = 'STATEMENT' then
    -- New leads: one lead__score job per 500 of them, enqueued together (one job per lead cost more
    -- than the rest of an imported lead).
    perform app_private.add_jobs('lead__score', array(
      select pg_catalog.json_build_object('lead_ids', pg_catalog.array_agg(n.id order by n.id))
        from (select n.id, (pg_catalog.row_number() over (order by n.id) - 1) / 500 as chunk from new_leads n) n
       group by n.chunk
       order by n.chunk));
    return null;
  end if;
  -- An import enqueues one job for all the leads a chunk merged into (app_private.import_lead_rows).
  if pg_catalog.current_setting('app.change_source', true) = 'import' then
    return null;
  end if;
  perform app_private.add_job('lead__score', pg_catalog.json_build_object('lead_id', NEW.id),
    job_key => 'lead_score:' || NEW.id::text);
  return null;
end;
$$;

comment on function app_private.tg_leads__enqueue_lead_score() is 'Trigger on leads that has their scores computed by the worker, never inline. _900_enqueue_lead_score_on_insert (after each insert statement): one lead__score {lead_ids} job per 500 new leads. _900_enqueue_lead_score_on_update (each row, only when a scoring input changed, never on lead_score itself): lead__score {lead_id} with job key lead_score:<lead_id>, so several changes before it runs make one job; not during an import (app.change_source import), which enqueues one lead__score {lead_ids} job per 500 leads its chunk merged into.';
--! EndIncluded crm/tg_leads__enqueue_lead_score.sql
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
  v_merged_into uuid[] := '{}';
begin
  if rows is null or pg_catalog.jsonb_typeof(rows) <> 'array' then
    raise exception 'Invalid rows: send a JSON array of {row_number, raw, lead, error}' using errcode = '22023';
  end if;
  if pg_catalog.jsonb_array_length(rows) > 5000 then
    raise exception 'Invalid rows: at most 5000 rows per call (got %); send the file in chunks', pg_catalog.jsonb_array_length(rows)
      using errcode = '22023';
  end if;
  -- The first element that is not an object with a whole row_number from 1 up (one query, not a loop).
  select e.ordinality into v_index
    from pg_catalog.jsonb_array_elements(rows) with ordinality e
   where not coalesce(
           case when pg_catalog.jsonb_typeof(e.value) = 'object' and pg_catalog.jsonb_typeof(e.value -> 'row_number') = 'number'
                then (e.value ->> 'row_number')::numeric = pg_catalog.trunc((e.value ->> 'row_number')::numeric)
                     and (e.value ->> 'row_number')::numeric between 1 and 2147483647
           end, false)
   order by e.ordinality
   limit 1;
  if v_index is not null then
    raise exception 'Invalid rows: element % needs a row_number that is a positive whole number', v_index using errcode = '22023';
  end if;
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
      when 'merged' then
        v_merged := v_merged + 1;
        v_merged_into := v_merged_into || v_row.lead_id;
      when 'skipped' then v_skipped := v_skipped + 1;
      else v_rejected := v_rejected + 1;
    end case;
  end loop;
  -- The leads merged into are rescored by one lead__score job per 500 (their update triggers leave it
  -- to the import: one job per lead cost more than the rest of a merge).
  if pg_catalog.cardinality(v_merged_into) > 0 then
    perform app_private.add_jobs('lead__score', array(
      select pg_catalog.json_build_object('lead_ids', pg_catalog.array_agg(m.id order by m.id))
        from (select d.id, (pg_catalog.row_number() over (order by d.id) - 1) / 500 as chunk
                from (select distinct u.id from pg_catalog.unnest(v_merged_into) u(id)) d) m
       group by m.chunk
       order by m.chunk));
  end if;
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

comment on function app_private.import_lead_rows(uuid, uuid, jsonb) is 'Imports up to 5000 normalised rows into a running batch of the given tenant (imports into the same tenant take turns, transaction by transaction): the rows that can only create a lead (the first of the chunk with a phone no live lead has, or without a phone an email no live lead has, and an email no other row of the chunk has) in one insert; every other row in its own sub-transaction, in order (a bad row is recorded as rejected, never stops the others), and returns the batch with its counters. Rows already recorded in the batch (a retried chunk) are ignored. Changes are recorded with change_source import; the leads merged into are rescored by lead__score {lead_ids} jobs, one per 500. No permission check: for the command line and app_public.import_rows. Errors: 22023 malformed rows or a finished batch; P0002 unknown batch.';
--! EndIncluded crm/import_lead_rows.sql
