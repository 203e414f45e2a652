--! Previous: sha1:8f38c199a9faaaaf6b697a3151016967520ef705
--! Hash: sha1:4f07faa2efbc23e755ef958c8a1fe6af2125aad1
--! Message: Cheaper imports and status changes: the funnel sync is never JIT-compiled (its generic plan's guessed cost crossed jit_above_cost, so a server built with LLVM compiled it on every call, 18 ms per status change); an import chunk looks for rows already recorded in its own range of row numbers only (it read every row of the batch so far), and reads each row's given fields once

--! Included crm/sync_lead_funnel_marks.sql
create or replace function app_private.sync_lead_funnel_marks(lead_ids uuid[]) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  -- Always the generic plan, made once per session (see app_private.lead_funnel_reaches).
  set plan_cache_mode = force_generic_plan
  -- And never JIT-compiled. That generic plan does not know how many leads it gets, so its estimated
  -- cost grows with the tables (43,000 changed leads guessed for one); above jit_above_cost (100,000)
  -- a server built with LLVM (Debian, Ubuntu, most hosted ones) compiled it again on every call,
  -- about 18 ms, which made a status change 22 ms instead of 3 ms.
  set jit = off
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
  v_numbers int[];
  v_first int;
  v_last int;
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
  -- A row already recorded (a retried chunk) is not processed or counted again. The bounds of the
  -- chunk's row numbers keep the index scan to the chunk's range: on the batch alone it read every row
  -- recorded so far, once per chunk (33 ms per chunk after 20,000 rows, more with every chunk).
  select pg_catalog.array_agg((e.value ->> 'row_number')::numeric::int), pg_catalog.min((e.value ->> 'row_number')::numeric::int),
         pg_catalog.max((e.value ->> 'row_number')::numeric::int)
    into v_numbers, v_first, v_last
    from pg_catalog.jsonb_array_elements(rows) e;
  select coalesce(pg_catalog.array_agg(r.row_number), '{}') into v_done
  from app_public.import_batch_rows r
  where r.tenant_id = v_batch.tenant_id and r.batch_id = v_batch.id
    and r.row_number between v_first and v_last
    and r.row_number = any (v_numbers);

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
               and (e.value ->> 'row_number')::numeric::int <> all (v_done)
            -- Kept apart (OFFSET 0): pulled up, import_lead_given ran twice per row, once per use of i.lead.
            offset 0) i
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
      ), merged as materialized (
        -- Materialized: each field below would otherwise call import_merged_lead again.
        select k.lead_id, o as existing, app_private.import_merged_lead(o, k.n) as m
          from taken k
          join app_public.leads o on o.tenant_id = v_batch.tenant_id and o.id = k.lead_id
      ), changed as (
        -- The columns import_lead_row updates, when the merge changes the lead.
        update app_public.leads l set
          first_name = (x.m).first_name, last_name = (x.m).last_name, email = (x.m).email, address = (x.m).address,
          city = (x.m).city, region = (x.m).region, postal_code = (x.m).postal_code, timezone = (x.m).timezone,
          problem_description = (x.m).problem_description, job_type = (x.m).job_type, estimated_value = (x.m).estimated_value,
          event_date = (x.m).event_date, event_type = (x.m).event_type, service_line = (x.m).service_line,
          customer_segment = (x.m).customer_segment, tags = (x.m).tags, attributes = (x.m).attributes
          from merged x
         where v_batch.mode = 'merge'
           and l.tenant_id = v_batch.tenant_id and l.id = x.lead_id
           and x.m is distinct from x.existing
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
