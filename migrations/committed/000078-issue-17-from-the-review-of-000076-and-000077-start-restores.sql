--! Previous: sha1:402dc9835e7159fbc7c0f25afa5be0407bf1a7dc
--! Hash: sha1:e3a75be4effa9dd49f3e778b5f30553754ef4a02
--! Message: Issue 17: from the review of 000076 and 000077: START restores only the consent its own opt-out ended, for a live lead that still has the number; a reply held like marketing needs the marketing consent, when written and at the claim; an import records consent only for the row's own phone, once; consent evidence cannot be deleted; indexes for the restore and email revocations; Louisiana's other legal holidays

-- Issue 17: what the review of 000076 and 000077 found.
-- START restores only the consent its own opt-out ended, for a live lead that still has the number (a
-- consent a member revoked stays revoked; a new owner of a number inherits nothing). A reply held like
-- marketing (past the customer's day) needs the marketing consent too. An import records consent only
-- for the row's own phone, once. Consent evidence cannot be deleted, even by the owner role. Indexes for
-- the restore and for email revocations. Louisiana's other legal holidays.

create index if not exists consent_records_latest_by_phone on app_public.consent_records (tenant_id, phone, purpose, recorded_at desc)
  where channel = 'sms';
create index if not exists consent_records_current_by_email on app_public.consent_records (tenant_id, email, purpose)
  where channel = 'email' and revoked_at is null;

drop function if exists app_private.import_consent_problem(jsonb);
--! Included crm/import_consent_problem.sql
create or replace function app_private.import_consent_problem(consent jsonb, phone text) returns text
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_key text;
  v_given timestamptz;
begin
  -- The same rules as consent_records and record_consent, said per row before anything is written, so
  -- that one bad consent never leaves a chunk half imported.
  if import_consent_problem.consent is null or import_consent_problem.consent = 'null'::jsonb then
    return null;
  end if;
  if pg_catalog.jsonb_typeof(import_consent_problem.consent) <> 'object' then
    return 'consent must be an object {disclosure, given_at, page_url, ip, user_agent}';
  end if;
  if nullif(pg_catalog.btrim(import_consent_problem.phone), '') is null then
    return 'consent to texts needs the phone number of the row it came with';
  end if;
  select k into v_key from pg_catalog.jsonb_object_keys(import_consent_problem.consent) k
   where k not in ('disclosure', 'given_at', 'page_url', 'ip', 'user_agent') limit 1;
  if v_key is not null then
    return pg_catalog.format('consent has an unknown key %s (known: disclosure, given_at, page_url, ip, user_agent)', v_key);
  end if;
  if pg_catalog.jsonb_typeof(import_consent_problem.consent -> 'disclosure') is distinct from 'string'
     or pg_catalog.length(pg_catalog.btrim(import_consent_problem.consent ->> 'disclosure')) not between 20 and 4000 then
    return 'consent needs its disclosure: the words the person agreed to, 20 to 4000 characters';
  end if;
  begin
    v_given := (import_consent_problem.consent ->> 'given_at')::timestamptz;
  exception when others then
    v_given := null;
  end;
  if v_given is null then
    return 'consent needs given_at: when the person agreed, as a date and time (e.g. 2026-11-30T15:04:05Z)';
  end if;
  if v_given > pg_catalog.clock_timestamp() + interval '5 minutes' then
    return 'consent cannot be given in the future';
  end if;
  if import_consent_problem.consent ? 'page_url'
     and not coalesce(import_consent_problem.consent ->> 'page_url' ~* '^https?://[^[:space:]]+\Z'
                      and pg_catalog.length(import_consent_problem.consent ->> 'page_url') <= 2048, false) then
    return 'consent page_url must be an http or https address of at most 2048 characters';
  end if;
  if import_consent_problem.consent ? 'ip' then
    begin
      perform (import_consent_problem.consent ->> 'ip')::inet;
    exception when others then
      return 'consent ip must be an IP address';
    end;
  end if;
  if pg_catalog.length(import_consent_problem.consent ->> 'user_agent') > 1000 then
    return 'consent user_agent must be at most 1000 characters';
  end if;
  return null;
end;
$$;

comment on function app_private.import_consent_problem(jsonb, text) is $$What is wrong with the consent of an import row ({disclosure, given_at, page_url, ip, user_agent}: the row’s own phone, the disclosure of 20 to 4000 characters and the time given are required), in words, or null when it is fine or absent. import_lead_rows refuses a call with such a row (22023), before writing anything.$$;
--! EndIncluded crm/import_consent_problem.sql
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
  v_consent_problem text;
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
  -- A consent given with a row must carry its evidence (see app_private.import_consent_problem).
  select (e.value ->> 'row_number')::numeric::int, app_private.import_consent_problem(e.value -> 'consent', e.value -> 'lead' ->> 'phone')
    into v_duplicate, v_consent_problem
    from pg_catalog.jsonb_array_elements(rows) e
   where e.value ? 'consent' and app_private.import_consent_problem(e.value -> 'consent', e.value -> 'lead' ->> 'phone') is not null
   limit 1;
  if v_consent_problem is not null then
    raise exception 'Invalid rows: row %: %', v_duplicate, v_consent_problem using errcode = '22023';
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
  -- The consent a row carries, for the number of the lead it created or merged into (method import).
  -- Only chunks that carry one read their rows again.
  if exists (select 1 from pg_catalog.jsonb_array_elements(rows) e where pg_catalog.jsonb_typeof(e.value -> 'consent') = 'object') then
    insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, page_url, ip, user_agent,
      given_at, recorded_by_user_id, evidence_hash)
    select v_batch.tenant_id, l.id, 'sms', l.phone, 'marketing', 'import', pg_catalog.btrim(c.consent ->> 'disclosure'),
           c.consent ->> 'page_url', (c.consent ->> 'ip')::inet, c.consent ->> 'user_agent',
           (c.consent ->> 'given_at')::timestamptz, v_batch.created_by_user_id, pg_catalog.repeat('0', 64)
      from (select (e.value ->> 'row_number')::numeric::int as row_number, e.value -> 'consent' as consent,
                   e.value -> 'lead' ->> 'phone' as phone
              from pg_catalog.jsonb_array_elements(rows) e
             where pg_catalog.jsonb_typeof(e.value -> 'consent') = 'object'
               -- A retried chunk records nothing twice.
               and (e.value ->> 'row_number')::numeric::int <> all (v_done)) c
      join app_public.import_batch_rows r
        on r.tenant_id = v_batch.tenant_id and r.batch_id = v_batch.id and r.row_number = c.row_number
           and r.result in ('created', 'merged')
      -- Only for the number the row itself gives.
      join app_public.leads l on l.tenant_id = r.tenant_id and l.id = r.lead_id and l.phone = c.phone;
  end if;

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

comment on function app_private.import_lead_rows(uuid, uuid, jsonb) is 'Imports up to 5000 normalised rows into a running batch of the given tenant (imports into the same tenant take turns, transaction by transaction): the rows that can only create a lead (the first of the chunk with a phone no live lead has, or without a phone an email no live lead has, and an email no other row of the chunk has) in one insert; then the rows that can only merge into (or be skipped for) the live lead with their phone (no other row left in the chunk has that phone, and no row left without a phone has its email or the lead''s email) in one update per lead; every other row in its own sub-transaction, in order (a bad row is recorded as rejected, never stops the others), and returns the batch with its counters. Rows already recorded in the batch (a retried chunk) are ignored. Changes are recorded with change_source import; the leads merged into are rescored by lead__score {lead_ids} jobs, one per 500. No permission check: for the command line and app_public.import_rows. Errors: 22023 malformed rows or a finished batch; P0002 unknown batch. A row may carry consent {disclosure, given_at, page_url, ip, user_agent}: recorded once (a retried chunk adds nothing) as a marketing consent to texts (method import) for the row’s own phone, on the lead it created or merged into; a consent without its evidence refuses the call (22023).';
--! EndIncluded crm/import_lead_rows.sql
--! Included messaging/record_opt_in.sql
create or replace function app_private.record_opt_in(tenant_id uuid, customer_phone text, business_phone text, keyword text,
    message_id uuid, source text default 'sms_keyword') returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_settings app_public.business_settings;
  v_listed_at timestamptz;
begin
  if record_opt_in.source is null or record_opt_in.source not in ('sms_keyword', 'provider') then
    raise exception 'An opt-in comes from the customer''s text (sms_keyword) or from the provider (provider), got %',
      coalesce(pg_catalog.quote_literal(record_opt_in.source), 'nothing') using errcode = '22023';
  end if;
  -- Only what the customer's own words put there: an opt-out they texted, or one the provider reported.
  -- A block a person of the business set (manual, api, import, lead_status) stays.
  -- Nor while a live lead with that number has the status dnc (a person set it).
  delete from app_public.dnc_list d
  where d.tenant_id = record_opt_in.tenant_id and d.phone = record_opt_in.customer_phone and d.source in ('sms_opt_out', 'provider')
    and not exists (select 1 from app_public.leads l
                     where l.tenant_id = record_opt_in.tenant_id and l.phone = record_opt_in.customer_phone
                       and l.status = 'dnc' and l.deleted_at is null)
  returning d.added_at into v_listed_at;
  if not found then
    return false;
  end if;
  insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
  values (record_opt_in.tenant_id, record_opt_in.customer_phone, 'opt_in', record_opt_in.source, record_opt_in.keyword,
    record_opt_in.message_id);
  -- Subscribing again brings back what the opt-out ended, no more: for each purpose whose latest consent
  -- record this opt-out revoked (not one a member revoked, not an older one), while the lead it was
  -- given for is live and still has the number (a new owner of the number inherits nothing), a new record
  -- given by this text, pointing at the one it restores.
  insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, message_id, given_at,
    recorded_by_user_id, evidence_hash)
  select c.tenant_id, c.lead_id, 'sms', c.phone, c.purpose, 'keyword',
    pg_catalog.left(pg_catalog.format('Texted %s to %s to subscribe again to the texts consented to in consent record %s: %s',
      coalesce(record_opt_in.keyword, 'START'), record_opt_in.business_phone, c.id, coalesce(c.disclosure, c.purpose || ' texts')), 4000),
    record_opt_in.message_id, pg_catalog.clock_timestamp(), null, pg_catalog.repeat('0', 64)
    from (select distinct on (k.purpose) k.*
            from app_public.consent_records k
           where k.tenant_id = record_opt_in.tenant_id and k.phone = record_opt_in.customer_phone and k.channel = 'sms'
           order by k.purpose, k.recorded_at desc, k.id desc) c
   where c.revoked_by in ('sms_keyword', 'provider') and c.revoked_at >= v_listed_at
     and record_opt_in.message_id is not null
     and exists (select 1 from app_public.leads l
                  where l.tenant_id = c.tenant_id and l.id = c.lead_id and l.phone = c.phone and l.deleted_at is null);
  if record_opt_in.source = 'sms_keyword' then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = record_opt_in.tenant_id;
    perform app_private.queue_message(record_opt_in.tenant_id, record_opt_in.customer_phone, record_opt_in.business_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.opt_in_confirmation_message,
        '[BUSINESS]: you are subscribed again. Reply HELP for help, STOP to opt out.'), record_opt_in.tenant_id),
      'opt_in_confirmation', 'system', null, null, 'opt_in_confirmation:' || record_opt_in.message_id);
  end if;
  return true;
end;
$$;

comment on function app_private.record_opt_in(uuid, text, text, text, uuid, text) is $$Records that a number that opted out by text (or whose opt-out the provider reported) opted in again: START, UNSTOP or YES read in its text (source sms_keyword), or Twilio's OptOutType START (source provider). Removes only dnc_list entries of source sms_opt_out or provider (a block a person set stays, and so does the entry while a live lead with the number has the status dnc), records the consent event, restores the consents to texts that this opt-out ended (for each purpose whose latest record it revoked, while that record’s lead is live and still has the number: a new consent record, method keyword, given by this text; never one a member revoked), and queues our confirmation when we read the keyword (the provider confirms its own). Returns false, and changes nothing, when the number had no such entry. Errors: 22023 an unknown source.$$;
--! EndIncluded messaging/record_opt_in.sql
--! Included messaging/tg_messages__guard_outbound.sql
create or replace function app_private.tg_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_contact_at timestamptz;
  v_sent bigint;
begin
  if NEW.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(NEW.to_phone, NEW.tenant_id) then
    raise exception 'Not sent: % is on the do-not-contact list of this business (it opted out or was blocked), so nothing may be texted to it', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- Marketing waits while the customer's last word on consent is an unclear opt-out.
  if NEW.purpose in ('marketing', 'nurture') and app_private.sms_marketing_held(NEW.tenant_id, NEW.to_phone) then
    raise exception 'Not sent: the last text from % may have asked us to stop (it was unclear); no marketing goes to it until they answer the clarifying text with STOP or YES', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- Marketing needs the recipient's prior express written consent (TCPA), recorded and not revoked.
  if NEW.purpose in ('marketing', 'nurture') and not app_private.has_sms_marketing_consent(NEW.tenant_id, NEW.to_phone) then
    raise exception 'Not sent: no current consent to marketing texts from % is recorded; record the consent the person gave (recordConsent: the disclosure they agreed to, when and how) before texting them marketing', NEW.to_phone
      using errcode = 'SB002';
  end if;
  -- A notification is for the business's own people: the phone of a member's profile, never a lead.
  -- A member types their profile phone themselves: a number that is a live lead's, or a customer's in a
  -- conversation, is a customer's whatever a profile says.
  if NEW.purpose = 'notification'
     and (NEW.lead_id is not null
          or not exists (select 1 from app_public.user_profiles p
                          where p.tenant_id = NEW.tenant_id and p.phone_number = NEW.to_phone)
          or exists (select 1 from app_public.leads l
                      where l.tenant_id = NEW.tenant_id and l.phone = NEW.to_phone and l.deleted_at is null)
          or exists (select 1 from app_public.conversations c
                      where c.tenant_id = NEW.tenant_id and c.customer_phone = NEW.to_phone and c.status = 'active')) then
    raise exception 'Not sent: a notification text goes only to a member of this business (the phone of their profile); a text to a lead or customer is marketing, held to legal sending hours and caps'
      using errcode = '22023';
  end if;
  -- A reply belongs to a conversation the customer started, with that customer.
  if NEW.purpose in ('conversation', 'auto_response') then
    v_contact_at := app_private.sms_customer_contact_at(NEW.tenant_id, NEW.conversation_id, NEW.to_phone);
    if v_contact_at is null then
      raise exception 'Not sent: a % text answers a conversation the customer started, to that customer; this one has none (a text that starts a conversation is marketing)',
        pg_catalog.replace(NEW.purpose, '_', ' ') using errcode = '22023';
    end if;
    if NEW.scheduled_for <= v_contact_at + app_private.sms_reply_window() then
      return NEW;
    end if;
    -- Past the reply window it is no longer an answer: held to hours and caps below, counted toward the
    -- cap like marketing, and, like marketing, sent only under a current marketing consent.
    NEW.held_as_marketing := true;
    if not app_private.has_sms_marketing_consent(NEW.tenant_id, NEW.to_phone) then
      raise exception 'Not sent: % last called or texted more than a day ago, so this reply is held like marketing, and no current consent to marketing texts from them is recorded; answer within a day of their last call or text, or record their consent (recordConsent)', NEW.to_phone
        using errcode = 'SB002';
    end if;
  elsif NEW.purpose not in ('marketing', 'nurture') then
    return NEW;
  end if;
  -- One recipient at a time, so that concurrent queuing cannot pass a daily cap together.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-cap:' || NEW.tenant_id || ':' || NEW.to_phone, 0));
  NEW.scheduled_for := app_private.sms_marketing_send_time(NEW.tenant_id, NEW.lead_id, NEW.to_phone, NEW.scheduled_for);
  -- The first marketing text to a number, and every sms_identify_every-th one, says who sends it and how
  -- to stop (counted under the same lock, so concurrent writers cannot both skip it).
  if NEW.purpose in ('marketing', 'nurture') then
    select pg_catalog.count(*) into v_sent from app_public.messages m
     where m.tenant_id = NEW.tenant_id and m.to_phone = NEW.to_phone and m.direction = 'outbound'
       and m.purpose in ('marketing', 'nurture') and m.status <> 'canceled';
    if v_sent % coalesce((select s.sms_identify_every from app_public.business_settings s where s.tenant_id = NEW.tenant_id), 10) = 0 then
      NEW.body := app_private.sms_identified_body(NEW.tenant_id, NEW.body);
    end if;
  end if;
  return NEW;
end;
$$;

comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require; marketing and nurture texts also get SB001 while the number is held after an unclear opt-out (app_private.sms_marketing_held), and SB002 without a current marketing consent for the number (app_public.consent_records), as do late replies. No bypass of sending hours (22023 otherwise): a notification goes only to the profile phone of a member of the business, never to a number that is a live lead’s or a customer’s in an open conversation; a conversation reply or missed-call auto-response only to the customer of a conversation they started (app_private.sms_customer_contact_at). Marketing and nurture texts, and replies sent more than app_private.sms_reply_window() (24 hours) after the customer’s last call or text, are moved (scheduled_for) to sms_marketing_send_time: legal sending hours of the recipient and the per-state daily cap. Replies within that window go at once. The first marketing or nurture text to a number, and every business_settings.sms_identify_every-th one (default 10), names the business and says how to stop (app_private.sms_identified_body). Concurrent queuing to one recipient is serialized by an advisory lock.$$;
--! EndIncluded messaging/tg_messages__guard_outbound.sql
--! Included messaging/claim_outbound_message.sql
create or replace function app_private.claim_outbound_message(message_id uuid) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
  v_window app_public.sms_window;
  v_late boolean;
begin
  select m.* into v_message from app_public.messages m
  where m.id = claim_outbound_message.message_id and m.direction = 'outbound' for update;
  if not found or v_message.status <> 'queued' then
    return null;
  end if;
  if v_message.scheduled_for > app_hidden.clock_now(v_message.tenant_id) + interval '1 second' then
    perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
    return null;
  end if;
  -- A nurture text goes only while its lead may be nurtured: not after its enrollment stopped, not after
  -- an opt-out on either channel (a row a dead worker left in sending may come back here after that).
  if v_message.nurture_enrollment_id is not null
     and (exists (select 1 from app_public.lead_sequence_enrollments e where e.id = v_message.nurture_enrollment_id and e.status = 'stopped')
          or app_private.nurture_lead_opted_out(v_message.tenant_id, v_message.lead_id) is not null) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: nurture stopped for this lead (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Consent is checked again at the last moment: the customer may have opted out since queuing.
  if v_message.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(v_message.to_phone, v_message.tenant_id) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the number is on the do-not-contact list (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Marketing held since an unclear opt-out of the customer does not go.
  if v_message.purpose in ('marketing', 'nurture') and app_private.sms_marketing_held(v_message.tenant_id, v_message.to_phone) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient''s last text may have asked us to stop (unclear; checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- A reply the customer's last call or text no longer covers (more than app_private.sms_reply_window()
  -- ago, or no longer their conversation) is held like marketing from here on.
  v_late := v_message.held_as_marketing
    or (v_message.purpose in ('conversation', 'auto_response')
        and coalesce(app_private.sms_customer_contact_at(v_message.tenant_id, v_message.conversation_id, v_message.to_phone)
                       + app_private.sms_reply_window() < app_hidden.clock_now(v_message.tenant_id), true));
  -- Marketing, and a reply held like it, go only under a current consent: it may have been revoked since
  -- queuing (a member's revokeConsent racing the text being queued).
  if (v_message.purpose in ('marketing', 'nurture') or v_late)
     and not app_private.has_sms_marketing_consent(v_message.tenant_id, v_message.to_phone) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: no current consent to marketing texts (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Held to the recipient's hours: marketing, nurture, and a late reply.
  if v_message.purpose in ('marketing', 'nurture') or v_late then
    v_window := app_hidden.recipient_send_window(v_message.tenant_id, v_message.lead_id, v_message.to_phone, app_hidden.clock_now(v_message.tenant_id));
    if not v_window.allowed then
      update app_public.messages m set scheduled_for = coalesce(v_window.next_allowed_at, app_hidden.clock_now(v_message.tenant_id) + interval '1 hour') where m.id = v_message.id
      returning m.* into v_message;
      perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
      return null;
    end if;
  end if;
  update app_public.messages m
  set status = 'sending', sending_at = now(), attempts = m.attempts + 1
  where m.id = v_message.id
  returning m.* into v_message;
  return v_message;
end;
$$;

comment on function app_private.claim_outbound_message(uuid) is $$Step 1 of sending (sms__send), committed before the provider is called: a queued message due by the clock of its tenant becomes sending and is returned. Nothing (null) when it is not queued any more, not due yet (its job is moved), its number has joined the do-not-contact list since, or (marketing and nurture) is held after an unclear opt-out or has no current marketing consent any more (so is a reply past its customer’s reply window), or it is a nurture text whose enrollment stopped or whose lead opted out on either channel (canceled), or a marketing or nurture text, or a reply past the reply window of its customer (app_private.sms_reply_window), is outside the sending hours by now (moved). A message left in sending by a crash is not sent again blindly: sweep_outbox hands it to reconciliation, which asks the provider first.$$;
--! EndIncluded messaging/claim_outbound_message.sql
--! Included messaging/tg_consent_records__evidence.sql
create or replace function app_private.tg_consent_records__evidence() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Evidence goes only with its tenant (the cascade of a deleted tenant runs inside its foreign key's
  -- trigger) and loses its lead only with the lead (likewise).
  if TG_OP = 'DELETE' then
    if pg_catalog.pg_trigger_depth() < 2 then
      raise exception 'A consent record is evidence: it cannot be deleted (revoke it instead); it goes only with its business'
        using errcode = '55000';
    end if;
    return OLD;
  end if;
  if TG_OP = 'UPDATE' then
    -- Evidence is never rewritten: a record takes its revocation, once, and loses its lead when the lead
    -- is deleted (the evidence stays).
    if pg_catalog.to_jsonb(NEW) - 'revoked_at' - 'revoked_by' - 'lead_id' is distinct from pg_catalog.to_jsonb(OLD) - 'revoked_at' - 'revoked_by' - 'lead_id'
       or (NEW.lead_id is distinct from OLD.lead_id and (NEW.lead_id is not null or pg_catalog.pg_trigger_depth() < 2))
       or (OLD.revoked_at is not null and (NEW.revoked_at, NEW.revoked_by) is distinct from (OLD.revoked_at, OLD.revoked_by)) then
      raise exception 'A consent record is evidence: nothing in it changes, it can only be revoked, once'
        using errcode = '55000';
    end if;
    return NEW;
  end if;
  if NEW.given_at > pg_catalog.clock_timestamp() + interval '5 minutes' then
    raise exception 'Consent cannot be given in the future (given at %)', NEW.given_at using errcode = '22023';
  end if;
  NEW.email := pg_catalog.lower(pg_catalog.btrim(NEW.email));
  NEW.evidence_hash := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.jsonb_build_object(
    'tenant_id', NEW.tenant_id, 'channel', NEW.channel, 'phone', NEW.phone, 'email', NEW.email,
    'purpose', NEW.purpose, 'method', NEW.method, 'disclosure', NEW.disclosure, 'page_url', NEW.page_url,
    'ip', pg_catalog.host(NEW.ip), 'user_agent', NEW.user_agent, 'message_id', NEW.message_id,
    'given_at', pg_catalog.to_char(NEW.given_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text, 'UTF8')), 'hex');
  return NEW;
end;
$$;

comment on function app_private.tg_consent_records__evidence() is $$Trigger (_100_evidence, before insert, update or delete on consent_records): refuses a delete (55000) except by the cascade of its tenant’s deletion; on insert, refuses a time given in the future (22023, five minutes of clock skew allowed), lower-cases the email address and writes evidence_hash, the SHA-256 of the record’s evidence as a JSON object (keys tenant_id, channel, phone, email, purpose, method, disclosure, page_url, ip (the address, without a mask), user_agent, message_id, given_at in UTC with microseconds, as jsonb writes it); on update, allows only the one revocation of a current record, and the loss of its lead by the cascade of the lead’s deletion (55000 otherwise).$$;
--! EndIncluded messaging/tg_consent_records__evidence.sql

drop trigger if exists _100_evidence on app_public.consent_records;
create trigger _100_evidence before insert or update or delete on app_public.consent_records
  for each row execute function app_private.tg_consent_records__evidence();

comment on table app_public.consent_records is $$@behavior -insert -update -delete
Evidence of consent, per number or address and channel (append-only: only a revocation is ever added to a record, and no record is deleted but with its business): who consented to what (marketing or transactional texts or emails), how (method), the disclosure they were shown, where (page URL, IP address, user agent), when, and a SHA-256 hash of all of it taken when recorded. A marketing or nurture text, and a reply held like marketing, goes only to a number with a current marketing consent (not revoked): the TCPA requires prior express written consent for marketing texts. Record one with recordConsent; an opt-out (a texted STOP, the provider’s report) or revokeConsent ends it. Kept when the lead is deleted.$$;

insert into app_public.sms_holidays (jurisdiction, name, month, day, isodow, nth, easter_offset, weekend_rule, source) values
  ('US-LA', 'Confederate Memorial Day', 6, 3, null, null, null, 'none', 'La. R.S. 1:55'),
  ('US-LA', 'Huey P. Long Day', 8, 30, null, null, null, 'none', 'La. R.S. 1:55'),
  ('US-LA', 'All Saints’ Day', 11, 1, null, null, null, 'none', 'La. R.S. 1:55')
on conflict (jurisdiction, name) do update
  set month = excluded.month, day = excluded.day, isodow = excluded.isodow, nth = excluded.nth, easter_offset = excluded.easter_offset,
      on_date = excluded.on_date, weekend_rule = excluded.weekend_rule, source = excluded.source;
