--! Previous: sha1:f525d5daef92c54cfdb58595cb558ec392985f8f
--! Hash: sha1:cc1e9a4d11ccf635568aa91cee3c1fe4c2b98dc8
--! Message: Imports that keep up (issue 16): the rows of a chunk that can only create a lead are inserted in one statement; a new lead's first status history and scoring jobs are written once per insert statement; an import no longer analyzes leads on every chunk

-- Imports that keep up (issue 16): an import chunk inserts the rows that can only create a lead in one
-- statement, and what a new lead costs its insert statement is paid once per statement: its first
-- status history (and so the funnel rollup) and its scoring jobs (one lead__score job per 500 leads,
-- enqueued together by app_private.add_jobs).
--! Included platform/add_jobs.sql
create or replace function app_private.add_jobs(identifier text, payloads json[]) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  select pg_catalog.count(*)::integer into v_count
    from graphile_worker.add_jobs(array(
      select row(add_jobs.identifier, coalesce(p.payload, '{}'::json), null, null, null, null, null, null)::graphile_worker.job_spec
        from pg_catalog.unnest(add_jobs.payloads) with ordinality as p(payload, n)
       order by p.n), false);
  return v_count;
end;
$$;

comment on function app_private.add_jobs(text, json[]) is 'app_private.add_job for many jobs of one task at once, without job keys: one graphile-worker job per payload, all enqueued by one call in the current transaction (so they only run if the change commits). Cheaper per job than add_job when a statement enqueues hundreds. Returns how many jobs were added.';
--! EndIncluded platform/add_jobs.sql
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
    -- status when its creation was recorded (the audit entry *created*, written by a row trigger at
    -- the clock time of the row), so a timeline keeps it before what the other row triggers did.
    insert into app_public.lead_status_history (tenant_id, lead_id, from_status, to_status, trigger_type, changed_by_user_id, changed_at)
    select n.tenant_id, n.id, null, n.status,
           app_private.change_source(v_user_id, app_public.current_api_key_id()), v_user_id,
           coalesce((select pg_catalog.min(a.changed_at) from app_public.lead_audit_log a
                      where a.tenant_id = n.tenant_id and a.lead_id = n.id and a.field_name = '*created*'),
                    pg_catalog.clock_timestamp())
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

comment on function app_private.tg_leads__status_history() is 'Trigger on leads: records the status a lead enters in lead_status_history, with the change source as trigger_type and the acting user. _510_status_history_on_insert (after each insert statement) writes the first status of every new lead in one statement, at the time its creation was recorded in lead_audit_log; _510_status_history (after update of status, each row) writes a change when the status really changed, at the clock time.';
--! EndIncluded crm/tg_leads__status_history.sql
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
  perform app_private.add_job('lead__score', pg_catalog.json_build_object('lead_id', NEW.id),
    job_key => 'lead_score:' || NEW.id::text);
  return null;
end;
$$;

comment on function app_private.tg_leads__enqueue_lead_score() is 'Trigger on leads that has their scores computed by the worker, never inline. _900_enqueue_lead_score_on_insert (after each insert statement): one lead__score {lead_ids} job per 500 new leads. _900_enqueue_lead_score_on_update (each row, only when a scoring input changed, never on lead_score itself): lead__score {lead_id} with job key lead_score:<lead_id>, so several changes before it runs make one job.';
--! EndIncluded crm/tg_leads__enqueue_lead_score.sql
--! Included crm/import_lead_row.sql
create or replace function app_private.import_lead_row(batch app_public.import_batches, item jsonb) returns app_public.import_batch_rows
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row_number int := (item ->> 'row_number')::numeric::int;
  v_raw jsonb := coalesce(item -> 'raw', '{}'::jsonb);
  v_lead jsonb := item -> 'lead';
  v_error text := nullif(pg_catalog.btrim(item ->> 'error'), '');
  v_unknown text;
  v_new app_public.leads;
  v_old app_public.leads;
  v_merged app_public.leads;
  v_lead_id uuid;
  v_result text;
  v_reason text;
  v_match text;
  v_attempt int := 0;
  v_out app_public.import_batch_rows;
  v_state text;
  v_constraint text;
begin
  if v_error is null and (v_lead is null or pg_catalog.jsonb_typeof(v_lead) <> 'object') then
    v_error := 'The row has no lead data';
  end if;

  <<attempts>>
  while v_error is null loop
    v_attempt := v_attempt + 1;
    begin
      -- Blank strings and JSON nulls mean "not given".
      select coalesce(pg_catalog.jsonb_object_agg(e.key, e.value), '{}'::jsonb) into v_lead
      from pg_catalog.jsonb_each(item -> 'lead') e
      where e.value <> 'null'::jsonb
        and not (pg_catalog.jsonb_typeof(e.value) = 'string' and pg_catalog.btrim(e.value #>> '{}') = '');
      select pg_catalog.string_agg(k, ', ' order by k) into v_unknown
      from pg_catalog.jsonb_object_keys(v_lead) k
      where k <> all (app_private.import_lead_fields());
      if v_unknown is not null then
        raise exception 'Unknown lead field(s): %', v_unknown using errcode = '22023';
      end if;
      -- Types, casts and the E.164 domain are checked here; the table's constraints on insert.
      v_new := pg_catalog.jsonb_populate_record(null::app_public.leads, v_lead);
      v_match := case when v_new.phone is not null then 'phone' else 'email' end;

      -- Concurrent imports: a lock per email (whenever the row has one), so an email-only row and a row
      -- with a phone and the same email don't both create a lead. Phones rely on the unique index.
      if v_new.email is not null then
        perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(
          'import:' || batch.tenant_id::text || ':' || pg_catalog.lower(v_new.email::text), 0));
      end if;

      -- The live lead this row duplicates, if any: same phone; without a phone, same email (the oldest).
      if v_new.phone is not null then
        select * into v_old from app_public.leads l
          where l.tenant_id = batch.tenant_id and l.phone = v_new.phone and l.deleted_at is null
          for update;
      elsif v_new.email is not null then
        select * into v_old from app_public.leads l
          where l.tenant_id = batch.tenant_id and l.email = v_new.email and l.deleted_at is null
          -- Leads created in one transaction share created_at: then the one an earlier import row created.
          order by l.created_at,
                   (select pg_catalog.min(r.id) from app_public.import_batch_rows r
                     where r.tenant_id = l.tenant_id and r.lead_id = l.id and r.result = 'created') nulls first,
                   l.id
          limit 1
          for update;
      end if;

      v_lead_id := null;
      if v_old.id is null then
        insert into app_public.leads (tenant_id, first_name, last_name, phone, email, address, city, region, postal_code,
          country, timezone, source, tags, status, problem_description, job_type, urgency, estimated_value, event_date,
          event_type, service_line, customer_segment, language, attributes)
        values (batch.tenant_id, v_new.first_name, v_new.last_name, v_new.phone, v_new.email, v_new.address, v_new.city,
          v_new.region, v_new.postal_code, coalesce(v_new.country, batch.default_country), v_new.timezone,
          coalesce(v_new.source, 'import'), coalesce(v_new.tags, '{}'), coalesce(v_new.status, 'new'),
          v_new.problem_description, v_new.job_type, coalesce(v_new.urgency, 'normal'), v_new.estimated_value,
          v_new.event_date, v_new.event_type, v_new.service_line, v_new.customer_segment, coalesce(v_new.language, 'en'),
          coalesce(v_new.attributes, '{}'))
        on conflict (tenant_id, phone) where deleted_at is null and phone is not null do nothing
        returning id into v_lead_id;
        if v_lead_id is null then
          -- Another import inserted this phone and committed while we waited: look again.
          raise exception 'A lead with phone % was created at the same time', v_new.phone using errcode = '23505';
        end if;
        v_result := 'created';
      elsif batch.mode = 'skip' then
        v_lead_id := v_old.id;
        v_result := 'skipped';
        v_reason := pg_catalog.format('A lead with this %s already exists', v_match);
      else
        v_lead_id := v_old.id;
        v_result := 'merged';
        v_reason := pg_catalog.format('Merged into the lead with this %s', v_match);
        -- Fill what the lead is missing, add the row's new tags; the lead's own attributes win.
        v_merged := v_old;
        v_merged.first_name := coalesce(v_old.first_name, v_new.first_name);
        v_merged.last_name := coalesce(v_old.last_name, v_new.last_name);
        v_merged.email := coalesce(v_old.email, v_new.email);
        v_merged.address := coalesce(v_old.address, v_new.address);
        v_merged.city := coalesce(v_old.city, v_new.city);
        v_merged.region := coalesce(v_old.region, v_new.region);
        v_merged.postal_code := coalesce(v_old.postal_code, v_new.postal_code);
        v_merged.timezone := coalesce(v_old.timezone, v_new.timezone);
        v_merged.problem_description := coalesce(v_old.problem_description, v_new.problem_description);
        v_merged.job_type := coalesce(v_old.job_type, v_new.job_type);
        v_merged.estimated_value := coalesce(v_old.estimated_value, v_new.estimated_value);
        v_merged.event_date := coalesce(v_old.event_date, v_new.event_date);
        v_merged.event_type := coalesce(v_old.event_type, v_new.event_type);
        v_merged.service_line := coalesce(v_old.service_line, v_new.service_line);
        v_merged.customer_segment := coalesce(v_old.customer_segment, v_new.customer_segment);
        v_merged.tags := v_old.tags || array(
          select u.t from pg_catalog.unnest(coalesce(v_new.tags, '{}')) with ordinality u(t, i)
          where u.t <> all (v_old.tags)
          group by u.t order by pg_catalog.min(u.i));
        v_merged.attributes := coalesce(v_new.attributes, '{}') || v_old.attributes;
        if v_merged is distinct from v_old then
          update app_public.leads l set
            first_name = v_merged.first_name, last_name = v_merged.last_name, email = v_merged.email,
            address = v_merged.address, city = v_merged.city, region = v_merged.region, postal_code = v_merged.postal_code,
            timezone = v_merged.timezone, problem_description = v_merged.problem_description, job_type = v_merged.job_type,
            estimated_value = v_merged.estimated_value, event_date = v_merged.event_date, event_type = v_merged.event_type,
            service_line = v_merged.service_line, customer_segment = v_merged.customer_segment, tags = v_merged.tags,
            attributes = v_merged.attributes
          where l.tenant_id = batch.tenant_id and l.id = v_old.id;
        end if;
      end if;

      insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, lead_id, reason)
        values (batch.tenant_id, batch.id, v_row_number, v_raw, v_result, v_lead_id, v_reason)
        returning * into v_out;
      return v_out;
    exception
      -- Conflicts with a concurrent transaction are not the row's fault: the caller retries the chunk.
      when deadlock_detected or serialization_failure or lock_not_available then
        raise;
      -- A concurrent import created the same phone between our look-up and our insert: look again.
      when unique_violation then
        get stacked diagnostics v_error = message_text;
        v_old := null;
        if v_attempt < 3 then
          v_error := null;
        end if;
      when others then
        get stacked diagnostics v_state = returned_sqlstate, v_error = message_text, v_constraint = constraint_name;
        -- Constraint names read as sentences (leads_email_must_look_like_an_email -> "Leads email must look like an email.").
        if v_state like '23%' and coalesce(v_constraint, '') <> '' then
          v_error := pg_catalog.upper(pg_catalog.left(v_constraint, 1))
            || pg_catalog.replace(pg_catalog.substr(v_constraint, 2), '_', ' ') || '.';
        end if;
    end;
  end loop;

  insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, reason)
    values (batch.tenant_id, batch.id, v_row_number, v_raw, 'rejected', v_error)
    returning * into v_out;
  return v_out;
end;
$$;

comment on function app_private.import_lead_row(app_public.import_batches, jsonb) is 'Imports one normalised row ({row_number, raw, lead, error}) into the batch''s tenant in its own sub-transaction and records the outcome: created; merged or skipped when a live lead has the same phone (or, for a row without a phone, the same email: the oldest such lead, and among leads created together the one an earlier import row created); or rejected with the reason (the row''s error, a bad value, a constraint). Internal to import_lead_rows.';
--! EndIncluded crm/import_lead_row.sql
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

  -- The rows that can only create a lead are inserted together, in one statement: the first row of
  -- the chunk with its phone, when no live lead has that phone; a row without a phone when no live lead
  -- has its email. No other row of the chunk may have its email (but the later rows with its phone, which
  -- merge into it by phone). The only rows that can find what they create come after them, and every
  -- other row is imported after them, in order: the outcome is the one of importing the rows one by one. Any error (a value PostgreSQL refuses,
  -- a phone a concurrent writer just took) undoes this step, and every row takes the path below.
  begin
    with items as (
      select (e.value ->> 'row_number')::numeric::int as row_number, coalesce(e.value -> 'raw', '{}'::jsonb) as raw,
             (select coalesce(pg_catalog.jsonb_object_agg(k.key, k.value), '{}'::jsonb)
                from pg_catalog.jsonb_each(e.value -> 'lead') k
               where k.value <> 'null'::jsonb
                 and not (pg_catalog.jsonb_typeof(k.value) = 'string' and pg_catalog.btrim(k.value #>> '{}') = '')) as lead
        from pg_catalog.jsonb_array_elements(rows) e
       where nullif(pg_catalog.btrim(e.value ->> 'error'), '') is null
         and pg_catalog.jsonb_typeof(e.value -> 'lead') = 'object'
         and (e.value ->> 'row_number')::numeric::int <> all (v_done)
    ), typed as materialized (
      -- Materialized: each (l).field below would otherwise call jsonb_populate_record again.
      select i.row_number, i.raw, pg_catalog.jsonb_populate_record(null::app_public.leads, i.lead) as l
        from items i
       where not exists (select 1 from pg_catalog.jsonb_object_keys(i.lead) k where k <> all (app_private.import_lead_fields()))
    ), ranked as (
      select t.row_number, t.raw, t.l,
             pg_catalog.row_number() over (partition by (t.l).phone order by t.row_number) as phone_rank
        from typed t
    ), keyed as (
      -- A later row with the phone of an earlier one merges into its lead by phone, whatever its email.
      select r.row_number, r.raw, r.l, r.phone_rank,
             pg_catalog.count((r.l).email) filter (where (r.l).phone is null or r.phone_rank = 1)
               over (partition by (r.l).email) as same_email
        from ranked r
    ), fast as materialized (
      select k.row_number, k.raw, k.l, pg_catalog.gen_random_uuid() as lead_id
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
       order by f.row_number
      returning 1
    ), recorded as (
      insert into app_public.import_batch_rows (tenant_id, batch_id, row_number, raw, result, lead_id)
      select v_batch.tenant_id, v_batch.id, f.row_number, f.raw, 'created', f.lead_id
        from fast f
       order by f.row_number
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

comment on function app_private.import_lead_rows(uuid, uuid, jsonb) is 'Imports up to 5000 normalised rows into a running batch of the given tenant (imports into the same tenant take turns, transaction by transaction): the rows that can only create a lead (the first of the chunk with a phone no live lead has, or without a phone an email no live lead has, and an email no other creating row of the chunk has) in one insert; every other row in its own sub-transaction, in order (a bad row is recorded as rejected, never stops the others), and returns the batch with its counters. Rows already recorded in the batch (a retried chunk) are ignored. Changes are recorded with change_source import. No permission check: for the command line and app_public.import_rows. Errors: 22023 malformed rows or a finished batch; P0002 unknown batch.';
--! EndIncluded crm/import_lead_rows.sql

drop trigger if exists _510_status_history on app_public.leads;
drop trigger if exists _510_status_history_on_insert on app_public.leads;
create trigger _510_status_history_on_insert after insert on app_public.leads
  referencing new table as new_leads for each statement execute function app_private.tg_leads__status_history();
create trigger _510_status_history after update of status on app_public.leads
  for each row execute function app_private.tg_leads__status_history();

drop trigger if exists _900_enqueue_lead_score_on_insert on app_public.leads;
create trigger _900_enqueue_lead_score_on_insert after insert on app_public.leads
  referencing new table as new_leads for each statement execute function app_private.tg_leads__enqueue_lead_score();
