--! Previous: sha1:891e637174604dc23d1aca907a049d128491bbd1
--! Hash: sha1:33b833ddd2535f725492c7ce1a6c9e5ea48c6b33
--! Message: From an adversarial review of 000056: the merge step of an import checks the leads it took again once their locks are granted (a phone or an email changed meanwhile sends the row to the row path), locks them in the order of the rows, and checks the rows left with hashed lists (it compared every row left with every other)

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
  v_chunk app_private.import_chunk_row[] := '{}';
  v_taken int[] := '{}';
  v_taken_leads uuid[] := '{}';
  v_left app_private.import_chunk_row[];
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
    -- The rows of the chunk that read as leads, once (both steps below use them): not a row already
    -- recorded, without an error of the file, with only known fields, their values of the right types.
    select coalesce(pg_catalog.array_agg(row(i.ordinality, i.row_number, i.raw,
             pg_catalog.jsonb_populate_record(null::app_public.leads, i.lead))::app_private.import_chunk_row order by i.ordinality), '{}')
      into v_chunk
      from (select e.ordinality, (e.value ->> 'row_number')::numeric::int as row_number, coalesce(e.value -> 'raw', '{}'::jsonb) as raw,
                   app_private.import_lead_given(e.value -> 'lead') as lead
              from pg_catalog.jsonb_array_elements(rows) with ordinality e
             where nullif(pg_catalog.btrim(e.value ->> 'error'), '') is null
               and pg_catalog.jsonb_typeof(e.value -> 'lead') = 'object'
               and (e.value ->> 'row_number')::numeric::int <> all (v_done)) i
     where not exists (select 1 from pg_catalog.jsonb_object_keys(i.lead) k where k <> all (app_private.import_lead_fields()));

    with typed as (
      select c.ordinality, c.row_number, c.raw, c.lead as l from pg_catalog.unnest(v_chunk) c
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
      v_chunk := '{}';
      v_fast := '{}';
  end;
  v_created := pg_catalog.cardinality(v_fast);

  -- Then the rows that can only merge into (or, in skip mode, be skipped for) the live lead with their
  -- phone are recorded together: a row whose phone no other row left in the chunk has, when no row
  -- left without a phone has its email or the email of that lead. Nothing else in the chunk can then
  -- find or change that lead: the rows left find a lead by their own phone, or without a phone by
  -- email; and a lead created by the one-statement insert came from an earlier row. So the row sees
  -- the lead as it would one by one, and one update per lead writes the same fields and history.
  -- Any error undoes this step, and its rows take the path below.
  if pg_catalog.cardinality(v_chunk) > 0 then
    begin
      -- The rows left in the chunk, once (uncorrelated NOT IN lists below are hashed, so the checks
      -- grow with the chunk, not with its square).
      v_left := array(select c from pg_catalog.unnest(v_chunk) c
                       where c.row_number not in (select pg_catalog.unnest(v_fast)) order by c.ordinality);
      -- First the leads of the rows whose phone no other row left has, locked in the order of the rows
      -- (as the row path would, one at a time); a lead deleted meanwhile drops out.
      select coalesce(pg_catalog.array_agg(t.row_number order by t.ordinality), '{}'),
             coalesce(pg_catalog.array_agg(t.lead_id order by t.ordinality), '{}')
        into v_taken, v_taken_leads
        from (select r.ordinality, r.row_number, l.id as lead_id
                from pg_catalog.unnest(v_left) r
                join app_public.leads l on l.tenant_id = v_batch.tenant_id and l.phone = (r.lead).phone and l.deleted_at is null
               where (r.lead).phone is not null
                 and (r.lead).phone not in (select (o.lead).phone from pg_catalog.unnest(v_left) o
                                             where (o.lead).phone is not null group by 1 having pg_catalog.count(*) > 1)
               order by r.ordinality
                 for update of l) t;
      -- Then, in a new snapshot, with those leads locked (so they cannot change any more), keep the rows
      -- whose lead still has their phone and is live, when no row left without a phone has the
      -- email of the lead or of the row. The others take the path below.
      select coalesce(pg_catalog.array_agg(t.row_number order by r.ordinality), '{}'),
             coalesce(pg_catalog.array_agg(t.lead_id order by r.ordinality), '{}')
        into v_taken, v_taken_leads
        from rows from (pg_catalog.unnest(v_taken), pg_catalog.unnest(v_taken_leads)) as t(row_number, lead_id)
        join pg_catalog.unnest(v_left) r on r.row_number = t.row_number
        join app_public.leads l on l.tenant_id = v_batch.tenant_id and l.id = t.lead_id
       where l.deleted_at is null and l.phone = (r.lead).phone
         and (l.email is null
              or l.email not in (select (o.lead).email from pg_catalog.unnest(v_left) o
                                  where (o.lead).phone is null and (o.lead).email is not null))
         and ((r.lead).email is null
              or (r.lead).email not in (select (o.lead).email from pg_catalog.unnest(v_left) o
                                         where (o.lead).phone is null and (o.lead).email is not null));

      with taken as (
        select c.ordinality, c.row_number, c.raw, c.lead as n, t.lead_id
          from pg_catalog.unnest(v_chunk) c
          join rows from (pg_catalog.unnest(v_taken), pg_catalog.unnest(v_taken_leads)) as t(row_number, lead_id) on t.row_number = c.row_number
      ), merged as (
        -- What import_lead_row writes: the lead keeps what it has, gets what it is missing, and the new
        -- tags of the row after its own; its own attributes win.
        select k.lead_id,
               coalesce(o.first_name, (k.n).first_name) as first_name, coalesce(o.last_name, (k.n).last_name) as last_name,
               coalesce(o.email, (k.n).email) as email, coalesce(o.address, (k.n).address) as address,
               coalesce(o.city, (k.n).city) as city, coalesce(o.region, (k.n).region) as region,
               coalesce(o.postal_code, (k.n).postal_code) as postal_code, coalesce(o.timezone, (k.n).timezone) as timezone,
               coalesce(o.problem_description, (k.n).problem_description) as problem_description,
               coalesce(o.job_type, (k.n).job_type) as job_type, coalesce(o.estimated_value, (k.n).estimated_value) as estimated_value,
               coalesce(o.event_date, (k.n).event_date) as event_date, coalesce(o.event_type, (k.n).event_type) as event_type,
               coalesce(o.service_line, (k.n).service_line) as service_line,
               coalesce(o.customer_segment, (k.n).customer_segment) as customer_segment,
               o.tags || array(select u.t from pg_catalog.unnest(coalesce((k.n).tags, '{}')) with ordinality u(t, i)
                                where u.t <> all (o.tags)
                                group by u.t order by pg_catalog.min(u.i)) as tags,
               coalesce((k.n).attributes, '{}') || o.attributes as attributes
          from taken k
          join app_public.leads o on o.tenant_id = v_batch.tenant_id and o.id = k.lead_id
      ), changed as (
        update app_public.leads l set
          first_name = m.first_name, last_name = m.last_name, email = m.email, address = m.address, city = m.city,
          region = m.region, postal_code = m.postal_code, timezone = m.timezone, problem_description = m.problem_description,
          job_type = m.job_type, estimated_value = m.estimated_value, event_date = m.event_date, event_type = m.event_type,
          service_line = m.service_line, customer_segment = m.customer_segment, tags = m.tags, attributes = m.attributes
          from merged m
         where v_batch.mode = 'merge'
           and l.tenant_id = v_batch.tenant_id and l.id = m.lead_id
           and (m.first_name, m.last_name, m.email, m.address, m.city, m.region, m.postal_code, m.timezone,
                m.problem_description, m.job_type, m.estimated_value, m.event_date, m.event_type, m.service_line,
                m.customer_segment, m.tags, m.attributes)
               is distinct from
               (l.first_name, l.last_name, l.email, l.address, l.city, l.region, l.postal_code, l.timezone,
                l.problem_description, l.job_type, l.estimated_value, l.event_date, l.event_type, l.service_line,
                l.customer_segment, l.tags, l.attributes)
        returning 1
      )
      insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, lead_id, reason)
      select v_batch.tenant_id, v_batch.id, k.row_number, k.raw,
             case v_batch.mode when 'merge' then 'merged' else 'skipped' end, k.lead_id,
             case v_batch.mode when 'merge' then 'Merged into the lead with this phone' else 'A lead with this phone already exists' end
        from taken k
       order by k.ordinality;
    exception
      when deadlock_detected or serialization_failure or lock_not_available then
        raise;
      when others then
        v_taken := '{}';
        v_taken_leads := '{}';
    end;
    if v_batch.mode = 'merge' then
      v_merged := pg_catalog.cardinality(v_taken);
      v_merged_into := v_taken_leads;
    else
      v_skipped := pg_catalog.cardinality(v_taken);
    end if;
  end if;

  for v_item in
    select e.value from pg_catalog.jsonb_array_elements(rows) with ordinality e
     where (e.value ->> 'row_number')::numeric::int not in
           (select pg_catalog.unnest(v_done) union all select pg_catalog.unnest(v_fast) union all select pg_catalog.unnest(v_taken))
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
    perform app_private.enqueue_lead_scores(v_merged_into);
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

comment on function app_private.import_lead_rows(uuid, uuid, jsonb) is 'Imports up to 5000 normalised rows into a running batch of the given tenant (imports into the same tenant take turns, transaction by transaction): the rows that can only create a lead (the first of the chunk with a phone no live lead has, or without a phone an email no live lead has, and an email no other row of the chunk has) in one insert; then the rows that can only merge into (or be skipped for) the live lead with their phone (no other row left in the chunk has that phone, and no row left without a phone has its email or the lead''s email) in one update per lead; every other row in its own sub-transaction, in order (a bad row is recorded as rejected, never stops the others), and returns the batch with its counters. Rows already recorded in the batch (a retried chunk) are ignored. Changes are recorded with change_source import; the leads merged into are rescored by lead__score {lead_ids} jobs, one per 500. No permission check: for the command line and app_public.import_rows. Errors: 22023 malformed rows or a finished batch; P0002 unknown batch.';
--! EndIncluded crm/import_lead_rows.sql
