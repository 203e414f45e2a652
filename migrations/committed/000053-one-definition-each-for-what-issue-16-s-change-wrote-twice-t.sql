--! Previous: sha1:a13077f40acfdd2841ce3cc1d2d84dd4082ee6ac
--! Hash: sha1:33f93595e3b06cc27d0a0c5301d6ad3be06df6de
--! Message: One definition each for what issue 16's change wrote twice: the rollups lock key, the chunked lead__score enqueue, the cleaning of an import row, the skip-locked rescoring loop; lead_funnel_marks keyed by (tenant_id, lead_id)

-- From a last read of issue 16's change: one definition each for what was written twice.
-- - app_private.lead_rollups_lock_key: the advisory lock key of a tenant's rollups (share, rebuild
--   and compaction spelled it out each).
-- - app_private.enqueue_lead_scores: one lead__score job per 500 leads (the insert trigger and the
--   import each built the chunks).
-- - app_private.import_lead_given: what an import row really gives (both import paths cleaned it).
-- - refresh_tenant_lead_scores calls refresh_lead_scores (the skip-locked loop was in both).
-- - lead_funnel_marks has (tenant_id, lead_id) as its key, as every unique key on tenant data must.
--! Included crm/lead_rollups_lock_key.sql
create or replace function app_private.lead_rollups_lock_key(tenant_id uuid) returns bigint
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.hashtextextended('lead_rollups:' || lead_rollups_lock_key.tenant_id::text, 0);
$$;

comment on function app_private.lead_rollups_lock_key(uuid) is 'The advisory lock key of a tenant''s report rollups: writers take it shared (app_private.share_lead_rollups, app_private.compact_lead_rollups), app_private.rebuild_lead_rollups exclusive. One definition, so that they always lock the same key.';
--! EndIncluded crm/lead_rollups_lock_key.sql
--! Included crm/share_lead_rollups.sql
create or replace function app_private.share_lead_rollups(tenant_ids uuid[]) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Shared: writers of different leads never wait for each other, only for a rebuild of their tenant
  -- (app_private.rebuild_lead_rollups takes the same key exclusively). Taken in tenant order.
  perform pg_catalog.pg_advisory_xact_lock_shared(app_private.lead_rollups_lock_key(t.id))
     from (select distinct u.id from pg_catalog.unnest(share_lead_rollups.tenant_ids) as u(id) where u.id is not null order by 1) t;
end;
$$;

comment on function app_private.share_lead_rollups(uuid[]) is 'Takes, until the end of the transaction, the shared lock on the report rollups (lead_day_counts, lead_stage_reaches, lead_funnel_marks) of each given tenant. Every trigger that writes a rollup delta takes it before reading the tenant''s time zone; app_private.rebuild_lead_rollups takes it exclusively, so a rebuild after a change of time zone neither misses nor double counts a concurrent change.';
--! EndIncluded crm/share_lead_rollups.sql
--! Included crm/rebuild_lead_rollups.sql
create or replace function app_private.rebuild_lead_rollups(tenant_id uuid) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := rebuild_lead_rollups.tenant_id;
  v_timezone text;
begin
  -- Exclusive: waits for the transactions writing deltas for this tenant, and makes new ones wait.
  perform pg_catalog.pg_advisory_xact_lock(app_private.lead_rollups_lock_key(v_tenant));
  v_timezone := coalesce((select bs.timezone from app_public.business_settings bs where bs.tenant_id = v_tenant), 'UTC');

  delete from app_private.lead_day_counts c where c.tenant_id = v_tenant;
  insert into app_private.lead_day_counts (tenant_id, day, source, status, leads, is_total)
  select l.tenant_id, pg_catalog.timezone(v_timezone, l.created_at)::date, l.source, l.status, pg_catalog.count(*)::integer, true
    from app_public.leads l
   where l.tenant_id = v_tenant and l.deleted_at is null
   group by l.tenant_id, 2, l.source, l.status;

  delete from app_private.lead_funnel_marks m where m.tenant_id = v_tenant;
  insert into app_private.lead_funnel_marks (lead_id, tenant_id, reaches)
  select r.lead_id, r.tenant_id, r.reaches
    from app_private.lead_funnel_reaches(array(
           select l.id from app_public.leads l where l.tenant_id = v_tenant and l.deleted_at is null)) r;

  delete from app_private.lead_stage_reaches s where s.tenant_id = v_tenant;
  insert into app_private.lead_stage_reaches (tenant_id, stage_order, day, previous_day, leads, is_total)
  select m.tenant_id, r.stage_order, r.day, r.previous_day, pg_catalog.count(*)::integer, true
    from app_private.lead_funnel_marks m
   cross join pg_catalog.unnest(m.reaches) r
   where m.tenant_id = v_tenant
   group by m.tenant_id, r.stage_order, r.day, r.previous_day;
end;
$$;

comment on function app_private.rebuild_lead_rollups(uuid) is 'Recomputes from scratch the report rollups of one tenant (lead_day_counts, lead_funnel_marks, lead_stage_reaches) as compacted totals. Runs by itself when the tenant''s time zone changes (the rollups count days in it) and when the funnel stages change; run it by hand after loading leads or history with triggers off (session_replication_role = replica). Waits for, and then holds off, the tenant''s other rollup writers. About 3 s per 100,000 leads (measured with the benchmark).';
--! EndIncluded crm/rebuild_lead_rollups.sql
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
    if not pg_catalog.pg_try_advisory_xact_lock_shared(app_private.lead_rollups_lock_key(v_tenant)) then
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
--! Included crm/enqueue_lead_scores.sql
create or replace function app_private.enqueue_lead_scores(lead_ids uuid[]) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- One lead__score job per 500 leads, enqueued together (one job per lead cost more than the rest of
  -- an imported lead).
  return app_private.add_jobs('lead__score', array(
    select pg_catalog.json_build_object('lead_ids', pg_catalog.array_agg(m.id order by m.id))
      from (select d.id, (pg_catalog.row_number() over (order by d.id) - 1) / 500 as chunk
              from (select distinct u.id from pg_catalog.unnest(enqueue_lead_scores.lead_ids) as u(id) where u.id is not null) d) m
     group by m.chunk
     order by m.chunk));
end;
$$;

comment on function app_private.enqueue_lead_scores(uuid[]) is 'Has the given leads rescored by the worker: one lead__score {lead_ids} job per 500 of them (distinct, in id order), enqueued by one app_private.add_jobs call. Returns how many jobs were added. Used for the leads an insert statement creates (tg_leads__enqueue_lead_score) and the leads an import chunk merges into (import_lead_rows).';
--! EndIncluded crm/enqueue_lead_scores.sql
--! Included crm/tg_leads__enqueue_lead_score.sql
create or replace function app_private.tg_leads__enqueue_lead_score() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_LEVEL = 'STATEMENT' then
    -- New leads: one lead__score {lead_ids} job per 500 of them.
    perform app_private.enqueue_lead_scores(array(select n.id from new_leads n));
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
--! Included crm/import_lead_given.sql
create or replace function app_private.import_lead_given(lead jsonb) returns jsonb
  -- PL/pgSQL: its plan is kept for the session (called once per imported row).
  language plpgsql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  return (select coalesce(pg_catalog.jsonb_object_agg(e.key, e.value), '{}'::jsonb)
            from pg_catalog.jsonb_each(import_lead_given.lead) e
           where e.value <> 'null'::jsonb
             and not (pg_catalog.jsonb_typeof(e.value) = 'string' and pg_catalog.btrim(e.value #>> '{}') = ''));
end;
$$;

comment on function app_private.import_lead_given(jsonb) is 'The fields an import row really gives: its lead object without JSON nulls and blank strings (which mean "not given"). The one definition for both paths of an import (the one-statement insert of import_lead_rows and import_lead_row).';
--! EndIncluded crm/import_lead_given.sql
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
             app_private.import_lead_given(e.value -> 'lead') as lead
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

comment on function app_private.import_lead_rows(uuid, uuid, jsonb) is 'Imports up to 5000 normalised rows into a running batch of the given tenant (imports into the same tenant take turns, transaction by transaction): the rows that can only create a lead (the first of the chunk with a phone no live lead has, or without a phone an email no live lead has, and an email no other row of the chunk has) in one insert; every other row in its own sub-transaction, in order (a bad row is recorded as rejected, never stops the others), and returns the batch with its counters. Rows already recorded in the batch (a retried chunk) are ignored. Changes are recorded with change_source import; the leads merged into are rescored by lead__score {lead_ids} jobs, one per 500. No permission check: for the command line and app_public.import_rows. Errors: 22023 malformed rows or a finished batch; P0002 unknown batch.';
--! EndIncluded crm/import_lead_rows.sql

alter table app_private.lead_funnel_marks drop constraint if exists lead_funnel_marks_pkey;
alter table app_private.lead_funnel_marks add constraint lead_funnel_marks_pkey primary key (tenant_id, lead_id);
drop index if exists app_private.lead_funnel_marks_by_tenant;
create index if not exists lead_funnel_marks_by_lead on app_private.lead_funnel_marks (lead_id);
comment on index app_private.lead_funnel_marks_by_lead is 'sync_lead_funnel_marks: the marks of the leads whose history changed.';
--! Included crm/sync_lead_funnel_marks.sql
create or replace function app_private.sync_lead_funnel_marks(lead_ids uuid[]) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  -- Always the generic plan, made once per session (see app_private.lead_funnel_reaches).
  set plan_cache_mode = force_generic_plan
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
    delete from app_private.lead_funnel_marks m
     using changed c
     where m.tenant_id = c.old_tenant_id and m.lead_id = c.lead_id
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
    -- A lead locked by someone else's open transaction is not waited
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

comment on function app_private.refresh_lead_scores(uuid[]) is 'Rescores the given leads with refresh_lead_score, in id order; a lead locked by another transaction is not waited for but gets its own lead__score job, and a lead that no longer exists is skipped. Returns how many were scored. The lead__score job of new leads ({lead_ids}) and refresh_tenant_lead_scores call it; owner only.';
--! EndIncluded crm/refresh_lead_scores.sql
--! Included crm/refresh_tenant_lead_scores.sql
create or replace function app_private.refresh_tenant_lead_scores(tenant_id uuid, after_lead_id uuid default null, batch_size integer default 200) returns uuid
  language plpgsql
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_ids uuid[];
begin
  select pg_catalog.array_agg(b.id order by b.id) into v_ids
    from (select l.id from app_public.leads l
           where l.tenant_id = refresh_tenant_lead_scores.tenant_id and l.deleted_at is null
             and (refresh_tenant_lead_scores.after_lead_id is null or l.id > refresh_tenant_lead_scores.after_lead_id)
           order by l.id
           limit greatest(1, least(coalesce(refresh_tenant_lead_scores.batch_size, 200), 5000))) b;
  if v_ids is null then
    return null;
  end if;
  -- A lead locked by someone else's open transaction is not waited for (waiting while holding this
  -- batch's earlier locks could deadlock with a request): it gets its own lead__score job instead.
  perform app_private.refresh_lead_scores(v_ids);
  return v_ids[pg_catalog.cardinality(v_ids)];
end;
$$;

comment on function app_private.refresh_tenant_lead_scores(uuid, uuid, integer) is 'Rescores one batch of the tenant''s live leads (ids after after_lead_id, in id order, at most batch_size, default 200) with refresh_lead_scores; a lead locked by another transaction is not waited for but gets its own lead__score job. Returns the last lead id handled (pass it as after_lead_id for the next batch), or null when there were none left. Run in a loop, one batch per transaction, by the lead__score_tenant job; owner only.';
--! EndIncluded crm/refresh_tenant_lead_scores.sql
