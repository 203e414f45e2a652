--! Previous: sha1:33b833ddd2535f725492c7ce1a6c9e5ea48c6b33
--! Hash: sha1:9c6dd1b728c1a605dfb87db17d24538e9fb594f2
--! Message: One definition of what an import merge makes of a lead (app_private.import_merged_lead), used by import_lead_row and by the merge step of import_lead_rows, which wrote the rule twice

--! Included crm/import_merged_lead.sql
create or replace function app_private.import_merged_lead(existing app_public.leads, given app_public.leads) returns app_public.leads
  -- PL/pgSQL: its plan is kept for the session (called once per merged row).
  language plpgsql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_merged app_public.leads := existing;
begin
  -- Fill what the lead is missing, add the new tags of the row after its own; its own attributes win.
  v_merged.first_name := coalesce(existing.first_name, given.first_name);
  v_merged.last_name := coalesce(existing.last_name, given.last_name);
  v_merged.email := coalesce(existing.email, given.email);
  v_merged.address := coalesce(existing.address, given.address);
  v_merged.city := coalesce(existing.city, given.city);
  v_merged.region := coalesce(existing.region, given.region);
  v_merged.postal_code := coalesce(existing.postal_code, given.postal_code);
  v_merged.timezone := coalesce(existing.timezone, given.timezone);
  v_merged.problem_description := coalesce(existing.problem_description, given.problem_description);
  v_merged.job_type := coalesce(existing.job_type, given.job_type);
  v_merged.estimated_value := coalesce(existing.estimated_value, given.estimated_value);
  v_merged.event_date := coalesce(existing.event_date, given.event_date);
  v_merged.event_type := coalesce(existing.event_type, given.event_type);
  v_merged.service_line := coalesce(existing.service_line, given.service_line);
  v_merged.customer_segment := coalesce(existing.customer_segment, given.customer_segment);
  v_merged.tags := existing.tags || array(
    select u.t from pg_catalog.unnest(coalesce(given.tags, '{}')) with ordinality u(t, i)
    where u.t <> all (existing.tags)
    group by u.t order by pg_catalog.min(u.i));
  v_merged.attributes := coalesce(given.attributes, '{}') || existing.attributes;
  return v_merged;
end;
$$;

comment on function app_private.import_merged_lead(app_public.leads, app_public.leads) is 'What an import row in merge mode makes of the live lead it matches: the lead keeps every value it has and gets the row''s values for what it is missing (names, email, address, city, region, postal code, time zone, problem description, job type, estimated value, event date and type, service line, customer segment), the row''s new tags after its own (in the row''s order, once each), and the row''s attributes under its own (its own win). The one definition for both paths of an import (import_lead_row and the merge step of import_lead_rows).';
--! EndIncluded crm/import_merged_lead.sql
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
      v_lead := app_private.import_lead_given(item -> 'lead');
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
        v_merged := app_private.import_merged_lead(v_old, v_new);
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
